"""PR005: with standard networking, pods only move inside one subnet."""

from collections.abc import Hashable

from livepolicy.facts.model import NodeFacts
from livepolicy.rules.base import Context, PairRule, Severity, Verdict


class SameSubnet(PairRule):
    """Standard networking: source and destination must be in the same subnet.

    Without prefix delegation every node and its pods share one subnet, and a pod keeps its
    IP only if the destination's ENI can take an address from that subnet. Checked with
    the node label `topology.cast.ai/subnet-id` (`Settings.spec.labels.subnetId`). Pairs
    where the source uses custom networking are left to PR006.
    """

    code = "PR005"
    name = "same-subnet"
    severity = Severity.BLOCK

    def key(self, node: NodeFacts, ctx: Context) -> Hashable:
        return (node.network_mode, node.labels.get(ctx.settings.labels.subnet_id, ""))

    def check(self, src: NodeFacts, dst: NodeFacts, ctx: Context) -> Verdict:
        if src.network_mode != "standard":
            return self.verdict(True, "source uses custom networking (see PR006)")
        label = ctx.settings.labels.subnet_id
        a, b = src.labels.get(label, ""), dst.labels.get(label, "")
        if dst.network_mode != "standard":
            return self.verdict(False, f"{src.name} uses standard networking but {dst.name} "
                                "uses custom networking", source=a, destination=b)
        if not a or not b:
            return self.verdict(False, f"subnet unknown: label {label} missing on "
                                f"{src.name if not a else dst.name}", source=a, destination=b)
        ok = a == b
        msg = f"both in subnet {a}" if ok else f"{src.name} is in {a}, {dst.name} in {b}"
        return self.verdict(ok, msg, source=a, destination=b)
