"""PR003: instance types must belong to the same generation set."""

from collections.abc import Hashable

from livepolicy.core.catalog import generation_set
from livepolicy.facts.model import NodeFacts
from livepolicy.rules.base import Context, PairRule, Severity, Verdict


def node_generation_set(node: NodeFacts, ctx: Context) -> str:
    if not node.family:
        return ""
    return generation_set(node.family, ctx.settings.generation_sets) or ""


class SameGenerationSet(PairRule):
    """Source and destination instance types must be in one generation set.

    Restored processes keep using CPU features they detected at start. c5, m5 and r5 share
    a CPU generation and are compatible; c3 and m3 likewise; c3 and c5 are not. Sets come
    from the family's generation and processor line (`Settings.spec.generationSets`
    overrides).
    """

    code = "PR003"
    name = "same-generation-set"
    severity = Severity.BLOCK

    def key(self, node: NodeFacts, ctx: Context) -> Hashable:
        return node_generation_set(node, ctx)

    def check(self, src: NodeFacts, dst: NodeFacts, ctx: Context) -> Verdict:
        a, b = node_generation_set(src, ctx), node_generation_set(dst, ctx)
        s_fact = f"{src.instance_type or '?'} ({a or 'unknown'})"
        d_fact = f"{dst.instance_type or '?'} ({b or 'unknown'})"
        if not a or not b:
            return self.verdict(False, f"generation set unknown for "
                                f"{src.name if not a else dst.name}", source=s_fact,
                                destination=d_fact)
        ok = a == b
        msg = (f"both in generation set {a}" if ok else
               f"{src.instance_type} ({a}) and {dst.instance_type} ({b}) are different "
               "generation sets")
        return self.verdict(ok, msg, source=s_fact, destination=d_fact)
