"""Post-copy through the agent API (sim runtime): opt-in, and its earlier commit point.

A post-copy migration is prepared with `memory_transfer: post-copy`; the final checkpoint
freezes only for the state; the destination's restore is the point of no return, recorded
before it starts, so from then on rollback is refused on that agent (the engine rolls
forward), while before it a rollback resumes the source as usual.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from livepolicy.agent import AgentError

from .conftest import Agent, Migration, image_files


def _prepare(m: Migration, transfer: str = "post-copy") -> None:
    m.prepare(transfer)


@pytest.fixture
def lazy_pair(make_agent: Callable[..., Agent]) -> Migration:
    return Migration(make_agent("n1", post_copy=True), make_agent("n2", post_copy=True))


def test_capabilities_say_whether_post_copy_is_offered(make_agent: Callable[..., Agent]
                                                       ) -> None:
    assert make_agent("on", post_copy=True).client.capabilities()["features"]["post_copy"]
    assert not make_agent("off").client.capabilities()["features"]["post_copy"]


def test_prepare_refuses_post_copy_where_not_offered(pair: Migration) -> None:
    pair.create_pod()
    with pytest.raises(AgentError) as err:
        _prepare(pair)
    assert err.value.status == 409 and err.value.code == "post_copy_unavailable"
    with pytest.raises(AgentError) as bad:
        pair.src.client.prepare("m9", role="source", pod=pair.pod, uid=pair.uid,
                                memory_bytes=1, key=pair.key, peer=pair.dst.url,
                                memory_transfer="teleport")
    assert bad.value.status == 400 and "memory_transfer" in bad.value.message


def test_post_copy_moves_the_pod_and_refuses_rollback_after_the_lazy_restore(
        lazy_pair: Migration) -> None:
    m = lazy_pair
    m.create_pod()
    _prepare(m)
    with pytest.raises(AgentError) as err:  # no pre-copy rounds in post-copy
        m.src.client.checkpoint(m.mid, round=0, final=False)
    assert err.value.code == "post_copy"
    final = m.src.client.checkpoint(m.mid, round=0, final=True)
    assert final["frozen"] is True and final["bytes"] == 0  # memory follows after restore
    m.transfer()
    status = m.dst.client.status(m.mid)
    assert status["post_copy"] is True and status["lazy_started"] is False
    m.dst.client.restore(m.mid)
    status = m.dst.client.status(m.mid)
    assert status["lazy_started"] is True
    assert "lazy_started" in [h[0] for h in status["history"]]
    with pytest.raises(AgentError) as refused:
        m.dst.client.rollback(m.mid)
    assert refused.value.status == 409 and refused.value.code == "committed"
    assert m.dst.client.restore(m.mid)["state"] == "running"  # a retry answers the same
    assert m.dst.client.verify(m.mid)["ok"] is True
    m.src.client.commit(m.mid)
    m.dst.client.commit(m.mid)
    assert m.pods(m.src) == [] and [p["state"] for p in m.pods(m.dst)] == ["running"]
    assert image_files(m.src) == [] and image_files(m.dst) == []


def test_post_copy_rollback_before_the_lazy_restore_resumes_the_source(
        lazy_pair: Migration) -> None:
    m = lazy_pair
    m.create_pod()
    _prepare(m)
    m.src.client.checkpoint(m.mid, round=0, final=True)
    m.transfer()
    m.dst.client.rollback(m.mid)
    m.src.client.rollback(m.mid)
    assert [p["state"] for p in m.pods(m.src)] == ["running"] and m.pods(m.dst) == []
    assert image_files(m.src) == [] and image_files(m.dst) == []
