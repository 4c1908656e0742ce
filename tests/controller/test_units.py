"""The pure parts of the controller: debounce, caches fed by watch events, list diffs,
watch line parsing, backoff and the event log."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from livepolicy.controller.cache import Store, newer, object_key
from livepolicy.controller.debounce import Debouncer
from livepolicy.controller.logs import EventLog
from livepolicy.controller.reflector import Backoff
from livepolicy.kube.client import KubeClient, Target
from livepolicy.kube.errors import KubeError
from livepolicy.kube.resources import NODES, PODS
from livepolicy.kube.watch import Watch, WatchEvent, WatchExpired


def pod(name: str, rv: str, ns: str = "shop", **labels: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": name, "namespace": ns,
                                         "resourceVersion": rv, "labels": labels}}


# -- debounce ----------------------------------------------------------------------------
def test_debounce_waits_for_quiet() -> None:
    d = Debouncer(quiet=0.5, max_delay=5.0)
    assert d.take(0.0) is None and d.due_at() is None
    d.poke(10.0, "Pod")
    d.poke(10.3, "Node")
    assert d.due_at() == pytest.approx(10.8)
    assert d.take(10.7) is None
    assert d.take(10.8) == {"Pod", "Node"}
    assert not d.pending and d.take(20.0) is None


def test_debounce_never_starves_a_busy_cluster() -> None:
    d = Debouncer(quiet=0.5, max_delay=2.0)
    t = 0.0
    while d.take(t) is None:
        d.poke(t)  # a change every 0.25 s, forever
        t += 0.25
        assert t < 3, "the assessment was postponed past max_delay"
    assert t == pytest.approx(2.0)  # the first change was at 0.0


def test_debounce_retry_time() -> None:
    d = Debouncer(quiet=0.5)
    d.poke_at(30.0)
    d.poke_at(40.0)  # a later retry does not postpone an earlier one
    assert d.due_at() == 30.0 and d.take(29.9) is None
    d.poke(29.95, "Pod")
    assert d.take(30.0) == {"retry", "Pod"}


# -- cache -------------------------------------------------------------------------------
def test_store_applies_watch_events() -> None:
    s = Store("Pod")
    assert s.apply(WatchEvent("ADDED", pod("a", "5"))) is True
    assert s.resource_version == "5"
    assert s.apply(WatchEvent("ADDED", pod("b", "6"))) is True
    assert s.apply(WatchEvent("MODIFIED", pod("a", "7", x="1"))) is True
    assert s.get("shop/a") == pod("a", "7", x="1")
    assert s.apply(WatchEvent("BOOKMARK", {"kind": "Pod", "metadata": {
        "resourceVersion": "9"}})) is False
    assert s.resource_version == "9" and len(s) == 2
    assert s.apply(WatchEvent("DELETED", pod("b", "10"))) is True
    assert s.apply(WatchEvent("DELETED", pod("zz", "11"))) is False  # never cached
    assert [o["metadata"]["name"] for o in s.items()] == ["a"]
    assert s.resource_version == "11"


def test_store_skips_an_echo_of_its_own_write() -> None:
    s = Store("Pod")
    s.apply(WatchEvent("ADDED", pod("a", "5")))
    assert s.put(pod("a", "8", l="true")) is True  # the PATCH answer
    assert s.put(pod("a", "7")) is False  # older than what the cache has
    assert s.apply(WatchEvent("MODIFIED", pod("a", "8", l="true"))) is False  # the echo
    assert s.apply(WatchEvent("MODIFIED", pod("a", "9"))) is True


def test_store_replace_diffs() -> None:
    s = Store("Pod")
    assert not s.synced
    d = s.replace([pod("a", "1"), pod("b", "2")], "2")
    assert (d.added, d.modified, d.deleted) == (2, 0, 0) and s.synced
    same = s.replace([pod("b", "2"), pod("a", "1")], "30")
    assert not same.changed and s.resource_version == "30"
    d = s.replace([pod("a", "31"), pod("c", "32")], "32")
    assert (d.added, d.modified, d.deleted) == (1, 1, 1)
    assert [object_key(o) for o in s.items()] == ["shop/a", "shop/c"]


def test_keys_and_versions() -> None:
    assert object_key({"metadata": {"name": "n1"}}) == "n1"
    assert object_key(pod("a", "1", ns="x")) == "x/a"
    assert newer("10", "9") and not newer("9", "10") and not newer("9", "9")
    assert newer("opaque-b", "opaque-a")  # not integers: the candidate wins


# -- watch lines -------------------------------------------------------------------------
def _watch(res: Any = PODS) -> Watch:
    client = KubeClient(None, Target("https://127.0.0.1:1"))  # parse() sends nothing
    return Watch(client, res, "42", timeout_seconds=60)


def test_watch_query() -> None:
    w = _watch()
    assert ("watch", 1) in w.query and ("resourceVersion", "42") in w.query
    assert ("allowWatchBookmarks", "true") in w.query and ("timeoutSeconds", 60) in w.query
    assert w.read_timeout > 60 and w.path == "/api/v1/pods"


def test_watch_parses_events() -> None:
    w = _watch(NODES)
    ev = w.parse(b'{"type":"ADDED","object":{"metadata":{"name":"n1","resourceVersion":"7",'
                 b'"managedFields":[{"manager":"x"}]}}}')
    assert ev.type == "ADDED" and ev.resource_version == "7"
    assert ev.object["kind"] == "Node" and ev.object["apiVersion"] == "v1"
    assert "managedFields" not in ev.object["metadata"]
    bm = w.parse(b'{"type":"BOOKMARK","object":{"kind":"Node","metadata":'
                 b'{"resourceVersion":"12"}}}')
    assert bm.type == "BOOKMARK" and bm.resource_version == "12"


def test_watch_errors() -> None:
    w = _watch()
    with pytest.raises(WatchExpired) as gone:
        w.parse(b'{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired",'
                b'"message":"too old resource version: 2 (80)"}}')
    assert gone.value.gone and "too old resource version" in str(gone.value)
    with pytest.raises(KubeError) as other:
        w.parse(b'{"type":"ERROR","object":{"kind":"Status","code":500,"message":"boom"}}')
    assert not isinstance(other.value, WatchExpired) and other.value.status == 500
    with pytest.raises(KubeError, match="invalid JSON"):
        w.parse(b'{"type":')
    with pytest.raises(KubeError, match="unknown event type"):
        w.parse(b'{"type":"SURPRISE","object":{}}')


def test_closed_watch_yields_nothing() -> None:
    w = _watch()
    w.close()
    assert list(w) == []  # closed before it started: no request is sent


# -- backoff and logs --------------------------------------------------------------------
def test_backoff_doubles_to_a_cap_with_jitter() -> None:
    b = Backoff(first=0.5, cap=4.0, rand=lambda: 0.5)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5
    low = Backoff(first=1.0, rand=lambda: 0.0).next()
    high = Backoff(first=1.0, rand=lambda: 1.0).next()
    assert low == pytest.approx(0.8) and high == pytest.approx(1.2)


def test_event_log_text_and_json() -> None:
    out = io.StringIO()
    EventLog(out)("label", pod="shop/web-1", result="applied", message="two words",
                  conflicts=None)
    line = out.getvalue().strip()
    assert line.endswith(' info label pod=shop/web-1 result=applied message="two words"')
    assert line[:4].isdigit() and line.split()[0].endswith("Z")
    out = io.StringIO()
    EventLog(out, as_json=True)("watch-restart", "warning", kind="Pod", reason="expired")
    doc = json.loads(out.getvalue())
    assert {k: doc[k] for k in ("level", "event", "kind", "reason")} == {
        "level": "warning", "event": "watch-restart", "kind": "Pod", "reason": "expired"}
    assert len(out.getvalue().splitlines()) == 1


def test_store_ignores_the_echo_of_an_expected_label_write() -> None:
    s = Store("Pod")
    s.apply(WatchEvent("ADDED", {**pod("a", "5"), "spec": {"nodeName": "n1"}}))
    s.expect("shop/a", "l", "true")
    echo = {**pod("a", "6", l="true"), "spec": {"nodeName": "n1"}}
    assert s.apply(WatchEvent("MODIFIED", echo)) is False  # before the PATCH answer
    assert s.get("shop/a") == echo  # stored all the same
    assert s.put(echo) is False
    # Without an expected write, or with anything else changed, it is a change.
    assert s.apply(WatchEvent("MODIFIED", {**pod("a", "7", l="true"),
                                           "spec": {"nodeName": "n1"}})) is True
    s.expect("shop/a", "l", None)
    assert s.apply(WatchEvent("MODIFIED", {**pod("a", "8"), "spec": {"nodeName": "n2"}}))


def test_closing_a_watch_whose_stream_already_ended() -> None:
    """urllib3 refuses to shut a socket it no longer has (ValueError): closing a watch
    from another thread at that moment must not raise (it once made SIGTERM exit 1)."""
    from livepolicy.kube.watch import _shutdown

    class Ended:
        def shutdown(self) -> None:
            raise ValueError("Cannot shutdown socket as self._sock_shutdown is not set")

    class Gone:
        def shutdown(self) -> None:
            raise OSError(9, "Bad file descriptor")

    _shutdown(Ended())
    _shutdown(Gone())
    w = _watch()
    w._resp = Ended()
    w.close()
