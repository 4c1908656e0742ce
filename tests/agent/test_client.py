"""Client error mapping: refused, not answering, refusing, and malformed answers."""

from __future__ import annotations

import socket
import threading

import pytest

from livepolicy.agent import AgentClient, AgentClientError, AgentError, AgentUnreachable

from .conftest import Agent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_unreachable() -> None:
    client = AgentClient(f"http://127.0.0.1:{_free_port()}", "t" * 20, timeout=1)
    with pytest.raises(AgentUnreachable):
        client.health()


def test_silent_server_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = AgentClient(f"http://127.0.0.1:{port}", "t" * 20, timeout=0.2)
        with pytest.raises(AgentUnreachable) as err:
            client.status("m1")
        assert isinstance(err.value, AgentClientError)


def test_non_json_answer() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer() -> None:
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 502 Bad Gateway\r\nContent-Length: 5\r\n\r\noops!")
            conn.close()

        t = threading.Thread(target=answer)
        t.start()
        with pytest.raises(AgentError) as err:
            AgentClient(f"http://127.0.0.1:{port}", "t" * 20, timeout=2).health()
        t.join()
        e = err.value
        assert (e.status, e.code, e.message) == (502, "bad_response", "oops!")


def test_agent_error_carries_status_and_code(shared_agent: Agent) -> None:
    with pytest.raises(AgentError) as err:
        shared_agent.client.status("never")
    assert (err.value.status, err.value.code) == (404, "unknown_migration")
    assert "never" in err.value.message
    wrong = AgentClient(shared_agent.url, "wrong-token-123456789")
    with pytest.raises(AgentError) as err:
        wrong.health()
    assert err.value.status == 401


def test_rollback_and_cleanup_of_unknown_migrations_are_no_ops(shared_agent: Agent) -> None:
    c = shared_agent.client
    assert c.rollback("ghost")["phase"] == "unknown"
    assert c.cleanup("ghost") == {"mid": "ghost", "deleted": False}
    with pytest.raises(AgentError):
        c.commit("ghost")


def test_bad_base_url() -> None:
    with pytest.raises(ValueError):
        AgentClient("ftp://x", "t")
