"""Plan benchmark: wall time and peak memory of `livepolicy plan` on synthetic clusters.

Each size runs in a fresh subprocess (so peak RSS is that run's own), on a JSON snapshot
generated once into the cache. The baseline, measured in the same run at 1,000 nodes,
is the naive way: a networkx DiGraph built by running every pair rule on every ordered
node pair. CPU time is user + system time of that subprocess. Usage:
`python -m bench.plan_bench [--sizes 500,1000,5000] [--full 1000,5000] [--repeat 3]
[--write-docs]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("LIVEPOLICY_CACHE", Path.home() / ".cache" / "livepolicy")) / "bench"
ROOT = Path(__file__).resolve().parent.parent
PODS_PER_NODE = 30


def snapshot(nodes: int, variant: str = "lean") -> Path:
    """Generate (once) a JSON snapshot with `nodes` x 30 pods.

    `full` is what `kubectl get -o json` prints (~4.8 KB a pod); `lean` keeps the fields
    livepolicy reads (livepolicy.facts.lean, ~1.4 KB a pod), as a stored snapshot would.
    """
    import orjson

    from bench.synth import generate
    from livepolicy.facts.lean import lean_snapshot

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"cluster-{nodes}x{PODS_PER_NODE}-{variant}-v2.json"
    if not path.exists():
        data = generate(nodes, PODS_PER_NODE, seed=7)
        if variant == "lean":
            data = lean_snapshot(data)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(data))
        tmp.replace(path)
    return path


def _child(mode: str, path: str) -> None:
    """Runs inside the measured subprocess; prints one JSON line of figures."""
    from livepolicy.cli.common import load_facts, load_policies, plan_doc, resolve_now

    t0 = time.perf_counter()
    c0 = _cpu()
    facts = load_facts(path)
    t1 = time.perf_counter()
    ps = load_policies(str(ROOT / "bench" / "policies"))
    out: dict[str, object] = {"nodes": len(facts.nodes), "pods": len(facts.pods),
                              "load_s": round(t1 - t0, 3)}
    if mode == "plan":
        from livepolicy.planner.serialize import dumps

        doc = plan_doc(facts, ps, resolve_now(None, facts))  # as `livepolicy plan` does
        data = dumps(doc)
        t2 = time.perf_counter()
        out.update(plan_s=round(t2 - t1, 3), migrations=len(doc["migrations"]),
                   blocked=len(doc["blocked"]), labels=len(doc["labels"]),
                   classes=doc["graph"]["classes"], plan_bytes=len(data))
    elif mode == "classes":
        from livepolicy.graph.compat import build_graph
        from livepolicy.rules.base import Context

        g = build_graph(Context(facts, ps.settings))
        out.update(graph_s=round(time.perf_counter() - t1, 3), classes=len(g.classes),
                   node_edges=sum(g.out_degree(n) for n in g.class_of))
    else:  # naive all-pairs baseline
        import networkx as nx

        from livepolicy.rules.base import Context
        from livepolicy.rules.registry import node_verdicts, pair_verdicts

        ctx = Context(facts, ps.settings)
        usable = [n for n in facts.nodes if not any(v.blocks for v in node_verdicts(n, ctx))]
        g = nx.DiGraph()
        g.add_nodes_from(n.name for n in facts.nodes)
        for a in usable:
            for b in usable:
                if a is not b and all(v.ok for v in pair_verdicts(a, b, ctx)):
                    g.add_edge(a.name, b.name)
        out.update(graph_s=round(time.perf_counter() - t1, 3), node_edges=g.number_of_edges())
    out["total_s"] = round(time.perf_counter() - t0, 3)
    out["cpu_s"] = round(_cpu() - c0, 3)
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


def _cpu() -> float:
    """User + system CPU of this process."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def measure(mode: str, nodes: int, variant: str = "lean") -> dict[str, object]:
    path = snapshot(nodes, variant)
    proc = subprocess.run([sys.executable, "-m", "bench.plan_bench", "--child", mode, str(path)],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["mode"] = mode
    result["variant"] = variant
    result["snapshot_mib"] = round(path.stat().st_size / 2**20, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="500,1000,5000")
    ap.add_argument("--full", default="1000,5000", help="sizes also run on full snapshots")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size (median kept)")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    rows = []
    runs = [(int(s), "lean") for s in args.sizes.split(",")] + \
        [(int(s), "full") for s in args.full.split(",") if s]
    load_before = os.getloadavg()
    for n, variant in runs:
        # The machine is shared: each size runs `--repeat` times and the median run counts.
        tries = sorted((measure("plan", n, variant) for _ in range(args.repeat)),
                       key=lambda r: float(r["total_s"]))  # type: ignore[arg-type]
        r = tries[len(tries) // 2]
        r["runs"] = [t["total_s"] for t in tries]
        rows.append(r)
        print(f"plan {n:>5} nodes {r['pods']:>7} pods ({variant}, {r['snapshot_mib']} MiB): "
              f"load {r['load_s']}s + plan {r['plan_s']}s = {r['total_s']}s (CPU "
              f"{r['cpu_s']}s; runs {r['runs']}), peak {r['peak_rss_mib']} MiB, "
              f"{r['classes']} classes, {r['migrations']} migrations", flush=True)
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    classes = measure("classes", 1000)
    naive = measure("naive", 1000)
    ratio = float(naive["graph_s"]) / max(float(classes["graph_s"]), 1e-6)  # type: ignore[arg-type]
    print(f"graph at 1000 nodes: classes {classes['graph_s']}s vs naive all-pairs "
          f"{naive['graph_s']}s -> {ratio:.0f}x faster (edges {classes['node_edges']} vs "
          f"{naive['node_edges']})")
    if args.write_docs:
        write_docs(rows, classes, naive, ratio, (load_before[0], load_after[0]))


def write_docs(rows: list[dict[str, object]], classes: dict[str, object],
               naive: dict[str, object], ratio: float, load: tuple[float, float]) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start, end = "<!-- plan-bench:start -->", "<!-- plan-bench:end -->"
    lines = [start, "", f"Measured {time.strftime('%Y-%m-%d')} on this project's 2-core "
             "machine with `python -m bench.plan_bench --write-docs`, shared with other jobs "
             f"(load average {load[0]:.1f} before the runs, {load[1]:.1f} after). Each row is "
             "the median of its runs (all totals in the last column); CPU is user + system "
             "time of the planning process.", "",
             "| nodes | pods | snapshot | load | plan | total (wall) | CPU | peak RSS | "
             "classes | migrations | every run |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        every = ", ".join(f"{t} s" for t in r["runs"])  # type: ignore[attr-defined]
        lines.append(f"| {r['nodes']} | {r['pods']} | {r['variant']} {r['snapshot_mib']} MiB "
                     f"| {r['load_s']} s | {r['plan_s']} s | {r['total_s']} s | {r['cpu_s']} s "
                     f"| {r['peak_rss_mib']} MiB | "
                     f"{r['classes']} | {r['migrations']} | {every} |")
    lines += ["", f"Compatibility graph at 1,000 nodes, same run: class graph "
              f"{classes['graph_s']} s, naive all-pairs networkx {naive['graph_s']} s: "
              f"**{ratio:.0f}x** (both find {classes['node_edges']} / {naive['node_edges']} "
              "node-level edges).", "", end]
    block = "\n".join(lines)
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n## Plan\n\n" + block + "\n"
    doc.write_text(text)


if __name__ == "__main__":
    main()
