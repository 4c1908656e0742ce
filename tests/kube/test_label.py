"""`livepolicy label` against the real kube-apiserver: adds and removes the
migration-enabled label, idempotent, server-side dry run, a field manager, and
resourceVersion conflicts (a pod edited between the read and the write)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bench.synth import generate
from livepolicy.cli.main import cli
from livepolicy.controller.reconcile import reconcile_labels
from livepolicy.facts.kube import KubeSource
from livepolicy.kube.client import Call, KubeClient
from livepolicy.kube.resources import PODS
from livepolicy.policy.load import load_policy_set
from tests.conftest import ROOT
from tests.kube.seed import put_cluster_info, seed
from tests.support.envtest import KubeTestEnv

pytestmark = pytest.mark.kube

POLICIES = "bench/policies"
KEY = "live.cast.ai/migration-enabled"
OPT_OUT = "autoscaling.cast.ai/live-migration-disabled"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture()
def cluster(empty_cluster: KubeClient) -> Iterator[KubeClient]:
    snap = generate(12, 6, seed=5)
    seed(empty_cluster, snap["items"])
    info = next(o for o in snap["items"] if o["kind"] == "ClusterInfo")
    put_cluster_info(empty_cluster, info, name=info["metadata"]["name"])
    yield empty_cluster
    empty_cluster.hooks.clear()


def pods(client: KubeClient) -> dict[str, dict[str, Any]]:
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p
            for p in client.list(PODS).items}


def label_of(pod: dict[str, Any]) -> str | None:
    labels: dict[str, str] = pod["metadata"].get("labels") or {}
    return labels.get(KEY)


def test_label_reconciles_and_is_idempotent(cluster: KubeClient,
                                            kube_env: KubeTestEnv) -> None:
    kc = str(kube_env.kubeconfig_path)
    before = pods(cluster)
    dry = run("label", "--cluster", "kube", "--kubeconfig", kc, "--policies", POLICIES,
              "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    dry_doc = json.loads(dry.output)
    assert dry_doc["dry_run"] is True
    assert dry_doc["changes"] and {c["result"] for c in dry_doc["changes"]} == {"would-apply"}
    after_dry = pods(cluster)
    assert {k: p["metadata"]["resourceVersion"] for k, p in after_dry.items()} == \
        {k: p["metadata"]["resourceVersion"] for k, p in before.items()}  # nothing saved

    r = run("label", "--cluster", "kube", "--kubeconfig", kc, "--policies", POLICIES, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    changes = doc["changes"]
    assert [(c["pod"], c["action"]) for c in changes] == \
        [(c["pod"], c["action"]) for c in dry_doc["changes"]]
    assert {c["result"] for c in changes} == {"applied"}
    assert doc["summary"]["add"] > 0 and doc["summary"]["remove"] > 0
    now = pods(cluster)
    for c in changes:
        assert label_of(now[c["pod"]]) == ("true" if c["action"] == "add" else None)
        if c["action"] == "add":  # the label is owned by the field manager `livepolicy`
            ns, name = c["pod"].split("/")
            fields = cluster.get(PODS, name, ns)["metadata"]["managedFields"]
            mine = [m for m in fields if m["manager"] == "livepolicy"]
            assert mine and mine[0]["operation"] == "Update"
            assert f"f:{KEY}" in json.dumps(mine[0]["fieldsV1"])
    untouched = set(now) - {c["pod"] for c in changes}
    assert all(now[k]["metadata"]["resourceVersion"] == before[k]["metadata"]["resourceVersion"]
               for k in untouched)

    again = run("label", "--cluster", "kube", "--kubeconfig", kc, "--policies", POLICIES)
    assert again.exit_code == 0, again.output
    assert "Labels are up to date: nothing to change." in again.output
    assert {k: p["metadata"]["resourceVersion"] for k, p in pods(cluster).items()} == \
        {k: p["metadata"]["resourceVersion"] for k, p in now.items()}
    plan = run("plan", "--cluster", "kube", "--kubeconfig", kc, "--policies", POLICIES,
               "--json")
    summary = json.loads(plan.output)["summary"]
    assert summary["labels_add"] == summary["labels_remove"] == 0


def _edit_pod(env: KubeTestEnv, pod: str, patch: dict[str, Any]) -> None:
    """Change a pod through a separate connection, as another controller would."""
    ns, name = pod.split("/")
    path = f"/api/v1/namespaces/{ns}/pods/{urllib.parse.quote(name)}"
    status, body = env.request("GET", path)
    assert status == 200, body
    meta = body["metadata"]
    for k, v in patch.items():
        if v is None:
            (meta.get("annotations") or {}).pop(k, None)
            (meta.get("labels") or {}).pop(k, None)
        elif k in (OPT_OUT, KEY):
            meta.setdefault("labels", {})[k] = v
        else:
            meta.setdefault("annotations", {})[k] = v
    status, body = env.request("PUT", path, body)
    assert status == 200, body


class RaceBeforeWrite:
    """Adapter hook: edit pod `target` just before livepolicy's write to it (`times`)."""

    def __init__(self, env: KubeTestEnv, target: str, patch: dict[str, Any],
                 times: int = 1) -> None:
        self.env, self.target, self.patch, self.times = env, target, patch, times
        self.fired = 0

    def __call__(self, call: Call) -> None:
        ns, name = self.target.split("/")
        if call.method == "PATCH" and call.path == PODS.path(ns, name) and \
                self.fired < self.times:
            self.fired += 1
            self._edit()

    def _edit(self) -> None:
        _edit_pod(self.env, self.target, {k: f"{v}-{self.fired}" if k.startswith("race")
                                          else v for k, v in self.patch.items()})


