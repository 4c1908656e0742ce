"""Canonical formatting of policy files that keeps every comment.

Canonical = 2-space indentation, sequences indented under their key, keys in the order the
schema declares them (apiVersion, kind, metadata, spec, then each model's field order).
Comments survive because ruamel's round-trip tree carries them with the keys they follow.
"""

from __future__ import annotations

import io
import types
import typing
from typing import Any

from pydantic import BaseModel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from livepolicy.policy.models import KINDS


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 100
    y.preserve_quotes = True
    return y


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (unwrapping Optional, tuple[...] etc.)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found:
            return found
    if isinstance(annotation, types.UnionType):
        for arg in annotation.__args__:
            found = _model_of(arg)
            if found:
                return found
    return None


def _reorder(node: Any, model: type[BaseModel] | None) -> None:
    if isinstance(node, CommentedSeq):
        for item in node:
            _reorder(item, model)
        return
    if not isinstance(node, CommentedMap) or model is None:
        return
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    order = [k for k in fields if k in node] + [k for k in node if k not in fields]
    for target, key in enumerate(order):
        current = list(node.keys()).index(key)
        if current != target:
            value = node.pop(key)
            node.insert(target, key, value)
    for key, f in fields.items():
        if key in node:
            _reorder(node[key], _model_of(f.annotation))


def format_text(text: str) -> str:
    y = _yaml()
    docs = list(y.load_all(io.StringIO(text)))
    for doc in docs:
        if isinstance(doc, CommentedMap):
            _reorder(doc, KINDS.get(str(doc.get("kind"))))
    out = io.StringIO()
    y.dump_all(docs, out)
    return out.getvalue()
