"""Write pod labels safely: optimistic concurrency, conflict retries, a field manager.

Every write is a strategic merge patch that carries the pod's `resourceVersion` with the
label (or `null` to remove it), so it lands only on the version of the pod the decision
was made from. A 409 Conflict means the pod changed in between: the pod is read again,
the decision is made again from the fresh pod (`replan`, supplied by the caller that
knows the rules), and the write is retried, a few times at most. Writes run on a small
thread pool; `dry_run` sends `dryRun=All`, so the API server validates each change
(conflicts included) without saving it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from livepolicy.kube.client import FIELD_MANAGER, KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import PODS

DEFAULT_ATTEMPTS = 5


@dataclass(frozen=True)
class LabelEdit:
    """Set (`value`) or remove (`value is None`) one label on one pod."""

    namespace: str
    name: str
    key: str
    value: str | None

    @property
    def pod(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def action(self) -> str:
        return "remove" if self.value is None else "add"


@dataclass
class LabelOutcome:
    """What became of one edit. `result`: applied | would-apply (dry run) | not-needed
    (the fresh pod no longer needs it) | gone (the pod was deleted) | failed."""

    edit: LabelEdit
    result: str
    attempts: int
    conflicts: int = 0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.result != "failed"

    def to_json(self) -> dict[str, Any]:
        return {"pod": self.edit.pod, "key": self.edit.key, "value": self.edit.value,
                "action": self.edit.action, "result": self.result, "attempts": self.attempts,
                "conflicts": self.conflicts, "message": self.message}


#: Given the pods that conflicted, read again (None: deleted), the edits still wanted.
Replan = Callable[[Mapping[str, dict[str, Any] | None]], list[LabelEdit]]


def resource_version(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("resourceVersion", ""))


class LabelWriter:
    def __init__(self, client: KubeClient, *, dry_run: bool = False, parallelism: int = 8,
                 max_attempts: int = DEFAULT_ATTEMPTS,
                 field_manager: str = FIELD_MANAGER) -> None:
        self.client = client
        self.dry_run = dry_run
        self.parallelism = max(1, parallelism)
        self.max_attempts = max(1, max_attempts)
        self.field_manager = field_manager

    def patch(self, edit: LabelEdit, version: str) -> dict[str, Any]:
        """One guarded write: 409 if the pod is no longer at `version`."""
        meta: dict[str, Any] = {"labels": {edit.key: edit.value}}
        if version:
            meta["resourceVersion"] = version
        return self.client.patch(PODS, edit.name, {"metadata": meta}, edit.namespace,
                                 patch_type="strategic", dry_run=self.dry_run,
                                 field_manager=self.field_manager)

    def run(self, edits: list[LabelEdit], versions: Mapping[str, str], replan: Replan
            ) -> list[LabelOutcome]:
        """Apply `edits` (pod key -> resourceVersion in `versions`), retrying conflicts."""
        versions = dict(versions)
        outcomes: dict[tuple[str, str], LabelOutcome] = {}
        attempts: dict[str, int] = {}
        conflicts: dict[str, int] = {}
        pending = list(edits)
        for round_no in range(1, self.max_attempts + 1):
            for e in pending:
                attempts[e.pod] = attempts.get(e.pod, 0) + 1
            with ThreadPoolExecutor(self.parallelism, thread_name_prefix="label") as pool:
                results = list(pool.map(lambda e: self._one(e, versions.get(e.pod, "")),
                                        pending))
            conflicted: list[LabelEdit] = []
            for edit, (result, message) in zip(pending, results, strict=True):
                if result == "conflict":
                    conflicts[edit.pod] = conflicts.get(edit.pod, 0) + 1
                    conflicted.append(edit)
                    continue
                outcomes[(edit.pod, edit.key)] = LabelOutcome(
                    edit, result, attempts[edit.pod], conflicts.get(edit.pod, 0), message)
            if not conflicted:
                break
            if round_no == self.max_attempts:
                for edit in conflicted:
                    outcomes[(edit.pod, edit.key)] = LabelOutcome(
                        edit, "failed", attempts[edit.pod], conflicts[edit.pod],
                        f"the pod kept changing: {conflicts[edit.pod]} conflicts in "
                        f"{self.max_attempts} attempts")
                break
            fresh = self._reread(conflicted)
            for key, pod in fresh.items():
                if pod is not None:
                    versions[key] = resource_version(pod)
            wanted = {(e.pod, e.key): e for e in replan(fresh) if e.pod in fresh}
            pending = []
            for edit in conflicted:
                if fresh.get(edit.pod) is None:
                    outcomes[(edit.pod, edit.key)] = LabelOutcome(
                        edit, "gone", attempts[edit.pod], conflicts[edit.pod],
                        "the pod was deleted")
                elif (edit.pod, edit.key) in wanted:
                    pending.append(wanted.pop((edit.pod, edit.key)))
                else:
                    outcomes[(edit.pod, edit.key)] = LabelOutcome(
                        edit, "not-needed", attempts[edit.pod], conflicts[edit.pod],
                        "re-evaluated after a conflict: the pod no longer needs this change")
            pending.extend(wanted.values())  # a fresh pod may need the opposite edit
        order = {(e.pod, e.key): i for i, e in enumerate(edits)}
        return sorted(outcomes.values(),
                      key=lambda o: (order.get((o.edit.pod, o.edit.key), len(order)),
                                     o.edit.pod))

    def _one(self, edit: LabelEdit, version: str) -> tuple[str, str]:
        try:
            self.patch(edit, version)
        except KubeError as exc:
            if exc.conflict:
                return "conflict", exc.message
            if exc.not_found:
                return "gone", "the pod was deleted"
            return "failed", exc.message
        return ("would-apply" if self.dry_run else "applied"), ""

    def _reread(self, edits: list[LabelEdit]) -> dict[str, dict[str, Any] | None]:
        pods = {e.pod: e for e in edits}

        def get(e: LabelEdit) -> dict[str, Any] | None:
            return self.client.get_optional(PODS, e.name, e.namespace)

        with ThreadPoolExecutor(self.parallelism, thread_name_prefix="label") as pool:
            return dict(zip(pods, pool.map(get, pods.values()), strict=True))
