"""Load a directory of policy files into a `PolicySet`, collecting every problem at once.

Each problem becomes a Diagnostic with `file:line:col` and the JSON pointer of the field,
so editors and CI annotations can jump straight to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import ValidationError

from livepolicy.core.diagnostics import Diagnostic, DiagnosticError, join_pointer
from livepolicy.core.yamlsrc import Document, load_documents
from livepolicy.policy.models import (
    API_VERSION,
    DEFAULT_SETTINGS,
    KINDS,
    MigrationPolicy,
    Model,
    NodeTemplate,
    Settings,
    SettingsSpec,
)

POLICY_SUFFIXES = (".yaml", ".yml", ".json")
_IGNORED = ("README", "LICENSE", "CODEOWNERS")


@dataclass(frozen=True)
class Loaded:
    """A validated object and the document it came from (to locate later problems)."""

    obj: Model
    doc: Document
    pointer: str = ""  # pointer of the object inside its document (always "" today)


@dataclass
class PolicySet:
    templates: dict[str, NodeTemplate] = field(default_factory=dict)
    policies: dict[str, MigrationPolicy] = field(default_factory=dict)
    settings: SettingsSpec = DEFAULT_SETTINGS
    origins: dict[tuple[str, str], Document] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    root: str = ""

    def origin(self, kind: str, name: str) -> Document:
        return self.origins[(kind, name)]

    def diagnostic(self, kind: str, name: str, pointer: str, message: str,
                   code: str = "") -> Diagnostic:
        return self.origin(kind, name).diagnostic(pointer, message, code)

    def ordered_policies(self) -> list[MigrationPolicy]:
        """Highest priority first; ties broken by name so the order is stable."""
        return sorted(self.policies.values(), key=lambda p: (-p.spec.priority, p.metadata.name))


def policy_files(root: Path) -> tuple[list[Path], list[Diagnostic]]:
    """Files under `root` that hold policies, plus a diagnostic for each unknown file."""
    if root.is_file():
        return [root], []
    if not root.is_dir():
        return [], [Diagnostic(str(root), "policy directory does not exist")]
    files: list[Path] = []
    diags: list[Diagnostic] = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.suffix in POLICY_SUFFIXES:
            files.append(p)
        elif not p.name.startswith(_IGNORED):
            diags.append(Diagnostic(str(p), "unknown file in policy directory: expected "
                                    ".yaml, .yml or .json (move it or rename it)", None))
    return files, diags


def _pydantic_diags(doc: Document, exc: ValidationError) -> list[Diagnostic]:
    out = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-",
                                                                                  "function")))]
        pointer = join_pointer("", *[str(p) for p in loc if p not in ("int", "str")])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown field {str(loc[-1])!r}"
        elif err["type"] == "missing":
            msg = f"missing required field {str(loc[-1])!r}"
        elif err["type"] == "literal_error":
            msg = f"{msg} (got {err.get('input')!r})"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        out.append(doc.diagnostic(pointer, msg))
    # A union (count or percent) reports one error per branch; keep the first per pointer.
    seen: set[tuple[str | None, int, int]] = set()
    unique = []
    for d in out:
        if (d.pointer, d.line, d.col) not in seen:
            seen.add((d.pointer, d.line, d.col))
            unique.append(d)
    return unique


def _parse_doc(doc: Document) -> tuple[Model | None, list[Diagnostic]]:
    data: Any = doc.data
    if data is None:
        return None, []
    if not isinstance(data, dict):
        return None, [doc.diagnostic("", f"a policy document must be a mapping, got "
                                         f"{type(data).__name__}")]
    api = data.get("apiVersion")
    kind = data.get("kind")
    if api is None or kind is None:
        missing = "apiVersion" if api is None else "kind"
        return None, [doc.diagnostic("", f"missing required field {missing!r}")]
    if api != API_VERSION:
        return None, [doc.diagnostic("/apiVersion", f"unsupported apiVersion {api!r}; "
                                                     f"expected {API_VERSION!r}")]
    model = KINDS.get(str(kind))
    if model is None:
        return None, [doc.diagnostic("/kind", f"unknown kind {kind!r}; expected one of "
                                               f"{', '.join(sorted(KINDS))}")]
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, _pydantic_diags(doc, exc)


Check = Callable[["PolicySet"], list[Diagnostic]]


def load_policy_set(root: Path, checks: Sequence[Check] = ()) -> PolicySet:
    """Parse and validate every policy under `root`; raise DiagnosticError with all problems.

    `checks` run on whatever loaded cleanly, so later stages (the template rules) add their
    problems to the same report instead of waiting for the structural ones to be fixed.
    """
    files, diags = policy_files(root)
    loaded: list[Loaded] = []
    for path in files:
        try:
            docs = load_documents(path)
        except DiagnosticError as exc:
            diags.extend(exc.diagnostics)
            continue
        for doc in docs:
            obj, problems = _parse_doc(doc)
            diags.extend(problems)
            if obj is not None:
                loaded.append(Loaded(obj, doc))
    ps = PolicySet(files=tuple(str(f) for f in files), root=str(root))
    diags.extend(_assemble(ps, loaded))
    diags.extend(semantic_checks(ps))
    for check in checks:
        diags.extend(check(ps))
    if diags:
        raise DiagnosticError(sorted(diags, key=lambda d: (d.file, d.line, d.col)))
    return ps


def _assemble(ps: PolicySet, loaded: Iterable[Loaded]) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    settings_seen: Document | None = None
    for item in loaded:
        obj = item.obj
        kind, name = obj.kind, obj.metadata.name  # type: ignore[attr-defined]
        if (kind, name) in ps.origins:
            first = ps.origins[(kind, name)]
            line, _ = first.locate("/metadata/name")
            diags.append(item.doc.diagnostic(
                "/metadata/name", f"duplicate {kind} {name!r} (first defined at "
                                  f"{first.file}:{line})"))
            continue
        ps.origins[(kind, name)] = item.doc
        if isinstance(obj, NodeTemplate):
            ps.templates[name] = obj
        elif isinstance(obj, MigrationPolicy):
            ps.policies[name] = obj
        elif isinstance(obj, Settings):
            if settings_seen is not None:
                diags.append(item.doc.diagnostic(
                    "/kind", f"only one Settings object is allowed (another is in "
                             f"{settings_seen.file})"))
                continue
            settings_seen = item.doc
            ps.settings = obj.spec
    return diags


def semantic_checks(ps: PolicySet) -> list[Diagnostic]:
    """Cross-object checks that pydantic cannot do field by field."""
    diags: list[Diagnostic] = []
    for name, pol in sorted(ps.policies.items()):
        for section in ("sources", "destinations"):
            refs = getattr(pol.spec, section).templates
            for i, ref in enumerate(refs):
                if ref not in ps.templates:
                    known = ", ".join(sorted(ps.templates)) or "none defined"
                    diags.append(ps.diagnostic(
                        "MigrationPolicy", name, f"/spec/{section}/templates/{i}",
                        f"unknown NodeTemplate {ref!r} (known: {known})"))
        src = pol.spec.sources
        if not (src.templates or src.names or src.cordoned is not None or src.older_than
                or src.selector.match_labels or src.selector.match_expressions):
            diags.append(ps.diagnostic(
                "MigrationPolicy", name, "/spec/sources",
                "sources selects no node: name templates, a selector, names, cordoned or "
                "olderThan (a policy never drains every node by default)"))
        for i, window in enumerate(pol.spec.windows):
            base = f"/spec/windows/{i}"
            if not croniter.is_valid(window.schedule) or len(window.schedule.split()) != 5:
                diags.append(ps.diagnostic("MigrationPolicy", name, base + "/schedule",
                                           f"invalid cron expression {window.schedule!r} "
                                           "(5 fields: minute hour day month weekday)"))
            try:
                ZoneInfo(window.time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                diags.append(ps.diagnostic("MigrationPolicy", name, base + "/timeZone",
                                           f"unknown time zone {window.time_zone!r} "
                                           "(use an IANA name such as Europe/Berlin)"))
    return diags
