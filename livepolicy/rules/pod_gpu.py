"""WL007: GPU workloads cannot be migrated."""

from livepolicy.facts.model import PodFacts
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context, PodRule, Severity, Verdict


class Gpu(PodRule):
    """No container may request a GPU (`nvidia.com/gpu` and the like).

    GPU memory and in-flight kernels are outside what CRIU can checkpoint. The resource
    names are `Settings.spec.gpuResources`.
    """

    code = "WL007"
    name = "no-gpu"
    severity = Severity.BLOCK

    def check(self, pod: PodFacts, ctx: Context, allow: Allow) -> Verdict:
        found = sorted({f"{c.name}:{r}" for c in pod.containers
                        for r, n in c.extended_resources.items()
                        if n > 0 and r in ctx.settings.gpu_resources})
        return self.verdict(not found, f"requests GPUs ({', '.join(found)})" if found else
                            "requests no GPU", gpus=found)
