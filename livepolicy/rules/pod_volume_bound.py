"""WL009: every claim must be bound, and node-local persistent volumes cannot move."""

from livepolicy.facts.model import PodFacts, VolumeKind
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context, PodRule, Severity, Verdict


class VolumeUsable(PodRule):
    """Every PersistentVolumeClaim must be bound and not a node-local (`local`) volume.

    An unbound or unknown claim gives no zone to check; a local PV lives on one node's
    disk, like hostPath without the opt-in. (Beyond the seed page.)
    """

    code = "WL009"
    name = "volume-usable"
    severity = Severity.BLOCK

    def check(self, pod: PodFacts, ctx: Context, allow: Allow) -> Verdict:
        unbound = [v.claim for v in pod.volumes if v.kind is VolumeKind.PVC and not v.bound]
        local = [v.claim or v.name for v in pod.volumes
                 if v.kind is VolumeKind.LOCAL or v.backend is VolumeKind.LOCAL]
        if unbound:
            return self.verdict(False, f"claim {', '.join(unbound)} is not bound to a volume",
                                claims=unbound)
        if local:
            return self.verdict(False, f"claim {', '.join(local)} uses a node-local volume",
                                claims=local)
        return self.verdict(True, "all claims are bound to movable volumes")

    def blocks(self, pod: PodFacts, ctx: Context, allow: Allow) -> bool:
        return bool(pod.volumes) and self.check(pod, ctx, allow).blocks
