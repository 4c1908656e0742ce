"""Pydantic models of the policy kinds (apiVersion livepolicy.io/v1alpha1).

Wire names are camelCase like Kubernetes objects; unknown fields are rejected so a typo
never silently changes a plan. Models are frozen: a loaded policy set is a value.

Every field's docstring is its description in the JSON Schemas (schemas/), which editors
show on hover; string formats come from `formats`, shared with the schemas. Checks live
in field validators where they can, so pydantic reports them together with every other
field error of the document in one pass.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from livepolicy.core.selectors import Requirement, Selector
from livepolicy.policy import formats
from livepolicy.policy.formats import Bandwidth, Duration, Name

API_VERSION = "livepolicy.io/v1alpha1"
NO_SOURCES = ("sources selects no node: name templates, a selector, names, cordoned or "
              "olderThan (a policy never drains every node by default)")
# TPL001 (livepolicy.rules.template_architecture) accepts exactly these; the schema too.
ARCHITECTURES = ("amd64", "arm64")

_ACRONYMS = {"api": "API", "gib": "GiB", "tcp": "TCP", "gpu": "GPU", "id": "ID"}


def _title(words: list[str]) -> str:
    out = [_ACRONYMS.get(w.lower(), w.lower()) for w in words if w]
    return " ".join(out)[:1].upper() + " ".join(out)[1:]


def field_title(name: str, info: FieldInfo | Any) -> str:
    """"Max parallel", not pydantic's "Maxparallel" (the title of the camelCase alias)."""
    return _title(name.split("_"))


def model_title(model: type) -> str:
    """"Migration policy spec" for MigrationPolicySpec."""
    return _title(re.findall(r"[A-Z][a-z0-9]*", model.__name__))


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True,
        use_enum_values=True, use_attribute_docstrings=True, field_title_generator=field_title,
        model_title_generator=model_title,
    )


def _expression_schema(schema: dict[str, Any]) -> None:
    """The operator/values rule of `Expression._values_fit_operator`, as JSON Schema."""
    def when(ops: list[str], values: dict[str, Any], required: bool) -> dict[str, Any]:
        then: dict[str, Any] = {"properties": {"values": values}}
        if required:
            then["required"] = ["values"]
        return {"if": {"properties": {"operator": {"enum": ops}}, "required": ["operator"]},
                "then": then}
    schema["allOf"] = [
        when(["In", "NotIn"], {"minItems": 1}, True),
        when(["Exists", "DoesNotExist"], {"maxItems": 0}, False),
        when(["Gt", "Lt"], {"minItems": 1, "maxItems": 1,
                            "items": {"pattern": formats.INTEGER}}, True),
    ]


class Expression(Model):
    """One requirement on a label, as in Kubernetes matchExpressions."""

    model_config = ConfigDict(json_schema_extra=_expression_schema)

    key: str = Field(min_length=1)
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    """In and NotIn need values; Exists and DoesNotExist take none; Gt and Lt take exactly
    one integer."""
    values: tuple[str, ...] = ()
    """The values the operator compares the label with."""

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Expression:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        if self.operator in ("Gt", "Lt") and (
                len(self.values) != 1 or not formats.matches(formats.INTEGER, self.values[0])):
            raise ValueError(f"operator {self.operator} needs exactly one integer value")
        return self


class LabelSelector(Model):
    """Kubernetes-style selector; empty matches everything."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    """Labels that must have exactly these values."""
    match_expressions: tuple[Expression, ...] = ()
    """Requirements that must all hold."""

    def compile(self) -> Selector:
        reqs = [Requirement(k, "In", (v,)) for k, v in sorted(self.match_labels.items())]
        reqs += [Requirement(e.key, e.operator, e.values) for e in self.match_expressions]
        return Selector(tuple(reqs))


class Metadata(Model):
    """Name and bookkeeping of a policy object, as in Kubernetes."""

    name: Name
    """Unique per kind: lowercase letters, digits, '-' or '.', starting and ending with a
    letter or digit."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Free-form labels (not read by livepolicy)."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Free-form annotations (not read by livepolicy)."""


# ---------------------------------------------------------------- NodeTemplate

class RuntimeSpec(Model):
    """The container runtime the template's nodes run."""

    name: Literal["containerd"] = "containerd"
    """The runtime; only containerd can checkpoint and restore."""
    min_version: str = Field("2.0", pattern=formats.VERSION)
    """Lowest runtime version, e.g. 2.0 or 2.1.4."""


