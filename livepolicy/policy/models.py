"""Pydantic models of the policy kinds (apiVersion livepolicy.io/v1alpha1).

Wire names are camelCase like Kubernetes objects; unknown fields are rejected so a typo
never silently changes a plan. Models are frozen: a loaded policy set is a value.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from livepolicy.core.quantity import parse_bandwidth, parse_duration_ms
from livepolicy.core.selectors import Requirement, Selector

API_VERSION = "livepolicy.io/v1alpha1"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_PERCENT = re.compile(r"^(100|[1-9]?[0-9])%$")


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True,
        use_enum_values=True,
    )


class Expression(Model):
    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Expression:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        if self.operator in ("Gt", "Lt") and (
                len(self.values) != 1 or not self.values[0].lstrip("-").isdigit()):
            raise ValueError(f"operator {self.operator} needs exactly one integer value")
        return self


class LabelSelector(Model):
    """Kubernetes-style selector; empty matches everything."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[Expression, ...] = ()

    def compile(self) -> Selector:
        reqs = [Requirement(k, "In", (v,)) for k, v in sorted(self.match_labels.items())]
        reqs += [Requirement(e.key, e.operator, e.values) for e in self.match_expressions]
        return Selector(tuple(reqs))


class Metadata(Model):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(
                f"name {v!r} must be lowercase letters, digits, '-' or '.', "
                "starting and ending with a letter or digit")
        return v


Duration = Annotated[str, Field(description="Duration such as 300ms, 45s, 1h30m, 2d")]


def _check_duration(v: str | None) -> str | None:
    if v is not None:
        parse_duration_ms(v)
    return v


# ---------------------------------------------------------------- NodeTemplate

class RuntimeSpec(Model):
    name: Literal["containerd"] = "containerd"
    min_version: str = Field("2.0", pattern=r"^\d+(\.\d+){0,2}$")


class NodeTemplateSpec(Model):
    """How to recognise a template's nodes and what they must look like to host live pods."""

    node_selector: LabelSelector = Field(default_factory=LabelSelector)
    architecture: str = Field(description="amd64 or arm64; 'any' is rejected")
    instance_families: tuple[str, ...] = Field(min_length=1)
    image_family: str = "FAMILY_AL2023"
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    network: Literal["standard", "custom"] = "standard"


class NodeTemplate(Model):
    api_version: Literal["livepolicy.io/v1alpha1"]
    kind: Literal["NodeTemplate"]
    metadata: Metadata
    spec: NodeTemplateSpec


# ---------------------------------------------------------------- MigrationPolicy

class WorkloadSelector(Model):
    namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ()
    selector: LabelSelector = Field(default_factory=LabelSelector)
    owner_kinds: tuple[Literal["Deployment", "StatefulSet", "Job", "CronJob", "Pod",
                               "ReplicaSet", "Custom"], ...] = ()


class SourceSelector(Model):
    templates: tuple[str, ...] = ()
    selector: LabelSelector = Field(default_factory=LabelSelector)
    names: tuple[str, ...] = ()
    cordoned: bool | None = None
    older_than: Duration | None = None

    _v = field_validator("older_than")(classmethod(lambda cls, v: _check_duration(v)))


class DestinationSelector(Model):
    templates: tuple[str, ...] = ()
    selector: LabelSelector = Field(default_factory=LabelSelector)


class Strategy(Model):
    memory_transfer: Literal["auto", "iterative", "stop-and-copy", "post-copy"] = "auto"
    tcp: Literal["preserve", "close"] = "preserve"
    max_rounds: int = Field(5, ge=1, le=30)
    freeze_budget: Duration = "300ms"
    completion_timeout_per_gib: Duration = "150s"
    progress_timeout: Duration = "150s"
    bandwidth: str = Field("5Gbps", description="Link speed assumed for estimates, e.g. 1Gbps")
    dirty_rate: str = Field("50MiB/s", description="Assumed page dirtying rate for estimates")

    _d = field_validator("freeze_budget", "completion_timeout_per_gib", "progress_timeout")(
        classmethod(lambda cls, v: _check_duration(v)))

    @field_validator("bandwidth", "dirty_rate")
    @classmethod
    def _rate(cls, v: str) -> str:
        parse_bandwidth(v)
        return v


