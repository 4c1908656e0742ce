"""WL004: static (mirror) pods are bound to their node."""

from livepolicy.facts.model import OwnerKind, PodFacts
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context, PodRule, Severity, Verdict


class StaticPod(PodRule):
    """Static pods (owned by their Node) cannot migrate.

    The kubelet of one node creates them from a local manifest; another node would never
    adopt them. (Beyond the seed page.)
    """

    code = "WL004"
    name = "static-pod"
    severity = Severity.BLOCK

    def check(self, pod: PodFacts, ctx: Context, allow: Allow) -> Verdict:
        static = pod.owner_kind is OwnerKind.NODE
        return self.verdict(not static, f"static pod of node {pod.owner_name}" if static else
                            "not a static pod", owner=pod.owner_kind.value)

    def blocks(self, pod: PodFacts, ctx: Context, allow: Allow) -> bool:
        return pod.owner_kind is OwnerKind.NODE
