"""ND002: nodes must run the supported image family (Amazon Linux 2023)."""

from livepolicy.facts.model import NodeFacts
from livepolicy.rules.base import Context, NodeRule, Severity, Verdict


class ImageFamily(NodeRule):
    """The node image family must be Amazon Linux 2023 (`FAMILY_AL2023`).

    The checkpoint/restore stack (kernel features, CRIU build) ships only on that image.
    The family comes from the node's OS image or an explicit `livepolicy.io/image-family`
    label; the required family is `Settings.spec.requiredImageFamily`.
    """

    code = "ND002"
    name = "image-family"
    severity = Severity.BLOCK

    def check(self, node: NodeFacts, ctx: Context) -> Verdict:
        want = ctx.settings.required_image_family
        have = node.image_family or "unknown"
        ok = have == want
        msg = (f"node {node.name} runs {have}" if ok else
               f"node {node.name} runs image family {have} ({node.os_image or 'OS unknown'}), "
               f"not {want}")
        return self.verdict(ok, msg, image_family=have, os_image=node.os_image)
