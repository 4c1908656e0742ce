"""ND005: which memory-transfer mode a node's architecture allows (information)."""

from livepolicy.facts.model import NodeFacts
from livepolicy.rules.base import Context, NodeRule, Severity, Verdict


class TransferMode(NodeRule):
    """arm64 nodes transfer memory in one stop-and-copy; amd64 nodes iterate.

    Iterative pre-copy needs kernel soft-dirty page tracking, which arm64 lacks, so an
    arm64 pod is frozen for the whole copy. The planner's estimate and strategy follow
    this; it never blocks.
    """

    code = "ND005"
    name = "memory-transfer-mode"
    severity = Severity.INFO

    def check(self, node: NodeFacts, ctx: Context) -> Verdict:
        arch = node.architecture or "unknown"
        if arch == "arm64":
            return self.verdict(False, f"node {node.name} is arm64: memory moves in one "
                                "non-iterative stop-and-copy", architecture=arch,
                                mode="stop-and-copy")
        return self.verdict(True, f"node {node.name} is {arch}: iterative pre-copy available",
                            architecture=arch, mode="iterative")
