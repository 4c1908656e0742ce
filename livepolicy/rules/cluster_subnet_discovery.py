"""CL003: subnet discovery must be off (no subnet tagged kubernetes.io/role/cni)."""

from livepolicy.rules.base import ClusterRule, Context, Severity, Verdict

CNI_TAG = "kubernetes.io/role/cni"


class SubnetDiscovery(ClusterRule):
    """No subnet may carry the tag `kubernetes.io/role/cni`.

    With subnet discovery on, the VPC CNI may place a pod's IP in any tagged subnet, so a
    restored pod could not keep its address. Every subnet in ClusterInfo is checked.
    """

    code = "CL003"
    name = "subnet-discovery-off"
    severity = Severity.BLOCK

    def check(self, ctx: Context) -> Verdict:
        tagged = sorted(s.id for s in ctx.facts.info.subnets if CNI_TAG in s.tags)
        if tagged:
            return self.verdict(False, f"subnet discovery is on: {', '.join(tagged)} "
                                f"tagged {CNI_TAG}", subnets=tagged)
        return self.verdict(True, f"no subnet is tagged {CNI_TAG}",
                            subnets_checked=len(ctx.facts.info.subnets))
