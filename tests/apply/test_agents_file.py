"""The agents file of `apply --agents`: every problem located at once, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from livepolicy.apply.agents_file import StaticAgents
from livepolicy.cli.main import cli
from livepolicy.core.diagnostics import DiagnosticError


def test_every_problem_is_located(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    path = tmp_path / "agents.yaml"
    path.write_text(
        f"good:\n  url: http://127.0.0.1:1\n  tokenFile: {token}\n"
        "no-token:\n  url: https://127.0.0.1:2\n"
        f"bad-url:\n  url: ftp://x\n  tokenFile: {token}\n"
        f"plain-with-ca:\n  url: http://127.0.0.1:3\n  tokenFile: {token}\n  caFile: {token}\n"
        f"typo:\n  url: https://127.0.0.1:4\n  tokenfile: {token}\n"
        f"half-mtls:\n  url: https://127.0.0.1:5\n  tokenFile: {token}\n  certFile: {token}\n"
        f"missing-ca:\n  url: https://127.0.0.1:6\n  tokenFile: {token}\n"
        f"  caFile: {tmp_path / 'nope.pem'}\n"
        "scalar: 7\n")
    with pytest.raises(DiagnosticError) as err:
        StaticAgents(path)
    # A missing field points at its entry; a bad value at the value itself.
    got = {(d.pointer, d.line, d.col) for d in err.value.diagnostics}
    assert got == {
        ("/no-token/tokenFile", 4, 1), ("/bad-url/url", 7, 8), ("/plain-with-ca/url", 10, 8),
        ("/typo/tokenfile", 15, 14), ("/typo/tokenFile", 13, 1), ("/half-mtls", 16, 1),
        ("/missing-ca/caFile", 23, 11), ("/scalar", 24, 9)}
    assert all(d.file == str(path) for d in err.value.diagnostics)
    text = str(err.value)
    assert f"{path}:15:14: unknown field 'tokenfile'" in text
    assert "certFile and keyFile go together (at /half-mtls)" in text


def test_valid_file_gives_endpoints(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    path = tmp_path / "agents.json"
    path.write_text(f'{{"n1": {{"url": "https://127.0.0.1:9", "tokenFile": "{token}"}}}}')
    agents = StaticAgents(path)
    ep = agents.endpoint("n1")
    assert (ep.url, ep.token) == ("https://127.0.0.1:9", "s3cret")
    assert ep.ssl_context is not None  # https: the system store unless caFile says otherwise
    with pytest.raises(DiagnosticError, match="no agent is listed for node n2"):
        agents.endpoint("n2")


def test_apply_reports_a_bad_agents_file_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text("n1:\n  url: http://127.0.0.1:1\n")
    result = CliRunner().invoke(cli, ["apply", "--cluster", "examples/cluster.yaml",
                                      "--policies", "examples/policies", "--agents", str(path),
                                      "--state-dir", str(tmp_path / "state"), "--yes"])
    assert result.exit_code == 1, result.output
    assert not (tmp_path / "state").exists()  # refused before any lock or journal
    assert f"{path}:1:1: tokenFile is required (at /n1/tokenFile)" in result.output
    assert "Traceback" not in result.output
