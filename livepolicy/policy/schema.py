"""JSON Schemas of the policy kinds, checked into schemas/ for editors (yaml-language-server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from livepolicy.policy.models import KINDS, MigrationPolicy, NodeTemplate, Settings

SCHEMA_BASE = "https://livepolicy.io/schemas/v1alpha1/"


def schemas() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind, model in KINDS.items():
        schema = model.model_json_schema(by_alias=True)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"{SCHEMA_BASE}{kind.lower()}.json"
        schema["title"] = kind
        out[f"{kind.lower()}.json"] = schema
    # One schema accepting any kind, for a yaml-language-server modeline on mixed files.
    out["livepolicy.json"] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}livepolicy.json",
        "title": "livepolicy policy document",
        "oneOf": [{"$ref": f"{m.__name__.lower()}.json"}
                  for m in (NodeTemplate, MigrationPolicy, Settings)],
    }
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