def _planned(client: KubeClient) -> list[tuple[str, str]]:
    src = KubeSource(client=client)
    from livepolicy.planner.plan import make_plan

    facts = src.read()
    ps = load_policy_set(ROOT / POLICIES)
    from livepolicy.cli.common import resolve_now

    return [(lc.pod, lc.action) for lc in make_plan(facts, ps, resolve_now(None, facts)).labels]


def test_conflict_is_reread_and_retried(cluster: KubeClient, kube_env: KubeTestEnv) -> None:
    planned = _planned(cluster)
    target = next(p for p, action in planned if action == "add")
    race = RaceBeforeWrite(kube_env, target, {"race.example/touched": "yes"})
    cluster.hooks.append(race)
    outcomes = reconcile_labels(KubeSource(client=cluster),
                                load_policy_set(ROOT / POLICIES))
    assert race.fired == 1
    by_pod = {o.edit.pod: o for o in outcomes}
    assert by_pod[target].result == "applied"
    assert (by_pod[target].conflicts, by_pod[target].attempts) == (1, 2)
    pod = cluster.get(PODS, *reversed(target.split("/")))
    assert label_of(pod) == "true"
    assert pod["metadata"]["annotations"]["race.example/touched"] == "yes-1"  # kept
    assert all(o.result == "applied" for o in outcomes)


def test_conflict_that_changes_the_verdict(cluster: KubeClient, kube_env: KubeTestEnv) -> None:
    """The concurrent edit opts the pod out: after re-reading, the label is not added."""
    planned = _planned(cluster)
    target = next(p for p, action in planned if action == "add")
    race = RaceBeforeWrite(kube_env, target, {OPT_OUT: "true"})
    cluster.hooks.append(race)
    outcomes = reconcile_labels(KubeSource(client=cluster),
                                load_policy_set(ROOT / POLICIES))
    by_pod = {o.edit.pod: o for o in outcomes}
    assert by_pod[target].result == "not-needed"
    assert "re-evaluated after a conflict" in by_pod[target].message
    assert label_of(cluster.get(PODS, *reversed(target.split("/")))) is None


def test_conflicts_that_never_stop_fail_cleanly(cluster: KubeClient, kube_env: KubeTestEnv
                                                ) -> None:
    planned = _planned(cluster)
    target = next(p for p, action in planned if action == "remove")
    race = RaceBeforeWrite(kube_env, target, {"race.example/touched": "x"}, times=100)
    cluster.hooks.append(race)
    outcomes = reconcile_labels(KubeSource(client=cluster),
                                load_policy_set(ROOT / POLICIES), max_attempts=3)
    failed = [o for o in outcomes if o.result == "failed"]
    assert [o.edit.pod for o in failed] == [target]
    assert failed[0].conflicts == 3 and "kept changing" in failed[0].message
    assert race.fired == 3
    assert label_of(cluster.get(PODS, *reversed(target.split("/")))) == "true"  # untouched
    assert sum(1 for o in outcomes if o.result == "applied") == len(planned) - 1


def test_text_report() -> None:
    from livepolicy.cli.kube_cmds import render_outcomes
    from livepolicy.kube.labels import LabelEdit, LabelOutcome

    outcomes = [
        LabelOutcome(LabelEdit("shop", "web-1", KEY, "true"), "applied", 2, 1),
        LabelOutcome(LabelEdit("shop", "db-0", KEY, None), "applied", 1),
        LabelOutcome(LabelEdit("shop", "web-2", KEY, "true"), "not-needed", 2, 1,
                     "re-evaluated after a conflict: the pod no longer needs this change"),
        LabelOutcome(LabelEdit("shop", "web-3", KEY, "true"), "failed", 5, 5, "kept changing"),
    ]
    lines = [text for _, text in render_outcomes(outcomes, dry_run=False)]
    assert lines[0] == f"  + shop/web-1  {KEY}=true  (after 1 conflict(s))"
    assert lines[1] == f"  - shop/db-0  {KEY}"
    assert lines[2].startswith(f"  = shop/web-2  {KEY}=true: re-evaluated")
    assert lines[3] == f"  ! shop/web-3  {KEY}=true: kept changing"
    assert lines[4] == ("Changed labels: 1 added, 1 removed, 1 failed (7 conflict(s) retried, "
                        "1 dropped after re-reading).")
    dry = [text for _, text in render_outcomes(outcomes[:2], dry_run=True)]
    assert dry[-2].startswith("Would change labels: 1 added, 1 removed, 0 failed")
    assert dry[-1].startswith("Dry run:")
