"""WL010: all containers of a pod move together (information)."""

from livepolicy.facts.model import PodFacts
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context, PodRule, Severity, Verdict


class MultiContainer(PodRule):
    """Multi-container pods migrate as one unit.

    Every container is checkpointed at the same instant and restored together, so
    sidecars and the main container stay consistent.
    """

    code = "WL010"
    name = "multi-container"
    severity = Severity.INFO

    def check(self, pod: PodFacts, ctx: Context, allow: Allow) -> Verdict:
        n = len(pod.containers)
        return self.verdict(n <= 1, f"{n} containers move together" if n > 1 else
                            "single container", containers=n)

    def blocks(self, pod: PodFacts, ctx: Context, allow: Allow) -> bool:
        return False  # information only
