"""CL004: standard networking must run without prefix delegation."""

from livepolicy.rules.base import ClusterRule, Context, Severity, Verdict


class PrefixDelegation(ClusterRule):
    """The VPC CNI must run with ENABLE_PREFIX_DELEGATION=false.

    Live migration keeps a pod's IP by moving that single address to the destination
    node's ENI; with prefix delegation, addresses come in /28 prefixes bound to one node.
    """

    code = "CL004"
    name = "prefix-delegation-off"
    severity = Severity.BLOCK

    def check(self, ctx: Context) -> Verdict:
        on = ctx.facts.info.prefix_delegation
        return self.verdict(not on, "prefix delegation is enabled (ENABLE_PREFIX_DELEGATION="
                            "true): pod IPs cannot move alone" if on else
                            "prefix delegation is off", prefix_delegation=on)
