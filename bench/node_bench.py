"""Real-node migrations (kubelet runtime) against the lab's `criu` runtime, in one run.

    sudo python -m bench.node_bench [--repeat 3] [--write-docs]

Starts the two-node cluster of docs/node-testenv.md, installs the chart, and moves a fresh
podserver Deployment pod from lp-node-a to lp-node-b `--repeat` times with `livepolicy
plan --cluster kube` + `livepolicy apply` (the chart's kubelet agents). The baseline, in
the same run: the lab's small pod moved as many times by the `criu` runtime (bench
lab_bench's `moves`). Prints freeze and total per move, the phase times from apply's
journal, the medians and the ratio kubelet/criu; `--write-docs` replaces the
"Real nodes" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.lab_bench import moves
from livepolicy.lab.lab import Lab

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("checkpointing", "transferring", "restoring", "verifying", "committing",
          "committed")


def phase_times(journal: Path) -> dict[str, float]:
    """Seconds spent in each phase of the one migration of a journal (phase -> next)."""
    at = {}
    for line in journal.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "phase":
            at[rec["phase"]] = float(rec["time"])
    return {p: round(at[n] - at[p], 3) for p, n in itertools.pairwise(PHASES)
            if p in at and n in at}


def node_moves(count: int) -> list[dict[str, Any]]:
    from tests.kube.test_chart_render import CHART, helm
    from tests.nodes import conftest as nodes  # the fixtures' helpers, outside pytest
    from tests.support.nodeenv import NodeTestEnv, livepolicy_image

    out = []
    with NodeTestEnv(images=[livepolicy_image()]) as env, \
            tempfile.TemporaryDirectory(prefix="node-bench-") as tmp:
        values = Path(tmp) / "values.json"
        values.write_text(json.dumps(nodes.chart_values(env)))
        helm("install", nodes.RELEASE, str(CHART), "--namespace", nodes.NAMESPACE,
             "--create-namespace", "--values", str(values),
             "--kubeconfig", str(env.kubeconfig_path))
        env.wait(lambda: len(nodes.agents_ready(env)) == 2, "agents Ready")
        for i in range(count):
            name = f"bench-{i}-{secrets.token_hex(2)}"
            env.create("/apis/apps/v1/namespaces/default/deployments", nodes.deployment(name))
            w = nodes.Workload(env, name)
            env.wait(lambda w=w: len(w.pods()) == 1 and nodes.ready(w.pod()) and w.pod()[
                "metadata"].get("labels", {}).get("live.cast.ai/migration-enabled") == "true",
                f"{name} Ready and labelled")
            token = w.ask("REQ 1")[0].split()[3]
            run = Path(tmp) / name
            run.mkdir()
            _, events = nodes.plan_and_apply(env, run)
            (o,) = events[-1]["outcomes"]
            ok = o["result"] == "migrated" and w.ask("REQ 2")[0].split()[2:] == ["2", token]
            (journal,) = (run / "state").rglob("journal.jsonl")
            row = {"ok": ok, "freeze_s": o["freeze_ms"] / 1000, "total_s": o["duration_ms"] / 1000,
                   "phases_s": phase_times(journal), "error": o.get("error")}
            print(f"  kubelet {name}: freeze {row['freeze_s']:.3f}s, total "
                  f"{row['total_s']:.3f}s, {row['phases_s']}, {'ok' if ok else 'FAILED'}",
                  file=sys.stderr)
            out.append(row)
            assert env.kube is not None
            env.kube.request("DELETE", f"/apis/apps/v1/namespaces/default/deployments/{name}")
    return out


def lab_moves(count: int) -> list[dict[str, Any]]:
    lab = Lab.up(Path(tempfile.mkdtemp(prefix="node-bench-lab-")) / "state", nodes=2,
                 subnets=1, prefix=f"lpn{secrets.token_hex(2)}")
    try:
        rec = lab.create_pod("small", node="lab-1")
        return moves(lab, rec.key, count, iterative=True)
    finally:
        lab.down()


def median(rows: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(r[key] for r in rows if r["ok"])), 3)


def markdown(r: dict[str, Any]) -> list[str]:
    k, c = r["kubelet"], r["criu"]
    phases = {p: statistics.median(row["phases_s"].get(p, 0) for row in k if row["ok"])
              for p in PHASES[:-1]}
    fk, fc = median(k, "freeze_s"), median(c, "freeze_s")
    tk, tc = median(k, "total_s"), median(c, "total_s")
    return [
        f"Measured {r['date']} with `python -m bench.node_bench --write-docs` (root, "
        f"{r['cpus']} CPUs, load {r['load_before']:.1f} before, {r['load_after']:.1f} after). "
        "kubelet: a podserver Deployment pod moved between the two real kubelets of "
        "[node-testenv.md](node-testenv.md) by `plan --cluster kube` + `apply` through the "
        "chart's agents (kubelet checkpoint API, sealed transfer, checkpoint image, CRI "
        "restore, a new pod object, hand-over; keepPodAddress on: the source's network "
        "cut from before its checkpoint, the copy with the source's IP through "
        "livepolicy-ipam); criu: the lab's small pod moved by the "
        "`criu` runtime in the same run (stop-and-copy with a client streaming).",
        "",
        "| runtime | moves | freeze (median) | total (median) |",
        "|---|---|---|---|",
        f"| kubelet (containerd 2.3.7, runc 1.5.3) | {len(k)} | {fk * 1000:.0f} ms | "
        f"{tk * 1000:.0f} ms |",
        f"| criu (lab) | {len(c)} | {fc * 1000:.0f} ms | {tc * 1000:.0f} ms |",
        f"| ratio kubelet / criu | | {fk / fc:.1f}x | {tk / tc:.1f}x |",
        "",
        "Where the kubelet runtime's freeze goes (median seconds): " + ", ".join(
            f"{p} {v:.2f}" for p, v in phases.items()) + ". The kubelet writes a whole "
        "checkpoint archive (rootfs diff included) and containerd restores a new pod "
        "(sandbox, CNI, image unpack) while the source is paused: that is the gap to the "
        "lab, which restores into a waiting network namespace.",
    ]


def write_docs(r: dict[str, Any]) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    start, end = "<!-- node-bench:start -->", "<!-- node-bench:end -->"
    block = "\n".join([start, "", *markdown(r), "", end])
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n## Real nodes: kubelet runtime against criu\n\n" + block + "\n"
    doc.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    r: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
                         "load_before": os.getloadavg()[0]}
    r["kubelet"] = node_moves(args.repeat)
    r["criu"] = lab_moves(args.repeat)
    r["load_after"] = os.getloadavg()[0]
    print("\n".join(markdown(r)))
    if args.write_docs:
        write_docs(r)


if __name__ == "__main__":
    main()
