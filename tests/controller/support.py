"""Run a controller in-process against the real apiserver, and poll what it did.

Shared by tests/kube/test_controller_*.py. Every wait polls with a deadline; nothing
sleeps and then asserts.
"""

from __future__ import annotations

import copy
import io
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from livepolicy.controller.controller import Controller, Options
from livepolicy.controller.logs import EventLog
from livepolicy.controller.reconcile import planned_labels
from livepolicy.facts.kube import KubeSource
from livepolicy.kube.client import KubeClient
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import NAMESPACES, PODS
from livepolicy.policy.load import load_policy_set
from tests.conftest import ROOT

T = TypeVar("T")
KEY = "live.cast.ai/migration-enabled"
POLICIES = ROOT / "bench/policies"
LEASE_NS = "livepolicy-system"


class Lines(io.StringIO):
    """A log stream the test can read while the controller writes."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.lines: list[str] = []

    def write(self, s: str) -> int:
        with self._lock:
            self.lines.extend(x for x in s.splitlines() if x)
        return len(s)

    def grep(self, word: str) -> list[str]:
        with self._lock:
            return [x for x in self.lines if word in x]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0,
             every: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            got = probe()
        except (AssertionError, KubeError) as exc:
            got, last = None, exc
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                                 + (f" (last: {last})" if last else ""))
        time.sleep(every)


def ensure_namespace(client: KubeClient, name: str = LEASE_NS) -> None:
    try:
        client.create(NAMESPACES, {"metadata": {"name": name}})
    except KubeError as exc:
        if exc.status != 409:
            raise


def options(**kw: Any) -> Options:
    base = Options(policies_dir=str(POLICIES), namespace=LEASE_NS,
                   lease_name=f"lp-test-{uuid.uuid4().hex[:8]}", lease_duration=4.0,
                   metrics_host="127.0.0.1", metrics_port=0, quiet=0.2, max_delay=2.0)
    return replace(base, **kw)


@contextmanager
def running(kubeconfig: str, opts: Options, client: KubeClient | None = None, *,
            admin: KubeClient | None = None) -> Iterator[tuple[Controller, Lines]]:
    """A started controller on a thread (its own client unless given); stopped after.
    The Lease's namespace is created first, by `admin` (default: the same client)."""
    own = client is None
    cl = client or KubeClient.from_config(kubeconfig)
    ensure_namespace(admin or cl, opts.namespace)
    lines = Lines()
    ctl = Controller(cl, opts, EventLog(lines))
    ctl.start()
    thread = threading.Thread(target=ctl.run, name="controller-test", daemon=True)
    thread.start()
    try:
        yield ctl, lines
    finally:
        ctl.stop()
        thread.join(30)
        assert not thread.is_alive(), "the controller did not stop"
        if own:
            cl.close()


def pending_changes(client: KubeClient, policies: Any = POLICIES) -> list[tuple[str, str]]:
    """The label changes a fresh live read still plans (none: converged)."""
    source = KubeSource(client=client)
    ps = load_policy_set(policies) if isinstance(policies, Path) else policies
    return [(lc.pod, lc.action) for lc in planned_labels(source.read(), ps)]


def labelled(client: KubeClient) -> set[str]:
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            for p in client.list(PODS).items
            if (p["metadata"].get("labels") or {}).get(KEY) == "true"}


def converged(client: KubeClient, policies: Any = POLICIES) -> set[str] | None:
    """The labelled pods once nothing is left to change, else None."""
    if pending_changes(client, policies):
        return None
    return labelled(client) or None


def scrape(ctl: Controller, path: str = "/metrics") -> tuple[int, str]:
    host, port = ctl.server.address
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def seed_synth(client: KubeClient) -> None:
    """The 12-node synthetic cluster `livepolicy label` is tested on, with its info."""
    from bench.synth import generate
    from tests.kube.seed import put_cluster_info, seed

    snap = generate(12, 6, seed=5)
    seed(client, snap["items"])
    info = next(o for o in snap["items"] if o["kind"] == "ClusterInfo")
    put_cluster_info(client, info, name=info["metadata"]["name"])


def fresh_pod(pod: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy of a live pod that the API server will accept as a new object."""
    new = copy.deepcopy(pod)
    meta = new["metadata"]
    for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields",
              "ownerReferences", "generateName"):
        meta.pop(k, None)
    meta["name"] = name
    new.pop("status", None)
    return new


def create_running(client: KubeClient, pod: dict[str, Any], status: dict[str, Any]) -> str:
    """Create a pod and give it a status (there is no kubelet); its `ns/name`."""
    from tests.kube.seed import SEED_MANAGER

    ns = pod["metadata"]["namespace"]
    client.create(PODS, pod, ns, field_manager=SEED_MANAGER)
    client.patch(PODS, pod["metadata"]["name"], {"status": status}, ns, subresource="status",
                 field_manager=SEED_MANAGER)
    return f"{ns}/{pod['metadata']['name']}"


def new_eligible_pod(client: KubeClient, name: str) -> str:
    """A new unlabelled pod shaped like an already labelled one (so eligible too)."""
    ns, src = sorted(labelled(client))[0].split("/")
    template = client.get(PODS, src, ns)
    new = fresh_pod(template, name)
    new["metadata"]["labels"].pop(KEY, None)
    return create_running(client, new, template["status"])
