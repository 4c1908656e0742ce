"""ND004: a node must be Ready to take part in a migration."""

from livepolicy.facts.model import NodeFacts
from livepolicy.rules.base import Context, NodeRule, Severity, Verdict


class NodeReady(NodeRule):
    """The node's Ready condition must be True.

    The per-node agent must answer on both ends; a NotReady node cannot checkpoint or
    restore reliably. (Beyond the seed page: a plain operational precondition.)
    """

    code = "ND004"
    name = "node-ready"
    severity = Severity.BLOCK

    def check(self, node: NodeFacts, ctx: Context) -> Verdict:
        return self.verdict(node.ready, f"node {node.name} is Ready" if node.ready else
                            f"node {node.name} is not Ready", ready=node.ready)
