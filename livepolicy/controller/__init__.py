"""The in-cluster controller (`livepolicy controller`): continuous label assessment.

What `livepolicy label` does once, done forever: caches of the cluster kept by watches
(`reflector`, `cache`), policies from a directory or a ConfigMap (`policies`), bursts of
changes coalesced (`debounce`), one leader among the replicas (`elector`), the labels
planned and written exactly as `label` does (`reconcile`), Prometheus metrics and health
(`metrics`), all wired together in `controller`.
"""
