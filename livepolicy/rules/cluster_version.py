"""CL002: the Kubernetes server must be new enough for checkpoint/restore."""

from livepolicy.rules.base import ClusterRule, Context, Severity, Verdict, version_tuple


class KubernetesVersion(ClusterRule):
    """The Kubernetes server version must be at least 1.30.

    Container checkpointing became Beta (enabled by default) in Kubernetes 1.30; older
    servers lack the kubelet API the agents rely on. The minimum is
    `Settings.spec.minKubernetesVersion`.
    """

    code = "CL002"
    name = "kubernetes-version"
    severity = Severity.BLOCK

    def check(self, ctx: Context) -> Verdict:
        raw = ctx.facts.info.kubernetes_version
        have = version_tuple(raw) if raw else None
        want = version_tuple(ctx.settings.min_kubernetes_version)
        assert want is not None
        if have is None:
            return self.verdict(False, "Kubernetes server version is unknown; "
                                f"{ctx.settings.min_kubernetes_version}+ is required",
                                version=raw or "unknown")
        ok = have[:2] >= want[:2]
        msg = (f"Kubernetes {raw} meets the minimum {ctx.settings.min_kubernetes_version}" if ok
               else f"Kubernetes {raw} is older than {ctx.settings.min_kubernetes_version}, "
                    "where checkpoint/restore became Beta")
        return self.verdict(ok, msg, version=raw)
