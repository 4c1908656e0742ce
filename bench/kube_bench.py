"""Benchmark: `livepolicy plan --cluster kube` at 5,000 nodes and 20,000 pods against a
real kube-apiserver on loopback, and how much of it is API time.

It starts kube-apiserver + etcd (tests/support/envtest.py; build them with
scripts/setup-kube-testenv.sh), loads a synthetic EKS cluster (bench/synth.py, statuses
included) through the API, then measures, each in a fresh process:

* the command end to end (`livepolicy plan --cluster kube --json`), several runs;
* inside one run: the reads (all lists, concurrently, wall time), the time spent waiting
  for the server summed over requests, JSON parsing, building facts, planning;
* for comparison, `snapshot --format json` and `plan` from that file.

Usage: `python -m bench.kube_bench [--nodes 5000] [--pods-per-node 4] [--runs 3]
[--write-docs]`. `--write-docs` replaces the section between `<!-- kube-bench:start -->`
and `<!-- kube-bench:end -->` in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "bench" / "policies"
START, END = "<!-- kube-bench:start -->", "<!-- kube-bench:end -->"


def _child(kubeconfig: str) -> None:
    """Runs inside a measured subprocess: one `plan --cluster kube`, phase by phase."""
    t0 = time.perf_counter()
    from livepolicy.cli.common import load_policies, resolve_now
    from livepolicy.facts.kube import KubeSource
    from livepolicy.planner.plan import make_plan
    from livepolicy.planner.serialize import dumps, plan_document

    t_import = time.perf_counter()
    source = KubeSource(kubeconfig=kubeconfig)
    items = source.read_objects()
    t_read = time.perf_counter()
    facts = source.facts_of(items)
    t_facts = time.perf_counter()
    ps = load_policies(str(POLICIES))
    plan = make_plan(facts, ps, resolve_now(None, facts))
    data = dumps(plan_document(plan))
    t_plan = time.perf_counter()
    stats = source.client.stats.as_dict()
    print(json.dumps({
        "nodes": len(facts.nodes), "pods": len(facts.pods),
        "import_s": round(t_import - t0, 3), "read_s": round(t_read - t_import, 3),
        "api_wait_sum_s": stats["api_seconds"], "parse_s": stats["parse_seconds"],
        "requests": stats["requests"], "pages": stats["pages"],
        "mib": round(int(stats["bytes"]) / 2**20, 1),
        "facts_s": round(t_facts - t_read, 3), "plan_s": round(t_plan - t_facts, 3),
        "total_s": round(t_plan - t0, 3), "migrations": len(plan.migrations),
        "labels": len(plan.labels), "plan_bytes": len(data),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run(nodes: int, pods_per_node: int, runs: int) -> dict[str, Any]:
    from bench.synth import generate
    from livepolicy.kube.client import KubeClient
    from tests.kube.seed import put_cluster_info, seed
    from tests.support.envtest import KubeTestEnv

    cli = [sys.executable, "-m", "livepolicy"]
    out: dict[str, Any] = {"nodes": nodes, "pods": nodes * pods_per_node,
                           "load_before": round(os.getloadavg()[0], 1)}
    with KubeTestEnv(start_timeout=120) as env, tempfile.TemporaryDirectory() as tmp:
        kc = str(env.kubeconfig_path)
        snap = generate(nodes, pods_per_node, seed=7)
        with KubeClient.from_config(kc) as client:
            t0 = time.perf_counter()
            report = seed(client, snap["items"], workers=24)
            info = next(o for o in snap["items"] if o["kind"] == "ClusterInfo")
            put_cluster_info(client, info, name=info["metadata"]["name"])
            out["seed_s"] = round(time.perf_counter() - t0, 1)
            out["seed_objects"] = report.objects
            out["seed_requests"] = client.stats.requests
        print(f"seeded {report.objects} objects ({client.stats.requests} requests) in "
              f"{out['seed_s']} s", flush=True)
        plan_cmd = [*cli, "plan", "--cluster", "kube", "--kubeconfig", kc, "--policies",
                    str(POLICIES), "--json"]
        e2e = [_timed(plan_cmd) for _ in range(runs)]
        out["e2e_runs_s"] = [round(x, 2) for x in e2e]
        out["e2e_median_s"] = round(statistics.median(e2e), 2)
        phases = []
        for _ in range(runs):
            proc = subprocess.run([sys.executable, "-m", "bench.kube_bench", "--child", kc],
                                  cwd=ROOT, capture_output=True, text=True, check=True)
            phases.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        phases.sort(key=lambda p: float(p["total_s"]))
        out["phases"] = phases[len(phases) // 2]  # the median run
        out["phase_totals_s"] = [p["total_s"] for p in phases]
        snap_file = str(Path(tmp) / "cluster.json")
        out["snapshot_export_s"] = round(_timed(
            [*cli, "snapshot", "--cluster", "kube", "--kubeconfig", kc, "--format", "json",
             "-o", snap_file]), 2)
        out["snapshot_mib"] = round(Path(snap_file).stat().st_size / 2**20, 1)
        out["plan_from_file_s"] = round(statistics.median(
            _timed([*cli, "plan", "--cluster", snap_file, "--policies", str(POLICIES),
                    "--json"]) for _ in range(runs)), 2)
    out["load_after"] = round(os.getloadavg()[0], 1)
    return out


def report_lines(r: dict[str, Any]) -> list[str]:
    p = r["phases"]
    share = 100 * float(p["read_s"]) / float(p["total_s"])
    totals = ", ".join(str(x) for x in r.get("phase_totals_s", [p["total_s"]]))
    return [
        f"Measured {time.strftime('%Y-%m-%d')} on this project's 2-core machine with "
        "`python -m bench.kube_bench --write-docs`: kube-apiserver v1.37.2 + etcd on "
        f"loopback, a synthetic EKS cluster of {r['nodes']:,} nodes and {r['pods']:,} pods "
        f"(bench/synth.py, statuses included; {r['seed_objects']:,} objects loaded through "
        f"the API in {r['seed_s']} s), policies `bench/policies/`.",
        "",
        "| `livepolicy plan --cluster kube --json` | time |",
        "|---|---|",
        f"| end to end, as a user runs it (median of {len(r['e2e_runs_s'])}: "
        f"{', '.join(str(x) for x in r['e2e_runs_s'])} s) | **{r['e2e_median_s']} s** |",
        f"| one run phase by phase (the median of runs totalling {totals} s): | "
        f"{p['total_s']} s |",
        f"| &nbsp;&nbsp;**API time**: every list, 4 kinds at a time ({p['requests']} requests, "
        f"{p['pages']} pages of at most 500 objects, {p['mib']} MiB of JSON) | "
        f"**{p['read_s']} s ({share:.0f}%)** |",
        f"| &nbsp;&nbsp;&nbsp;&nbsp;of which waiting for the server, summed over the "
        f"concurrent requests | {p['api_wait_sum_s']} s |",
        f"| &nbsp;&nbsp;&nbsp;&nbsp;of which parsing the JSON (orjson) | {p['parse_s']} s |",
        f"| &nbsp;&nbsp;building facts (`build_facts`, as for a snapshot) | {p['facts_s']} s |",
        f"| &nbsp;&nbsp;planning and serialising ({p['migrations']} migrations, "
        f"{p['labels']:,} label changes) | {p['plan_s']} s |",
        f"| &nbsp;&nbsp;Python imports | {p['import_s']} s |",
        f"| peak RSS | {p['peak_rss_mib']} MiB |",
        f"| for comparison: `snapshot --format json` ({r['snapshot_mib']} MiB) | "
        f"{r['snapshot_export_s']} s |",
        f"| for comparison: `plan --cluster cluster.json` on that snapshot | "
        f"{r['plan_from_file_s']} s |",
        "",
        "The API server and etcd share the machine's two cores with the client, and other "
        "jobs ran on it too (load average "
        f"{r['load_before']} before the run, {r['load_after']} after): expect a few seconds "
        "of noise between runs.",
    ]


def write_docs(lines: list[str]) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = "\n".join([START, "", *lines, "", END])
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## Plan against a live API server (`--cluster kube`)\n\n" \
            + block + "\n"
    doc.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--pods-per-node", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--child", metavar="KUBECONFIG", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child)
        return
    os.environ.setdefault("PYTHONHASHSEED", "0")
    r = run(args.nodes, args.pods_per_node, args.runs)
    lines = report_lines(r)
    print("\n".join(lines))
    print(json.dumps(r))
    if args.write_docs:
        write_docs(lines)


if __name__ == "__main__":
    main()