class NodeTemplateSpec(Model):
    """How to recognise a template's nodes and what they must look like to host live pods."""

    node_selector: LabelSelector = Field(default_factory=LabelSelector)
    """Which nodes belong to the template."""
    architecture: Annotated[str, WithJsonSchema({"type": "string",
                                                 "enum": list(ARCHITECTURES)})]
    """amd64 or arm64: pods never live-migrate across architectures, so 'any' is rejected
    (TPL001)."""
    instance_families: tuple[str, ...] = Field(min_length=1)
    """EC2 instance families (c5, m6g, ...); all in one generation set (TPL002)."""
    image_family: str = "FAMILY_AL2023"
    """The node image family, e.g. FAMILY_AL2023."""
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    """The container runtime the nodes must run."""
    network: Literal["standard", "custom"] = "standard"
    """standard: the VPC CNI's default networking; custom: custom networking (ENIConfig)."""


class NodeTemplate(Model):
    """A set of interchangeable nodes: one architecture, one generation set."""

    api_version: Literal["livepolicy.io/v1alpha1"]
    """Always livepolicy.io/v1alpha1."""
    kind: Literal["NodeTemplate"]
    """NodeTemplate."""
    metadata: Metadata
    """The template's name (referenced from MigrationPolicy sources and destinations)."""
    spec: NodeTemplateSpec
    """What the template's nodes look like."""


# ---------------------------------------------------------------- MigrationPolicy

class WorkloadSelector(Model):
    """Which pods a policy may move."""

    namespaces: tuple[str, ...] = ()
    """Only pods in these namespaces (empty: every namespace)."""
    exclude_namespaces: tuple[str, ...] = ()
    """Never pods in these namespaces."""
    selector: LabelSelector = Field(default_factory=LabelSelector)
    """Only pods with these labels."""
    owner_kinds: tuple[Literal["Deployment", "StatefulSet", "Job", "CronJob", "Pod",
                               "ReplicaSet", "Custom"], ...] = ()
    """Only pods owned by these kinds of controller (empty: any)."""


def _sources_schema(schema: dict[str, Any]) -> None:
    """The "sources selects no node" check of `livepolicy.policy.load`, as JSON Schema."""
    def given(key: str, value: dict[str, Any]) -> dict[str, Any]:
        return {"required": [key], "properties": {key: value}}
    schema["anyOf"] = [
        given("templates", {"minItems": 1}), given("names", {"minItems": 1}),
        given("cordoned", {"type": "boolean"}), given("olderThan", {"type": "string"}),
        given("selector", {"anyOf": [given("matchLabels", {"minProperties": 1}),
                                     given("matchExpressions", {"minItems": 1})]}),
    ]


class SourceSelector(Model):
    """Which nodes a policy empties; at least one criterion is required, so a policy never
    drains every node by default."""

    model_config = ConfigDict(json_schema_extra=_sources_schema)

    templates: tuple[str, ...] = ()
    """Nodes of these NodeTemplates."""
    selector: LabelSelector = Field(default_factory=LabelSelector)
    """Nodes with these labels."""
    names: tuple[str, ...] = ()
    """Nodes with these names."""
    cordoned: bool | None = None
    """true: only cordoned nodes; false: only schedulable ones."""
    older_than: Duration | None = None
    """Only nodes created longer ago than this duration (e.g. 2160h)."""

    @model_validator(mode="after")
    def _selects_something(self) -> SourceSelector:
        if not (self.templates or self.names or self.cordoned is not None or self.older_than
                or self.selector.match_labels or self.selector.match_expressions):
            raise ValueError(NO_SOURCES)
        return self


class DestinationSelector(Model):
    """Which nodes may receive the moved pods (empty: any compatible node)."""

    templates: tuple[str, ...] = ()
    """Nodes of these NodeTemplates."""
    selector: LabelSelector = Field(default_factory=LabelSelector)
    """Nodes with these labels."""


