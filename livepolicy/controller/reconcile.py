"""Label reconciliation shared by `livepolicy label` (once) and the controller (forever).

From raw objects to written labels: the facts are built from the objects, `make_plan`
says which migration-enabled labels change, and `LabelWriter` writes just those, each
guarded by the pod's resourceVersion. A conflict re-reads the pod and re-plans the whole
cluster with the fresh pod in place (`Replanner`), exactly as the first time, so a
concurrent edit that changes the verdict (an opt-out label) is honoured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from livepolicy.facts.kube import KubeSource
from livepolicy.facts.model import ClusterFacts
from livepolicy.kube.client import normalise
from livepolicy.kube.errors import KubeError
from livepolicy.kube.labels import LabelEdit, LabelOutcome, LabelWriter, resource_version
from livepolicy.kube.resources import PODS
from livepolicy.planner.model import LabelChange
from livepolicy.planner.plan import make_plan
from livepolicy.policy.load import PolicySet


def pod_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"


def observed_time(facts: ClusterFacts) -> datetime:
    """The time the facts were read: age-based policies and windows count from it."""
    text = facts.info.observed_at
    if text:
        try:
            t = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return t if t.tzinfo else t.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


def edits_of(changes: Sequence[LabelChange]) -> list[LabelEdit]:
    out = []
    for lc in changes:
        ns, _, name = lc.pod.partition("/")
        out.append(LabelEdit(ns, name, lc.key, lc.value if lc.action == "add" else None))
    return out


def planned_labels(facts: ClusterFacts, ps: PolicySet, now: datetime | None = None
                   ) -> tuple[LabelChange, ...]:
    return make_plan(facts, ps, now or observed_time(facts)).labels


class Replanner:
    """Re-evaluates labels after conflicts: the fresh pods replace the stale ones and the
    plan is made again from the whole cluster, as the first time."""

    def __init__(self, source: KubeSource, items: list[dict[str, Any]], ps: PolicySet,
                 now: datetime | None = None) -> None:
        self.source = source
        self.items = items
        self.ps = ps
        self.now = now

    def __call__(self, fresh: Mapping[str, dict[str, Any] | None]) -> list[LabelEdit]:
        index = {pod_key(o): i for i, o in enumerate(self.items) if o.get("kind") == "Pod"}
        drop: set[int] = set()
        for key, pod in fresh.items():
            i = index.get(key)
            if pod is None:
                if i is not None:
                    drop.add(i)
                continue
            normalise(pod, PODS)
            if i is None:
                self.items.append(pod)
            else:
                self.items[i] = pod
        if drop:
            self.items[:] = [o for i, o in enumerate(self.items) if i not in drop]
        facts = self.source.facts_of(self.items)
        labels = planned_labels(facts, self.ps, self.now)
        return [e for e in edits_of(labels) if e.pod in fresh]


def write_labels(writer: LabelWriter, source: KubeSource, items: list[dict[str, Any]],
                 facts: ClusterFacts, ps: PolicySet) -> list[LabelOutcome]:
    """Plan the label changes of `facts` (built from `items`) and write them."""
    now = observed_time(facts)
    labels = planned_labels(facts, ps, now)
    versions = {pod_key(o): resource_version(o) for o in items if o.get("kind") == "Pod"}
    return writer.run(edits_of(labels), versions, Replanner(source, items, ps, now))


def reconcile_labels(source: KubeSource, ps: PolicySet, *, dry_run: bool = False,
                     parallelism: int = 8, max_attempts: int = 5) -> list[LabelOutcome]:
    """Read the cluster, plan the label changes, write them with conflict retries."""
    items = source.read_objects()
    facts = source.facts_of(items)
    writer = LabelWriter(source.client, dry_run=dry_run, parallelism=parallelism,
                         max_attempts=max_attempts)
    try:
        return write_labels(writer, source, items, facts, ps)
    except KubeError as exc:
        raise exc.as_diagnostic_error("kube") from None


def summarise(outcomes: Sequence[LabelOutcome]) -> dict[str, int]:
    done = ("applied", "would-apply")
    return {
        "add": sum(1 for o in outcomes if o.result in done and o.edit.action == "add"),
        "remove": sum(1 for o in outcomes if o.result in done and o.edit.action == "remove"),
        "not_needed": sum(1 for o in outcomes if o.result == "not-needed"),
        "gone": sum(1 for o in outcomes if o.result == "gone"),
        "failed": sum(1 for o in outcomes if o.result == "failed"),
        "conflicts": sum(o.conflicts for o in outcomes),
    }
