"""PR002: source and destination must share the CPU architecture."""

from collections.abc import Hashable

from livepolicy.facts.model import NodeFacts
from livepolicy.rules.base import Context, PairRule, Severity, Verdict


class SameArchitecture(PairRule):
    """Source and destination must have the same CPU architecture (`kubernetes.io/arch`).

    A checkpoint holds machine code and registers of one instruction set; amd64 <-> arm64
    can never restore.
    """

    code = "PR002"
    name = "same-architecture"
    severity = Severity.BLOCK

    def key(self, node: NodeFacts, ctx: Context) -> Hashable:
        return node.architecture

    def check(self, src: NodeFacts, dst: NodeFacts, ctx: Context) -> Verdict:
        a, b = src.architecture or "unknown", dst.architecture or "unknown"
        ok = a == b and a != "unknown"
        msg = f"both {a}" if ok else f"{src.name} is {a}, {dst.name} is {b}"
        return self.verdict(ok, msg, source=a, destination=b)