IntOrPercent = int | str


class Budgets(Model):
    max_parallel: int = Field(5, ge=1)
    max_outbound_per_node: int = Field(2, ge=1)
    max_inbound_per_node: int = Field(2, ge=1)
    max_unavailable_per_workload: IntOrPercent = 1
    honor_pod_disruption_budgets: bool = True

    @field_validator("max_unavailable_per_workload")
    @classmethod
    def _int_or_percent(cls, v: IntOrPercent) -> IntOrPercent:
        if isinstance(v, int):
            if v < 1:
                raise ValueError("must be at least 1")
            return v
        if not _PERCENT.match(v) or v == "0%":
            raise ValueError(f"{v!r} is not a count or a percentage between 1% and 100%")
        return v


class Window(Model):
    schedule: str = Field(description="Cron expression (5 fields) for when the window opens")
    duration: Duration
    time_zone: str = "UTC"

    _d = field_validator("duration")(classmethod(lambda cls, v: _check_duration(v)))


class Allow(Model):
    host_path: bool = False
    custom_controllers: bool = False


class MigrationPolicySpec(Model):
    priority: int = 0
    workloads: WorkloadSelector = Field(default_factory=WorkloadSelector)
    sources: SourceSelector = Field(default_factory=SourceSelector)
    destinations: DestinationSelector = Field(default_factory=DestinationSelector)
    placement: Literal["binpack", "spread"] = "binpack"
    strategy: Strategy = Field(default_factory=Strategy)
    budgets: Budgets = Field(default_factory=Budgets)
    windows: tuple[Window, ...] = ()
    on_failure: Literal["rollback", "evict", "abort"] = "rollback"
    allow: Allow = Field(default_factory=Allow)


class MigrationPolicy(Model):
    api_version: Literal["livepolicy.io/v1alpha1"]
    kind: Literal["MigrationPolicy"]
    metadata: Metadata
    spec: MigrationPolicySpec


# ---------------------------------------------------------------- Settings

class LabelKeys(Model):
    migration_enabled: str = "live.cast.ai/migration-enabled"
    opt_out: str = "autoscaling.cast.ai/live-migration-disabled"
    recover_on_origin: str = "autoscaling.cast.ai/removal-disabled"
    subnet_id: str = "topology.cast.ai/subnet-id"
    custom_network: str = "live.cast.ai/custom-network"
    cpu_model: str = "feature.node.kubernetes.io/cpu-model.id"
    cpu_feature_prefix: str = "feature.node.kubernetes.io/cpu-cpuid."


def _default_managed() -> LabelSelector:
    return LabelSelector(match_labels={"provisioner.cast.ai/managed-by": "cast.ai"})


class SettingsSpec(Model):
    labels: LabelKeys = Field(default_factory=LabelKeys)
    managed_node_selector: LabelSelector = Field(default_factory=_default_managed)
    supported_platforms: tuple[str, ...] = ("eks",)
    min_kubernetes_version: str = Field("1.30", pattern=r"^\d+\.\d+$")
    required_image_family: str = "FAMILY_AL2023"
    min_containerd_version: str = Field("2.0", pattern=r"^\d+(\.\d+){0,2}$")
    max_parallel: int = Field(10, ge=1, description="Cluster-wide cap across all policies")
    gpu_resources: tuple[str, ...] = Field(
        ("nvidia.com/gpu", "nvidia.com/gpu.*", "nvidia.com/mig-*", "amd.com/gpu",
         "gpu.intel.com/*", "aws.amazon.com/neuron*"),
        description="Extended resources that mean a GPU or accelerator (shell-style patterns)")
    generation_sets: dict[str, str] = Field(
        default_factory=dict, description="Override: instance family -> generation-set name")


class Settings(Model):
    api_version: Literal["livepolicy.io/v1alpha1"]
    kind: Literal["Settings"]
    metadata: Metadata
    spec: SettingsSpec = Field(default_factory=SettingsSpec)


DEFAULT_SETTINGS = SettingsSpec()

KINDS: dict[str, type[Model]] = {
    "NodeTemplate": NodeTemplate,
    "MigrationPolicy": MigrationPolicy,
    "Settings": Settings,
}
