"""WL006: containers with a TTY cannot be checkpointed."""

from livepolicy.facts.model import PodFacts
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context, PodRule, Severity, Verdict


class Tty(PodRule):
    """No container may set `tty: true`.

    A terminal is a device owned by the node's container runtime; it cannot be restored on
    another node.
    """

    code = "WL006"
    name = "no-tty"
    severity = Severity.BLOCK

    def check(self, pod: PodFacts, ctx: Context, allow: Allow) -> Verdict:
        ttys = [c.name for c in pod.containers if c.tty]
        return self.verdict(not ttys, f"container {', '.join(ttys)} has tty: true" if ttys
                            else "no container uses a TTY", containers=ttys)

    def blocks(self, pod: PodFacts, ctx: Context, allow: Allow) -> bool:
        return any(c.tty for c in pod.containers)