class Strategy(Model):
    """How memory is moved and what the estimates assume."""

    memory_transfer: Literal["auto", "iterative", "stop-and-copy", "post-copy"] = "auto"
    """iterative pre-copy rounds, stop-and-copy, post-copy, or auto (chosen per pod)."""
    tcp: Literal["preserve", "close"] = "preserve"
    """Keep established TCP connections across the move, or close them."""
    max_rounds: int = Field(5, ge=1, le=30)
    """Most pre-copy rounds before the final freeze (1-30)."""
    freeze_budget: Duration = "300ms"
    """Longest acceptable freeze of a pod (a duration, e.g. 300ms)."""
    completion_timeout_per_gib: Duration = "150s"
    """Time allowed per GiB of pod memory before a migration is abandoned (a duration)."""
    progress_timeout: Duration = "150s"
    """Abandon a migration that makes no progress for this long (a duration)."""
    bandwidth: Bandwidth = "5Gbps"
    """Link speed assumed for estimates, e.g. 1Gbps, 500Mbps or 100MiB/s."""
    dirty_rate: Bandwidth = "50MiB/s"
    """Assumed page dirtying rate for estimates, e.g. 50MiB/s."""


def _int_or_percent_schema() -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1},
                                     {"type": "string", "pattern": formats.PERCENT}]})


IntOrPercent = int | str


class Budgets(Model):
    """Limits on how much moves at once; the planner orders migrations so no walk exceeds
    them."""

    max_parallel: int = Field(5, ge=1)
    """Migrations of this policy in flight at once."""
    max_outbound_per_node: int = Field(2, ge=1)
    """Migrations leaving one node at once."""
    max_inbound_per_node: int = Field(2, ge=1)
    """Migrations arriving on one node at once."""
    max_unavailable_per_workload: Annotated[IntOrPercent, _int_or_percent_schema()] = 1
    """Pods of one workload migrating at once: a count (at least 1) or a percentage of its
    replicas (1% to 100%)."""
    honor_pod_disruption_budgets: bool = True
    """Count migrations against the pods' PodDisruptionBudgets."""

    @field_validator("max_unavailable_per_workload", mode="before")
    @classmethod
    def _no_bool(cls, v: object) -> object:
        if isinstance(v, bool):  # true would silently mean 1
            raise ValueError("must be a count or a percentage, not a boolean")
        return v

    @field_validator("max_unavailable_per_workload")
    @classmethod
    def _int_or_percent(cls, v: IntOrPercent) -> IntOrPercent:
        if isinstance(v, int):
            if v < 1:
                raise ValueError("must be at least 1")
            return v
        if not formats.matches(formats.PERCENT, v):
            raise ValueError(f"{v!r} is not a count or a percentage between 1% and 100%")
        return v


class Window(Model):
    """A maintenance window: migrations start only while one is open."""

    schedule: Annotated[str, WithJsonSchema({"type": "string",
                                             "pattern": formats.CRON_FIELDS})]
    """Cron expression (5 fields: minute hour day month weekday) for when the window
    opens."""
    duration: Duration
    """How long the window stays open (a duration, e.g. 2h)."""
    time_zone: str = "UTC"
    """IANA time zone of the schedule, e.g. Europe/Berlin."""

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if not formats.matches(formats.CRON_FIELDS, v) or not croniter.is_valid(v):
            raise ValueError(f"invalid cron expression {v!r} (5 fields: minute hour day "
                             "month weekday)")
        return v

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as "
                             "Europe/Berlin)") from None
        return v


class Allow(Model):
    """Experimental allowances: pods the rules would otherwise refuse to move."""

    host_path: bool = False
    """Move pods with hostPath volumes (the destination must have the same files)."""
    custom_controllers: bool = False
    """Move pods owned by controllers other than the built-in ones."""


def _spec_schema(schema: dict[str, Any]) -> None:
    """A spec without sources selects no node (livepolicy.policy.load refuses it)."""
    schema["required"] = [*schema.get("required", []), "sources"]


class MigrationPolicySpec(Model):
    """Which workloads move, from which nodes to which, how, and within what budgets."""

    model_config = ConfigDict(json_schema_extra=_spec_schema)

    priority: int = 0
    """Higher first: a pod two policies select is moved by the higher-priority one."""
    workloads: WorkloadSelector = Field(default_factory=WorkloadSelector)
    """Which pods the policy may move."""
    sources: SourceSelector = Field(default_factory=SourceSelector.model_construct)
    """Which nodes the policy empties (required: at least one criterion)."""
    destinations: DestinationSelector = Field(default_factory=DestinationSelector)
    """Which nodes may receive the pods."""
    placement: Literal["binpack", "spread"] = "binpack"
    """binpack fills the fullest fitting node first; spread the emptiest."""
    strategy: Strategy = Field(default_factory=Strategy)
    """How the policy's pods are moved: memory transfer, TCP, timeouts, estimates."""
    budgets: Budgets = Field(default_factory=Budgets)
    """How much moves at once."""
    windows: tuple[Window, ...] = ()
    """Maintenance windows (empty: any time)."""
    on_failure: Literal["rollback", "evict", "abort"] = "rollback"
    """After a failed migration: keep the pod on its source (rollback), evict it, or stop
    the apply (abort)."""
    allow: Allow = Field(default_factory=Allow)
    """Experimental allowances."""


