"""WL007: GPU workloads cannot be migrated."""

from fnmatch import fnmatchcase

from livepolicy.facts.model import PodFacts
from livepolicy.policy.models import Allow
from livepolicy.rules.base import Context, PodRule, Severity, Verdict


class Gpu(PodRule):
    """No container may request a GPU (`nvidia.com/gpu` and the like).

    GPU memory and in-flight kernels are outside what CRIU can checkpoint. The resource
    names are `Settings.spec.gpuResources` (shell-style patterns, so MIG slices such as
    `nvidia.com/mig-1g.5gb` count too).
    """

    code = "WL007"
    name = "no-gpu"
    severity = Severity.BLOCK

    def check(self, pod: PodFacts, ctx: Context, allow: Allow) -> Verdict:
        found = sorted({f"{c.name}:{r}" for c in pod.containers
                        for r, n in c.extended_resources.items()
                        if n > 0 and any(fnmatchcase(r, pat)
                                         for pat in ctx.settings.gpu_resources)})
        return self.verdict(not found, f"requests GPUs ({', '.join(found)})" if found else
                            "requests no GPU", gpus=found)

    def blocks(self, pod: PodFacts, ctx: Context, allow: Allow) -> bool:
        return any(c.extended_resources for c in pod.containers) and \
            self.check(pod, ctx, allow).blocks
