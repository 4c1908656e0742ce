"""Terraform-style terminal view of a plan document.

Returns (style, line) pairs so the CLI can colour them with rich on a terminal and print
them plainly elsewhere.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from livepolicy.core.quantity import format_bytes, format_duration_ms

Line = tuple[str, str]

SYMBOL_MIGRATE = "~"
SYMBOL_BLOCKED = "!"
SYMBOL_ADD = "+"
SYMBOL_REMOVE = "-"


def summary_line(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    if not (s["migrations"] or s["labels_add"] or s["labels_remove"]):
        return (f"No changes. {s['blocked']} pod(s) blocked." if s["blocked"]
                else "No changes. The cluster matches the policies.")
    return (f"Plan: {s['migrations']} to migrate, {s['blocked']} blocked, "
            f"{s['labels_add']} label(s) to add, {s['labels_remove']} to remove.")


def migration_line(m: dict[str, Any]) -> str:
    e = m["estimate"]
    return (f"  {SYMBOL_MIGRATE} {m['pod']}  {m['from']} -> {m['to']}  "
            f"[{e['transfer']}, {format_bytes(e['memory_bytes'])}, freeze ~"
            f"{format_duration_ms(e['freeze_ms'])}, total ~{format_duration_ms(e['duration_ms'])}"
            f", wave {m['wave']}]")


def reasons_text(reasons: list[dict[str, Any]]) -> str:
    return "; ".join(f"[{r['code']}] {r['message']}" for r in reasons)


def render(doc: dict[str, Any], limit: int = 0) -> list[Line]:
    """The whole plan; `limit` > 0 caps the rows listed per section (the summary stays exact)."""
    out: list[Line] = []
    c = doc["cluster"]
    out.append(("bold", f"Cluster {c['name'] or c['source']}: {c['platform']} "
                        f"{c['kubernetes_version']} {c['region']}, {c['nodes']} nodes, "
                        f"{c['pods']} pods; compatibility graph: {doc['graph']['classes']} "
                        f"node classes, {doc['graph']['class_edges']} class edges"))
    for n in doc["notes"]:
        out.append(("red", f"{SYMBOL_BLOCKED} cluster: [{n['code']}] {n['message']}"))
    by_policy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in doc["migrations"]:
        by_policy[m["policy"]].append(m)
    blocked_by_policy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for b in doc["blocked"]:
        blocked_by_policy[b["policy"]].append(b)
    if doc["migrations"] or doc["blocked"]:
        out.append(("", ""))
        out.append(("", "livepolicy will perform the following migrations:"))
    for pol in doc["policies"]:
        ms, bs = by_policy.get(pol["name"], []), blocked_by_policy.get(pol["name"], [])
        if not ms and not bs:
            continue
        windows = ", ".join(f"{w['schedule']} for {w['duration']} ({w['timeZone']})"
                            for w in pol["windows"]) or "any time"
        out.append(("", ""))
        out.append(("bold", f"# policy {pol['name']} (priority {pol['priority']}, "
                            f"{pol['placement']}, windows: {windows})"))
        for m in ms[: limit or None]:
            out.append(("yellow", migration_line(m)))
            for note in m["notes"]:
                style = "yellow" if note["severity"] == "warn" else "dim"
                out.append((style, f"      {note['severity']}: [{note['code']}] "
                                   f"{note['message']}"))
        if limit and len(ms) > limit:
            out.append(("dim", f"  ... and {len(ms) - limit} more migrations"))
        for b in bs[: limit or None]:
            out.append(("red", f"  {SYMBOL_BLOCKED} {b['pod']}  on {b['from'] or '-'}: "
                               f"{reasons_text(b['reasons'])}"))
        if limit and len(bs) > limit:
            out.append(("dim", f"  ... and {len(bs) - limit} more blocked pods"))
    if doc["labels"]:
        out.append(("", ""))
        out.append(("bold", "# pod labels"))
        for lc in doc["labels"][: limit or None]:
            sym, style = ((SYMBOL_ADD, "green") if lc["action"] == "add"
                          else (SYMBOL_REMOVE, "red"))
            out.append((style, f"  {sym} {lc['pod']}  {lc['key']}={lc['value']}"))
        if limit and len(doc["labels"]) > limit:
            out.append(("dim", f"  ... and {len(doc['labels']) - limit} more label changes"))
    out.append(("", ""))
    out.append(("bold", summary_line(doc)))
    return out
