"""The saved-plan file: canonical JSON with a fingerprint, and its reading back.

Keys are sorted and numbers are integers, so the same plan always serialises to the same
bytes; the fingerprint is the hash of those bytes (minus the fingerprint itself).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from livepolicy import __version__
from livepolicy.core.diagnostics import Diagnostic, DiagnosticError
from livepolicy.planner.model import FORMAT_VERSION, Plan

_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2


def plan_document(plan: Plan) -> dict[str, Any]:
    body = plan.body()
    body["livepolicy_version"] = __version__
    body["fingerprint"] = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
                                         ).hexdigest()
    return body


def dumps(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=_OPTS) + b"\n"


def read_plan(path: Path) -> dict[str, Any]:
    """Load a saved plan and check it is one (format version, fingerprint intact)."""
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise DiagnosticError([Diagnostic(str(path), f"cannot read plan: {exc}", None)]) from exc
    if isinstance(doc, dict) and isinstance(doc.get("format_version"), int) and \
            doc["format_version"] != FORMAT_VERSION and "dependencies" in doc:
        raise DiagnosticError([Diagnostic(
            str(path), f"plan format {doc['format_version']} was saved by another livepolicy "
            f"version (this one reads format {FORMAT_VERSION}): make the plan again",
            "/format_version")])
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION:
        raise DiagnosticError([Diagnostic(str(path), "not a livepolicy plan (format_version "
                                          f"{FORMAT_VERSION} expected)", "/format_version")])
    claimed = doc.pop("fingerprint", None)
    actual = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
    doc["fingerprint"] = claimed
    if claimed != actual:
        raise DiagnosticError([Diagnostic(str(path), "plan file was modified after it was "
                                          "saved (fingerprint mismatch)", "/fingerprint")])
    return doc
