"""WL005: pods of custom controllers need an explicit opt-in."""

from livepolicy.facts.model import OwnerKind, PodFacts
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context, PodRule, Severity, Verdict


class CustomController(PodRule):
    """Pods owned by a custom controller have limited support.

    Supported owners are StatefulSet, Deployment (through its ReplicaSet), Job, CronJob
    (through its Job) and bare pods. Another controller may react to its pod moving in ways
    nobody tested, so such pods are blocked unless the policy sets
    `allow.customControllers: true`, and then shown as a warning.
    """

    code = "WL005"
    name = "custom-controller"
    severity = Severity.BLOCK

    def check(self, pod: PodFacts, ctx: Context, allow: Allow) -> Verdict:
        if pod.owner_kind is not OwnerKind.CUSTOM:
            return self.verdict(True, f"owner {pod.owner_kind.value} is supported",
                                owner=pod.owner_kind.value)
        owner = f"{pod.owner_api} {pod.owner_name}"
        if allow.custom_controllers:
            return self.verdict(False, f"owned by custom controller {owner} (allowed by "
                                "policy; limited support)", Severity.WARN, owner=owner)
        return self.verdict(False, f"owned by custom controller {owner}; set "
                            "allow.customControllers to migrate it", owner=owner)

    def blocks(self, pod: PodFacts, ctx: Context, allow: Allow) -> bool:
        return pod.owner_kind is OwnerKind.CUSTOM and not allow.custom_controllers
