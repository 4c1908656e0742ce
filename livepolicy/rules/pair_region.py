"""PR001: source and destination must be in the same region."""

from collections.abc import Hashable

from livepolicy.facts.model import NodeFacts
from livepolicy.rules.base import Context, PairRule, Severity, Verdict


class SameRegion(PairRule):
    """Source and destination must be in the same cloud region.

    Pod IPs and volumes are regional at most; a checkpoint cannot be restored with its
    network identity in another region. Read from `topology.kubernetes.io/region`.
    """

    code = "PR001"
    name = "same-region"
    severity = Severity.BLOCK

    def key(self, node: NodeFacts, ctx: Context) -> Hashable:
        return node.region

    def check(self, src: NodeFacts, dst: NodeFacts, ctx: Context) -> Verdict:
        if not src.region or not dst.region:
            return self.verdict(False, f"region unknown ({src.name}: {src.region or '?'}, "
                                f"{dst.name}: {dst.region or '?'})", source=src.region,
                                destination=dst.region)
        ok = src.region == dst.region
        msg = (f"both in {src.region}" if ok else
               f"{src.name} is in {src.region}, {dst.name} in {dst.region}")
        return self.verdict(ok, msg, source=src.region, destination=dst.region)
