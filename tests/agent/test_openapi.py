"""openapi.yaml documents exactly the routes the server implements, and is served."""

from __future__ import annotations

import functools
import http.client
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML

import livepolicy.agent
from livepolicy.agent.server import ROUTES

from .conftest import Agent

SPEC = Path(livepolicy.agent.__file__).parent / "openapi.yaml"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@functools.cache
def _spec() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(SPEC.read_text())
    return data


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_route_is_documented_and_nothing_else() -> None:
    spec = _spec()
    assert spec["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path, op["operationId"])
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }
    implemented = {(r.method, r.pattern, r.operation) for r in ROUTES}
    assert documented == implemented


def test_every_operation_documents_401_and_path_parameters() -> None:
    spec = _spec()
    for path, item in spec["paths"].items():
        params = {p["$ref"].rsplit("/", 1)[-1] for p in item.get("parameters", []) if "$ref" in p}
        for name in ("mid", "namespace", "name"):
            if "{" + name + "}" in path:
                assert name in params, path
        for method, op in item.items():
            if method in METHODS:
                assert "401" in op["responses"], (method, path)


def test_all_refs_resolve() -> None:
    spec = _spec()
    for ref in _refs(spec):
        node: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert node is not None, ref


def test_spec_is_served(shared_agent: Agent) -> None:
    url = urlsplit(shared_agent.url)
    conn = http.client.HTTPConnection(str(url.hostname), url.port, timeout=5)
    auth = {"Authorization": f"Bearer {shared_agent.token}"}
    conn.request("GET", "/v1/openapi.yaml", headers=auth)
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "application/yaml"
    assert resp.read().decode() == SPEC.read_text()
    conn.close()