class MigrationPolicy(Model):
    """Live-migrate the selected pods off the selected nodes."""

    api_version: Literal["livepolicy.io/v1alpha1"]
    """Always livepolicy.io/v1alpha1."""
    kind: Literal["MigrationPolicy"]
    """MigrationPolicy."""
    metadata: Metadata
    """The policy's name."""
    spec: MigrationPolicySpec
    """What the policy moves and how."""


# ---------------------------------------------------------------- Settings

class LabelKeys(Model):
    """Label keys livepolicy reads and writes, for clusters that use other names."""

    migration_enabled: str = "live.cast.ai/migration-enabled"
    """Pod label set to true on exactly the pods that can live-migrate."""
    opt_out: str = "autoscaling.cast.ai/live-migration-disabled"
    """Pod label by which a workload opts out of live migration."""
    recover_on_origin: str = "autoscaling.cast.ai/removal-disabled"
    """Node label that keeps a node from being removed while it is a source."""
    subnet_id: str = "topology.cast.ai/subnet-id"
    """Node label holding the node's subnet ID."""
    custom_network: str = "live.cast.ai/custom-network"
    """Node label marking custom networking."""
    cpu_model: str = "feature.node.kubernetes.io/cpu-model.id"
    """Node label holding the CPU model (node-feature-discovery)."""
    cpu_feature_prefix: str = "feature.node.kubernetes.io/cpu-cpuid."
    """Prefix of the node labels listing CPU features (node-feature-discovery)."""


def _default_managed() -> LabelSelector:
    return LabelSelector(match_labels={"provisioner.cast.ai/managed-by": "cast.ai"})


class SettingsSpec(Model):
    """Cluster-wide settings; every field has a default."""

    labels: LabelKeys = Field(default_factory=LabelKeys)
    """Label keys, for clusters that use other names."""
    managed_node_selector: LabelSelector = Field(default_factory=_default_managed)
    """Nodes that run the live-migration agent and CNI fork."""
    supported_platforms: tuple[str, ...] = ("eks",)
    """Kubernetes platforms live migration supports."""
    min_kubernetes_version: str = Field("1.30", pattern=formats.MAJOR_MINOR)
    """Lowest Kubernetes version (major.minor, e.g. 1.30)."""
    required_image_family: str = "FAMILY_AL2023"
    """Node image family every node must run."""
    min_containerd_version: str = Field("2.0", pattern=formats.VERSION)
    """Lowest containerd version on any node, e.g. 2.0."""
    max_parallel: int = Field(10, ge=1)
    """Cluster-wide cap on migrations in flight, across all policies."""
    gpu_resources: tuple[str, ...] = (
        "nvidia.com/gpu", "nvidia.com/gpu.*", "nvidia.com/mig-*", "amd.com/gpu",
        "gpu.intel.com/*", "aws.amazon.com/neuron*")
    """Extended resources that mean a GPU or accelerator (shell-style patterns)."""
    generation_sets: dict[str, str] = Field(default_factory=dict)
    """Override: instance family -> generation-set name."""


class Settings(Model):
    """Cluster-wide settings (at most one per policy directory)."""

    api_version: Literal["livepolicy.io/v1alpha1"]
    """Always livepolicy.io/v1alpha1."""
    kind: Literal["Settings"]
    """Settings."""
    metadata: Metadata
    """A name for the settings object."""
    spec: SettingsSpec = Field(default_factory=SettingsSpec)
    """The settings."""


DEFAULT_SETTINGS = SettingsSpec()

KINDS: dict[str, type[Model]] = {
    "NodeTemplate": NodeTemplate,
    "MigrationPolicy": MigrationPolicy,
    "Settings": Settings,
}

