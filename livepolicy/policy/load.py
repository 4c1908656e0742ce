"""Load a directory of policy files into a `PolicySet`, collecting every problem at once.

Each problem becomes a Diagnostic with `file:line:col` and the JSON pointer of the field,
so editors and CI annotations can jump straight to it.

One pass means no problem waits for another to be fixed: a YAML error costs only its own
document (the others of the file are still read), cross-document checks (duplicate names,
references to templates, one Settings) read the documents' raw identities whether or not
they validated, and a document that fails validation is still checked by the later
stages (the template rules) as far as its valid parts allow (`_salvage`).
"""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from livepolicy.core.diagnostics import Diagnostic, DiagnosticError, join_pointer
from livepolicy.core.yamlsrc import Document, load_documents, parse_documents, to_plain
from livepolicy.policy.models import (
    API_VERSION,
    DEFAULT_SETTINGS,
    KINDS,
    NO_SOURCES,
    MigrationPolicy,
    Model,
    NodeTemplate,
    Settings,
    SettingsSpec,
)

Pointer = str

POLICY_SUFFIXES = (".yaml", ".yml", ".json")
_IGNORED = ("README", "LICENSE", "CODEOWNERS")


@dataclass
class PolicySet:
    templates: dict[str, NodeTemplate] = field(default_factory=dict)
    policies: dict[str, MigrationPolicy] = field(default_factory=dict)
    settings: SettingsSpec = DEFAULT_SETTINGS
    origins: dict[tuple[str, str], Document] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    root: str = ""
    # While loading: the fields cut out of objects that failed validation, by object, and
    # the diagnostics later checks made about them (each may be a consequence of the cut).
    pruned: dict[tuple[str, str], frozenset[Pointer]] = field(default_factory=dict)
    suppressed: set[Diagnostic] = field(default_factory=set)

    def origin(self, kind: str, name: str) -> Document:
        return self.origins[(kind, name)]

    def diagnostic(self, kind: str, name: str, pointer: str, message: str,
                   code: str = "") -> Diagnostic:
        d = self.origin(kind, name).diagnostic(pointer, message, code)
        if any(_related(pointer, cut) for cut in self.pruned.get((kind, name), ())):
            self.suppressed.add(d)
        return d

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


# ---------------------------------------------------------------- reading files

_DOC_START = re.compile(r"^---(?=[ \t]|$)")


def read_policy_file(path: Path) -> tuple[list[Document], list[Diagnostic]]:
    """The documents of one file. A YAML error stops only its own document: the file is
    then read again one document at a time (a `---` at column 0 always starts a new
    document), so the other documents are still checked in the same run."""
    try:
        return load_documents(path), []
    except DiagnosticError as exc:
        first = exc.diagnostics
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return [], first
    docs, diags = _read_by_document(text, str(path))
    return docs, diags or first


def _read_by_document(text: str, name: str) -> tuple[list[Document], list[Diagnostic]]:
    lines = text.splitlines(keepends=True)
    starts = [0] + [i for i, ln in enumerate(lines) if i and _DOC_START.match(ln)]
    docs: list[Document] = []
    diags: list[Diagnostic] = []
    for start, end in zip(starts, [*starts[1:], len(lines)], strict=True):
        chunk = "\n" * start + "".join(lines[start:end])  # keeps the file's line numbers
        try:
            docs.extend(parse_documents(chunk, name))
        except DiagnosticError as exc:
            diags.extend(exc.diagnostics)
            docs.extend(_lenient(chunk, name))
    for i, doc in enumerate(docs):
        doc.index = i
    return docs, diags


def _lenient(chunk: str, name: str) -> list[Document]:
    """A document refused only for a duplicate key is still validated (first value)."""
    y = YAML(typ="rt")
    y.allow_duplicate_keys = True
    try:
        trees = list(y.load_all(io.StringIO(chunk)))
    except (MarkedYAMLError, YAMLError, RecursionError):
        return []
    return [Document(name, 0, to_plain(t), t,
                     t.lc.line + 1 if isinstance(t, CommentedMap | CommentedSeq) else 1)
            for t in trees]


# ---------------------------------------------------------------- one document

def _clean_loc(loc: tuple[str | int, ...]) -> list[str | int]:
    """Pydantic's location without its validator and union-branch entries."""
    return [p for p in loc if not (isinstance(p, str) and (
        p.startswith("function") or p in ("int", "str", "[key]")))]


