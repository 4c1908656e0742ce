"""WL002: pods can opt out of live migration with a label."""

from livepolicy.facts.model import PodFacts
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context, PodRule, Severity, Verdict


class OptOut(PodRule):
    """A pod labelled `autoscaling.cast.ai/live-migration-disabled=true` never migrates.

    The owner of a workload has the last word (`Settings.spec.labels.optOut`).
    """

    code = "WL002"
    name = "opt-out"
    severity = Severity.BLOCK

    def check(self, pod: PodFacts, ctx: Context, allow: Allow) -> Verdict:
        key = ctx.settings.labels.opt_out
        out = pod.labels.get(key, "").lower() == "true"
        return self.verdict(not out, f"pod opted out with {key}=true" if out else
                            "pod has not opted out", label=key)

    def blocks(self, pod: PodFacts, ctx: Context, allow: Allow) -> bool:
        return pod.labels.get(ctx.settings.labels.opt_out, "").lower() == "true"
