"""WL011: init containers are not rerun on the restored pod (information)."""

from livepolicy.facts.model import PodFacts
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context, PodRule, Severity, Verdict


class InitContainers(PodRule):
    """Init containers are skipped on restore.

    The restored pod resumes where it was; init containers, PostStart hooks and startup
    probes do not run again. Work they do per node (e.g. writing node-local files) will
    be missing on the destination.
    """

    code = "WL011"
    name = "init-containers-skipped"
    severity = Severity.INFO

    def check(self, pod: PodFacts, ctx: Context, allow: Allow) -> Verdict:
        n = pod.init_containers
        return self.verdict(n == 0, f"{n} init container(s) will not rerun on the destination"
                            if n else "no init containers", init_containers=n)

    def blocks(self, pod: PodFacts, ctx: Context, allow: Allow) -> bool:
        return False  # information only
