"""Refuse a saved plan whose inputs changed, naming what changed (Terraform's stale plan)."""

from __future__ import annotations

from typing import Any

from livepolicy.facts.model import ClusterFacts
from livepolicy.planner.plan import canonical_hash, fact_hash
from livepolicy.policy.load import PolicySet


def stale_reasons(plan: dict[str, Any], facts: ClusterFacts, ps: PolicySet,
                  ignore: set[str] | None = None, gone: set[str] | None = None) -> list[str]:
    """What differs between the plan's recorded inputs and the current ones.

    `ignore` lists objects the current apply itself changed (a resumed run moved them):
    their changes are expected, but they must still exist, except those in `gone`: pods
    an earlier run moved on a live cluster, where the moved pod is a copy of another name
    (docs/kubelet-runtime.md) and the old name is gone.
    """
    ignore = ignore or set()
    gone = gone or set()
    out = []
    for key, want in plan["dependencies"]["objects"].items():
        kind, _, name = key.partition("/")
        obj = facts.pod_by_key.get(name) if kind == "Pod" else facts.node_by_name.get(name)
        if obj is None:
            if key not in gone:
                out.append(f"{key} no longer exists")
        elif key not in ignore and fact_hash(obj) != want:
            out.append(f"{key} changed")
    current = {f"{kind}/{name}": canonical_hash(obj.model_dump(mode="json"))
               for kind, objs in (("NodeTemplate", ps.templates),
                                  ("MigrationPolicy", ps.policies)) for name, obj in objs.items()}
    current["Settings"] = canonical_hash(ps.settings.model_dump(mode="json"))
    recorded = plan["dependencies"]["policies"]
    for key in sorted(set(recorded) | set(current)):
        if key not in current:
            out.append(f"policy {key} was removed")
        elif key not in recorded:
            out.append(f"policy {key} was added")
        elif recorded[key] != current[key]:
            out.append(f"policy {key} changed")
    return out
