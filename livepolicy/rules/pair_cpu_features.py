"""PR004: the destination must offer every CPU feature the source has."""

from collections.abc import Hashable

from livepolicy.facts.model import NodeFacts
from livepolicy.rules.base import Context, PairRule, Severity, Verdict


def cpu_features(node: NodeFacts, ctx: Context) -> frozenset[str]:
    prefix = ctx.settings.labels.cpu_feature_prefix
    return frozenset(k[len(prefix):] for k, v in node.labels.items()
                     if k.startswith(prefix) and v == "true")


class CpuFeatures(PairRule):
    """Where CPU feature labels exist, the destination must have all of the source's.

    One instance type can be backed by different CPU models. A process that detected
    AVX-512 on its source dies with an illegal instruction on a CPU without it. Read from
    node-feature-discovery labels (`feature.node.kubernetes.io/cpu-cpuid.*`); nodes
    without such labels are not compared. (Beyond the seed page.)
    """

    code = "PR004"
    name = "cpu-features"
    severity = Severity.BLOCK

    def key(self, node: NodeFacts, ctx: Context) -> Hashable:
        return cpu_features(node, ctx)

    def check(self, src: NodeFacts, dst: NodeFacts, ctx: Context) -> Verdict:
        a, b = cpu_features(src, ctx), cpu_features(dst, ctx)
        if not a or not b:
            return self.verdict(True, "CPU feature labels absent; not compared",
                                source=len(a), destination=len(b))
        missing = a - b
        if missing:
            return self.verdict(False, f"{dst.name} lacks CPU features of {src.name}: "
                                f"{', '.join(sorted(missing))}", missing=missing)
        return self.verdict(True, f"{dst.name} offers all {len(a)} CPU features of {src.name}",
                            features=len(a))