def _pydantic_diags(doc: Document, exc: ValidationError) -> list[Diagnostic]:
    out = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(err["loc"])
        pointer = join_pointer("", *[str(p) for p in loc])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown field {str(loc[-1])!r}"
        elif err["type"] == "missing":
            msg = f"missing required field {str(loc[-1])!r}"
        elif err["type"] == "string_pattern_mismatch":
            msg = f"{err.get('input')!r} does not match {err['ctx']['pattern']}"
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


def _related(a: Pointer, b: Pointer) -> bool:
    """One pointer is the other or inside it."""
    return a == b or not a or not b or a.startswith(b + "/") or b.startswith(a + "/")


def _delete(data: Any, path: Sequence[str | int]) -> None:
    for part in path[:-1]:
        if not isinstance(data, dict) or part not in data:
            return
        data = data[part]
    if isinstance(data, dict):
        data.pop(path[-1], None)


def _salvage(model: type[Model], data: Any, exc: ValidationError, base: Pointer = ""
             ) -> tuple[Model, frozenset[Pointer]] | None:
    """The object without the fields that failed (defaults in their place), so the later
    checks can look at the rest; with the pointers of what was cut. A cut inside a list
    takes the whole list (cutting one item would shift the others' pointers); a missing
    field takes its parent. None when even the document's top level fails."""
    data = copy.deepcopy(data)
    pruned: set[Pointer] = set()
    for _ in range(8):
        cuts = set()
        for err in exc.errors(include_url=False):
            loc = _clean_loc(err["loc"])
            if err["type"] == "missing":
                loc = loc[:-1]
            index = next((i for i, p in enumerate(loc) if isinstance(p, int)), len(loc))
            if not loc[:index]:
                return None
            cuts.add(tuple(loc[:index]))
        for cut in sorted(cuts, key=str):
            _delete(data, cut)
            pruned.add(join_pointer(base, *[str(p) for p in cut]))
        try:
            return model.model_validate(data), frozenset(pruned)
        except ValidationError as again:
            exc = again
    return None


@dataclass
class _Parsed:
    """What one document gave: its object (complete or salvaged) and its identity."""

    doc: Document
    kind: str = ""  # a known kind with the right apiVersion, else ""
    name: str | None = None  # metadata.name when it is a string
    obj: Model | None = None
    pruned: frozenset[Pointer] = frozenset()  # non-empty: obj is salvaged
    complete: bool = False


def _parse_doc(doc: Document) -> tuple[_Parsed, list[Diagnostic]]:
    parsed = _Parsed(doc)
    data: Any = doc.data
    if data is None:
        return parsed, []
    if not isinstance(data, dict):
        return parsed, [doc.diagnostic("", f"a policy document must be a mapping, got "
                                           f"{type(data).__name__}")]
    api = data.get("apiVersion")
    kind = data.get("kind")
    if api is None or kind is None:
        missing = "apiVersion" if api is None else "kind"
        return parsed, [doc.diagnostic("", f"missing required field {missing!r}")]
    if api != API_VERSION:
        return parsed, [doc.diagnostic("/apiVersion", f"unsupported apiVersion {api!r}; "
                                                       f"expected {API_VERSION!r}")]
    model = KINDS.get(str(kind))
    if model is None:
        return parsed, [doc.diagnostic("/kind", f"unknown kind {kind!r}; expected one of "
                                                 f"{', '.join(sorted(KINDS))}")]
    parsed.kind = str(kind)
    meta = data.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("name"), str):
        parsed.name = meta["name"]
    diags = _sources_given(doc) if parsed.kind == "MigrationPolicy" else []
    try:
        parsed.obj, parsed.complete = model.model_validate(data), True
    except ValidationError as exc:
        diags.extend(_pydantic_diags(doc, exc))
        salvaged = _salvage(model, data, exc)
        if salvaged is None and model is Settings and isinstance(data.get("spec"), dict):
            salvaged = _settings_spec(data["spec"])  # the settings matter to other checks
        if salvaged is not None:
            parsed.obj, parsed.pruned = salvaged
    return parsed, diags


def _settings_spec(spec: dict[str, Any]) -> tuple[Model, frozenset[Pointer]] | None:
    try:
        return SettingsSpec.model_validate(spec), frozenset()
    except ValidationError as exc:
        return _salvage(SettingsSpec, spec, exc, "/spec")


