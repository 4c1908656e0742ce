"""PR006: with custom networking (ENIConfig), pods only move inside one zone."""

from collections.abc import Hashable

from livepolicy.facts.model import NodeFacts
from livepolicy.rules.base import Context, PairRule, Severity, Verdict


class CustomNetworking(PairRule):
    """Custom networking: same availability zone, and the source must be labelled for it.

    With dedicated pod subnets, ENIConfig objects give one pod subnet per zone, so a pod
    keeps its IP only inside its zone (`topology.kubernetes.io/zone`). The source node
    must carry `live.cast.ai/custom-network` (`Settings.spec.labels.customNetwork`), which
    makes the graph directed. A node uses custom networking when an ENIConfig matches its
    zone or its `k8s.amazonaws.com/eniConfig` label.
    """

    code = "PR006"
    name = "custom-network-zone"
    severity = Severity.BLOCK

    def key(self, node: NodeFacts, ctx: Context) -> Hashable:
        return (node.network_mode, node.zone,
                ctx.settings.labels.custom_network in node.labels)

    def check(self, src: NodeFacts, dst: NodeFacts, ctx: Context) -> Verdict:
        if src.network_mode != "custom":
            return self.verdict(True, "source uses standard networking (see PR005)")
        label = ctx.settings.labels.custom_network
        if label not in src.labels:
            return self.verdict(False, f"{src.name} uses custom networking but lacks label "
                                f"{label}", label=label)
        if dst.network_mode != "custom":
            return self.verdict(False, f"{src.name} uses custom networking but {dst.name} "
                                "does not", destination_mode=dst.network_mode)
        ok = bool(src.zone) and src.zone == dst.zone
        msg = (f"both in zone {src.zone}" if ok else
               f"{src.name} is in zone {src.zone or '?'}, {dst.name} in {dst.zone or '?'}")
        return self.verdict(ok, msg, source=src.zone, destination=dst.zone)
