"""WL003: DaemonSet pods never migrate."""

from livepolicy.facts.model import OwnerKind, PodFacts
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context, PodRule, Severity, Verdict


class DaemonSetPod(PodRule):
    """Pods owned by a DaemonSet are never migrated.

    A DaemonSet runs one pod per node by design; its pod belongs to its node.
    """

    code = "WL003"
    name = "daemonset"
    severity = Severity.BLOCK

    def check(self, pod: PodFacts, ctx: Context, allow: Allow) -> Verdict:
        ds = pod.owner_kind is OwnerKind.DAEMONSET
        return self.verdict(not ds, f"owned by DaemonSet {pod.owner_name}" if ds else
                            f"owned by {pod.owner_kind.value}", owner=pod.owner_kind.value)

    def blocks(self, pod: PodFacts, ctx: Context, allow: Allow) -> bool:
        return pod.owner_kind is OwnerKind.DAEMONSET
