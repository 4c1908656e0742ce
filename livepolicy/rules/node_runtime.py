"""ND003: the container runtime must be containerd 2.0 or newer."""

from livepolicy.facts.model import NodeFacts
from livepolicy.rules.base import Context, NodeRule, Severity, Verdict, version_tuple


class ContainerRuntime(NodeRule):
    """The node must run containerd >= 2.0.

    containerd gained checkpoint and restore through CRI in 2.0; other runtimes are not
    supported. Read from `status.nodeInfo.containerRuntimeVersion`.
    """

    code = "ND003"
    name = "container-runtime"
    severity = Severity.BLOCK

    def check(self, node: NodeFacts, ctx: Context) -> Verdict:
        want = ctx.settings.min_containerd_version
        have = version_tuple(node.runtime_version) if node.runtime_version else None
        runtime = f"{node.runtime or 'unknown'}://{node.runtime_version or '?'}"
        want_t = version_tuple(want)
        assert want_t is not None
        if node.runtime != "containerd":
            return self.verdict(False, f"node {node.name} runs {runtime}; containerd >= {want} "
                                "is required", runtime=runtime)
        if have is None or have < want_t:
            return self.verdict(False, f"node {node.name} runs {runtime}, older than "
                                f"containerd {want}", runtime=runtime)
        return self.verdict(True, f"node {node.name} runs {runtime}", runtime=runtime)
