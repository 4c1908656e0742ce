"""JSON Schemas of the policy kinds, checked into schemas/ for editors (yaml-language-server)
and CI (check-jsonschema).

Every schema is self-contained: references are `#/$defs/...` inside the same file and
there is no `$id`, so nothing is ever fetched (an `$id` would make a relative `$ref`
resolve against its URL). `livepolicy.json` accepts any kind, with a discriminator on
`kind`: yaml-language-server applies a modeline to every document of a file, so a file
of several documents needs it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from livepolicy.policy.models import KINDS, MigrationPolicy, NodeTemplate, Settings

DRAFT = "https://json-schema.org/draft/2020-12/schema"
COMBINED = "livepolicy.json"

AnyKind = Annotated[NodeTemplate | MigrationPolicy | Settings, Field(discriminator="kind")]


def _tidy(node: Any) -> Any:
    """Descriptions come from docstrings: one line each, as editors show them."""
    if isinstance(node, dict):
        return {k: (re.sub(r"\s*\n\s*", " ", v) if k == "description" and isinstance(v, str)
                    else _tidy(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def schemas() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind, model in KINDS.items():
        schema = _tidy(model.model_json_schema(by_alias=True))
        out[f"{kind.lower()}.json"] = {"$schema": DRAFT, **schema, "title": kind}
    combined = _tidy(TypeAdapter(AnyKind).json_schema(by_alias=True))
    out[COMBINED] = {"$schema": DRAFT, "title": "livepolicy policy document",
                     "description": "Any livepolicy object (NodeTemplate, MigrationPolicy or "
                     "Settings), chosen by its kind.", **combined}
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
