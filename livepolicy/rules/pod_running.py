"""WL001: only running, scheduled pods can be checkpointed."""

from livepolicy.facts.model import PodFacts
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context, PodRule, Severity, Verdict


class PodRunning(PodRule):
    """The pod must be Running on a node and not being deleted.

    There is no process to checkpoint in a Pending, Succeeded or Failed pod, and a pod
    under deletion is already leaving. (Beyond the seed page.)
    """

    code = "WL001"
    name = "pod-running"
    severity = Severity.BLOCK

    def check(self, pod: PodFacts, ctx: Context, allow: Allow) -> Verdict:
        if pod.deleting:
            return self.verdict(False, "pod is being deleted", phase=pod.phase)
        if not pod.node or pod.phase != "Running":
            return self.verdict(False, f"pod is {pod.phase}"
                                + ("" if pod.node else " and not scheduled"), phase=pod.phase)
        return self.verdict(True, f"pod is Running on {pod.node}", phase=pod.phase)

    def blocks(self, pod: PodFacts, ctx: Context, allow: Allow) -> bool:
        return pod.deleting or not pod.node or pod.phase != "Running"
