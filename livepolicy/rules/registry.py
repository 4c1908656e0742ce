"""The list of every rule, grouped by scope, and helpers that run a scope's rules.

Adding a rule = one module with one class + one line here; docs/rules.md is generated
from this list (`livepolicy rules --markdown`).
"""

from __future__ import annotations

from livepolicy.core.diagnostics import Diagnostic
from livepolicy.facts.model import NodeFacts, PodFacts
from livepolicy.policy.load import PolicySet
from livepolicy.policy.models import Allow
from livepolicy.rules.base import (
    ClusterRule,
    Context,
    NodeRule,
    PairRule,
    PodNodeRule,
    PodRule,
    Rule,
    TemplateRule,
    Verdict,
)
from livepolicy.rules.cluster_platform import Platform
from livepolicy.rules.cluster_prefix_delegation import PrefixDelegation
from livepolicy.rules.cluster_subnet_discovery import SubnetDiscovery
from livepolicy.rules.cluster_version import KubernetesVersion
from livepolicy.rules.node_image import ImageFamily
from livepolicy.rules.node_managed import ManagedNode
from livepolicy.rules.node_ready import NodeReady
from livepolicy.rules.node_runtime import ContainerRuntime
from livepolicy.rules.node_transfer_mode import TransferMode
from livepolicy.rules.pair_architecture import SameArchitecture
from livepolicy.rules.pair_cpu_features import CpuFeatures
from livepolicy.rules.pair_custom_network import CustomNetworking
from livepolicy.rules.pair_generation import SameGenerationSet
from livepolicy.rules.pair_region import SameRegion
from livepolicy.rules.pair_subnet import SameSubnet
from livepolicy.rules.pod_custom_controller import CustomController
from livepolicy.rules.pod_daemonset import DaemonSetPod
from livepolicy.rules.pod_gpu import Gpu
from livepolicy.rules.pod_hostpath import HostPath
from livepolicy.rules.pod_init_containers import InitContainers
from livepolicy.rules.pod_multi_container import MultiContainer
from livepolicy.rules.pod_opt_out import OptOut
from livepolicy.rules.pod_running import PodRunning
from livepolicy.rules.pod_static import StaticPod
from livepolicy.rules.pod_tty import Tty
from livepolicy.rules.pod_volume_bound import VolumeUsable
from livepolicy.rules.pod_volume_zone import VolumeZone
from livepolicy.rules.template_architecture import TemplateArchitecture
from livepolicy.rules.template_generation import TemplateGenerationSet

CLUSTER_RULES: tuple[ClusterRule, ...] = (
    Platform(), KubernetesVersion(), SubnetDiscovery(), PrefixDelegation())
NODE_RULES: tuple[NodeRule, ...] = (
    ManagedNode(), ImageFamily(), ContainerRuntime(), NodeReady(), TransferMode())
PAIR_RULES: tuple[PairRule, ...] = (
    SameRegion(), SameArchitecture(), SameGenerationSet(), CpuFeatures(), SameSubnet(),
    CustomNetworking())
POD_RULES: tuple[PodRule, ...] = (
    PodRunning(), OptOut(), DaemonSetPod(), StaticPod(), CustomController(), Tty(), Gpu(),
    HostPath(), VolumeUsable(), MultiContainer(), InitContainers())
POD_NODE_RULES: tuple[PodNodeRule, ...] = (VolumeZone(),)
TEMPLATE_RULES: tuple[TemplateRule, ...] = (TemplateArchitecture(), TemplateGenerationSet())

ALL_RULES: tuple[Rule, ...] = (*CLUSTER_RULES, *NODE_RULES, *PAIR_RULES, *POD_RULES,
                               *POD_NODE_RULES, *TEMPLATE_RULES)


def rule_by_code(code: str) -> Rule | None:
    return next((r for r in ALL_RULES if r.code == code), None)


def cluster_verdicts(ctx: Context) -> list[Verdict]:
    return [r.check(ctx) for r in CLUSTER_RULES]


def node_verdicts(node: NodeFacts, ctx: Context) -> list[Verdict]:
    return [r.check(node, ctx) for r in NODE_RULES]


def pair_verdicts(src: NodeFacts, dst: NodeFacts, ctx: Context) -> list[Verdict]:
    return [r.check(src, dst, ctx) for r in PAIR_RULES]


def pod_verdicts(pod: PodFacts, ctx: Context, allow: Allow) -> list[Verdict]:
    return [r.check(pod, ctx, allow) for r in POD_RULES]


def pod_node_verdicts(pod: PodFacts, src: NodeFacts, dst: NodeFacts,
                      ctx: Context) -> list[Verdict]:
    return [r.check(pod, src, dst, ctx) for r in POD_NODE_RULES if r.relevant(pod)]


def template_diagnostics(ps: PolicySet) -> list[Diagnostic]:
    """Run the template rules over a loaded policy set, located in the policy files."""
    out = []
    for name, tpl in sorted(ps.templates.items()):
        for rule in TEMPLATE_RULES:
            for problem in rule.check(tpl, ps.settings):
                out.append(ps.diagnostic("NodeTemplate", name, problem.pointer,
                                         problem.message, rule.code))
    return out
