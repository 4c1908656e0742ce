"""ND001: both ends of a migration must be nodes managed by the platform's provisioner."""

from livepolicy.facts.model import NodeFacts
from livepolicy.rules.base import Context, NodeRule, Severity, Verdict


class ManagedNode(NodeRule):
    """Source and destination must be managed by the live-migration provisioner.

    Only managed nodes run the checkpoint/restore agent and the CNI fork. Nodes from other
    provisioners or cloud node groups are excluded. The selector is
    `Settings.spec.managedNodeSelector` (default `provisioner.cast.ai/managed-by=cast.ai`).
    """

    code = "ND001"
    name = "managed-node"
    severity = Severity.BLOCK

    def check(self, node: NodeFacts, ctx: Context) -> Verdict:
        sel = ctx.settings.managed_node_selector.compile()
        ok = sel.matches(node.labels)
        msg = (f"node {node.name} is managed ({sel.describe()})" if ok else
               f"node {node.name} is not managed by the provisioner (needs {sel.describe()})")
        return self.verdict(ok, msg, selector=sel.describe())