def _sources_given(doc: Document) -> list[Diagnostic]:
    """A policy without `sources` would drain every node; read from the raw document, so
    it shows whatever else is wrong with the policy (`sources: {}` is the model's)."""
    spec = doc.data.get("spec")
    if isinstance(spec, dict) and "sources" not in spec:
        return [doc.diagnostic("/spec/sources", NO_SOURCES)]
    return []


# ---------------------------------------------------------------- the set

Check = Callable[["PolicySet"], list[Diagnostic]]


def load_policy_set(root: Path, checks: Sequence[Check] = ()) -> PolicySet:
    """Parse and validate every policy under `root`; raise DiagnosticError with all problems.

    `checks` run on whatever loaded, salvaged objects included (minus what their cut
    fields could explain), so later stages (the template rules) add their problems to
    the same report instead of waiting for the structural ones to be fixed.
    """
    files, diags = policy_files(root)
    parsed: list[_Parsed] = []
    for path in files:
        docs, problems = read_policy_file(path)
        diags.extend(problems)
        for doc in docs:
            item, problems = _parse_doc(doc)
            diags.extend(problems)
            parsed.append(item)
    ps = PolicySet(files=tuple(str(f) for f in files), root=str(root))
    diags.extend(_assemble(ps, parsed))
    diags.extend(_references(parsed))
    if _settings_known(parsed):
        for check in checks:
            diags.extend(d for d in check(ps) if d not in ps.suppressed)
    ps.pruned, ps.suppressed = {}, set()
    if diags:
        raise DiagnosticError(sorted(diags, key=lambda d: (d.file, d.line, d.col)))
    return ps


def _assemble(ps: PolicySet, parsed: Iterable[_Parsed]) -> list[Diagnostic]:
    """Fill `ps` and report duplicates, from every document with a kind and a name, valid
    or not: a broken duplicate is still a duplicate."""
    diags: list[Diagnostic] = []
    settings_seen: Document | None = None
    for item in parsed:
        kind, name, doc = item.kind, item.name, item.doc
        if not kind:
            continue
        if name is not None and (kind, name) in ps.origins:
            first = ps.origins[(kind, name)]
            line, _ = first.locate("/metadata/name")
            diags.append(doc.diagnostic("/metadata/name", f"duplicate {kind} {name!r} (first "
                                                          f"defined at {first.file}:{line})"))
            continue
        if kind == "Settings":
            if settings_seen is not None:
                diags.append(doc.diagnostic("/kind", f"only one Settings object is allowed "
                                                     f"(another is in {settings_seen.file})"))
                continue
            settings_seen = doc
            if isinstance(item.obj, Settings | SettingsSpec):
                ps.settings = item.obj.spec if isinstance(item.obj, Settings) else item.obj
        if name is None:
            continue
        ps.origins[(kind, name)] = doc
        if item.pruned:
            ps.pruned[(kind, name)] = item.pruned
        if isinstance(item.obj, NodeTemplate):
            ps.templates[name] = item.obj
        elif isinstance(item.obj, MigrationPolicy):
            ps.policies[name] = item.obj
    return diags


def _settings_known(parsed: Iterable[_Parsed]) -> bool:
    """False when the Settings' generationSets could not be read: the template rules would
    then judge instance families without the overrides, and report what is not wrong."""
    for item in parsed:
        if item.kind == "Settings":
            spec = item.doc.data.get("spec")
            if not (isinstance(spec, dict) and "generationSets" in spec) or item.complete:
                return True
            return item.obj is not None and not any(
                _related(cut, "/spec/generationSets") for cut in item.pruned)
    return True


def _references(parsed: Sequence[_Parsed]) -> list[Diagnostic]:
    """Every template a policy names must be defined: read from the raw documents, so a
    template that fails validation still counts as defined, and a policy that fails still
    has its references checked."""
    known = sorted({p.name for p in parsed if p.kind == "NodeTemplate" and p.name})
    diags = []
    for item in parsed:
        spec = item.doc.data.get("spec") if item.kind == "MigrationPolicy" else None
        if not isinstance(spec, dict):
            continue
        for section in ("sources", "destinations"):
            refs = spec.get(section, {}).get("templates") if isinstance(
                spec.get(section), dict) else None
            for i, ref in enumerate(refs if isinstance(refs, list) else []):
                if isinstance(ref, str) and ref not in known:
                    diags.append(item.doc.diagnostic(
                        f"/spec/{section}/templates/{i}", f"unknown NodeTemplate {ref!r} "
                        f"(known: {', '.join(known) or 'none defined'})"))
    return diags
