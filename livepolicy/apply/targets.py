"""`--target` on plan and apply: a plan restricted to some pods, nodes or policies.

As Terraform's `-target`, for the exceptional case (one urgent pod, one node to drain
first), not for routine use: the planner still plans the whole cluster, so placement,
budgets and blocked pods are exactly those of the full plan, and only then is the
document cut down to the migrations that match. Dropping migrations can only make a
budget's waves lighter, so the dependencies left between kept migrations still hold.

A target is `NS/NAME` or `pod/NS/NAME` (a pod), `node/NAME` (migrations off or onto that
node) or `policy/NAME` (migrations of that policy). Label changes are kept for the pods of
kept migrations and for pods named as targets. The plan records its targets
(`"targets"`), says so when shown, and has a fingerprint of its own, so a targeted apply
never shares a journal with an untargeted one.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from livepolicy.core.diagnostics import Diagnostic, DiagnosticError

KINDS = ("pod", "node", "policy")


@dataclass(frozen=True)
class Target:
    kind: str  # one of KINDS
    name: str  # ns/name for a pod

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"

    def matches(self, m: dict[str, Any]) -> bool:
        if self.kind == "pod":
            return bool(m.get("pod") == self.name)
        if self.kind == "node":
            return self.name in (m.get("from"), m.get("to"))
        return bool(m.get("policy") == self.name)


def parse_target(text: str) -> Target:
    """`ns/name`, `pod/ns/name`, `node/NAME` or `policy/NAME`; ValueError says why not."""
    head, _, rest = text.partition("/")
    if head in ("node", "policy"):
        if not rest or "/" in rest:
            raise ValueError(f"{text!r}: {head}/NAME expected")
        return Target(head, rest)
    if head == "pod" and rest.count("/") == 1:
        text = rest
    ns, _, name = text.partition("/")
    if not ns or not name or "/" in name:
        raise ValueError(f"{text!r}: a pod NS/NAME (or pod/NS/NAME), node/NAME or "
                         "policy/NAME expected")
    return Target("pod", text)


def parse_targets(values: Iterable[str]) -> list[Target]:
    """Every --target, or one located problem per bad one."""
    out: list[Target] = []
    bad: list[Diagnostic] = []
    for v in values:
        try:
            t = parse_target(v)
        except ValueError as exc:
            bad.append(Diagnostic("--target", str(exc), None))
            continue
        if t not in out:
            out.append(t)
    if bad:
        raise DiagnosticError(bad)
    return out


def restrict(doc: dict[str, Any], targets: list[Target]) -> dict[str, Any]:
    """The plan cut down to `targets` (see the module docstring), fingerprinted anew."""
    out = copy.deepcopy(doc)
    out.pop("fingerprint", None)
    kept = [m for m in out["migrations"] if any(t.matches(m) for t in targets)]
    ids = {m["id"] for m in kept}
    for m in kept:
        if "depends_on" in m:
            m["depends_on"] = [d for d in m["depends_on"] if d in ids]
    pods = {m["pod"] for m in kept} | {t.name for t in targets if t.kind == "pod"}
    out["migrations"] = kept
    out["labels"] = [lc for lc in out["labels"] if lc["pod"] in pods]
    out["blocked"] = [b for b in out["blocked"] if any(t.matches(b) for t in targets)]
    s = out["summary"]
    s["migrations"] = len(kept)
    s["blocked"] = len(out["blocked"])
    s["labels_add"] = sum(1 for lc in out["labels"] if lc["action"] == "add")
    s["labels_remove"] = sum(1 for lc in out["labels"] if lc["action"] == "remove")
    s["waves"] = len({m.get("wave") for m in kept})
    out["targets"] = [str(t) for t in targets]
    out["fingerprint"] = hashlib.sha256(orjson.dumps(out, option=orjson.OPT_SORT_KEYS)
                                        ).hexdigest()
    return out


def unmatched(doc: dict[str, Any], targets: list[Target]) -> list[Target]:
    """Targets that no migration of the (untargeted) plan matches."""
    return [t for t in targets if not any(t.matches(m) for m in doc["migrations"])]


def targeted_warning(doc: dict[str, Any]) -> str | None:
    """What a targeted plan says wherever it is shown (None for a whole plan)."""
    targets = doc.get("targets")
    if not targets:
        return None
    return (f"Warning: this plan is targeted ({', '.join(targets)}): only the migrations "
            "that match, and the label changes of their pods, are in it; the rest of what "
            "the policies ask for is left out. Plan again without --target to see it all.")
