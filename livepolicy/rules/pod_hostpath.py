"""WL008: hostPath volumes are experimental."""

from livepolicy.facts.model import PodFacts, VolumeKind
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context, PodRule, Severity, Verdict


class HostPath(PodRule):
    """hostPath volumes block migration unless the policy opts in to experimental support.

    A hostPath reads node-local files that the destination node does not have. With
    `allow.hostPath: true` the pod migrates with a warning.
    """

    code = "WL008"
    name = "hostpath-volume"
    severity = Severity.BLOCK

    def check(self, pod: PodFacts, ctx: Context, allow: Allow) -> Verdict:
        vols = [v.name for v in pod.volumes
                if v.kind is VolumeKind.HOSTPATH or v.backend is VolumeKind.HOSTPATH]
        if not vols:
            return self.verdict(True, "no hostPath volume")
        if allow.host_path:
            return self.verdict(False, f"hostPath volume {', '.join(vols)} (experimental, "
                                "allowed by policy)", Severity.WARN, volumes=vols)
        return self.verdict(False, f"hostPath volume {', '.join(vols)} is experimental; set "
                            "allow.hostPath to migrate it", volumes=vols)

    def blocks(self, pod: PodFacts, ctx: Context, allow: Allow) -> bool:
        return bool(pod.volumes) and self.check(pod, ctx, allow).blocks
