"""Read YAML/JSON documents while keeping a way back to `line:col` for any JSON pointer.

Policies are small and parsed once with ruamel's round-trip loader, which records
positions. Snapshots can be hundreds of megabytes, so they are parsed with the fastest
loader available (orjson, or ruamel's C-backed safe loader) and only re-parsed with
positions when a problem has to be located.
"""

from __future__ import annotations

import gc
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent

from livepolicy.core.diagnostics import Diagnostic, DiagnosticError


@dataclass
class Document:
    """One YAML document: its plain data plus the round-trip tree used to locate pointers."""

    file: str
    index: int
    data: Any
    tree: Any
    start_line: int = 1

    def locate(self, pointer: str) -> tuple[int, int]:
        return locate(self.tree, pointer, default=(self.start_line, 1))

    def diagnostic(self, pointer: str, message: str, code: str = "") -> Diagnostic:
        line, col = self.locate(pointer)
        return Diagnostic(self.file, message, pointer, line, col, code=code)


def _tokens(pointer: str) -> list[str]:
    if not pointer:
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.lstrip("/").split("/")]


def locate(tree: Any, pointer: str, default: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """Best position for `pointer` in a ruamel round-trip tree: the deepest node that exists."""
    best = default
    node = tree
    for tok in _tokens(pointer):
        if isinstance(node, CommentedMap):
            if tok not in node:
                break
            line, col = node.lc.key(tok)
            best = (line + 1, col + 1)
            child = node[tok]
            if not isinstance(child, CommentedMap | CommentedSeq):
                vline, vcol = node.lc.value(tok)
                best = (vline + 1, vcol + 1)
            node = child
        elif isinstance(node, CommentedSeq):
            try:
                idx = int(tok)
                line, col = node.lc.item(idx)
            except (ValueError, IndexError, KeyError, TypeError):
                break
            best = (line + 1, col + 1)
            node = node[idx]
        else:
            break
    return best


def to_plain(node: Any) -> Any:
    """Turn ruamel's commented containers and scalar subclasses into plain Python data."""
    if isinstance(node, dict):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return str(node)


def _rt_yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def _mark_diag(file: str, exc: MarkedYAMLError | YAMLError) -> Diagnostic:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    msg = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    return Diagnostic(file, msg.strip(), "", line, col)


def load_documents(path: Path, display: str | None = None) -> list[Document]:
    """Parse every document of a (multi-document) YAML or JSON file, with positions."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DiagnosticError([Diagnostic(name, f"cannot read file: {exc}")]) from exc
    return parse_documents(text, name)


def parse_documents(text: str, name: str) -> list[Document]:
    docs: list[Document] = []
    try:
        for i, tree in enumerate(_rt_yaml().load_all(io.StringIO(text))):
            start = 1
            if isinstance(tree, CommentedMap | CommentedSeq):
                start = tree.lc.line + 1
            docs.append(Document(name, i, to_plain(tree), tree, start))
    except (MarkedYAMLError, YAMLError) as exc:
        raise DiagnosticError([_mark_diag(name, exc)]) from exc
    except RecursionError:
        raise DiagnosticError([_too_deep(name)]) from None
    return docs


# The C loader composes nodes by recursing in C: some 20-30k levels overflow its stack
# and kill the process. Text that nests deeper than this goes to the pure-Python loader,
# whose recursion limit ends in a RecursionError, reported like a syntax error.
_C_DEPTH = 2000


def may_nest_deeply(text: str) -> bool:
    """True when the YAML text nests more than _C_DEPTH collections, counted on the C
    parser's event stream (iterative: only composing recurses; ~15 % of a load). Quotes,
    comments and explicit keys cannot hide a level from it, as they could from a scan."""
    depth = 0
    try:
        for event in YAML(typ="safe", pure=False).parse(text):
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > _C_DEPTH:
                    return True
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
    except (MarkedYAMLError, YAMLError):
        pass  # the load stops there too, and reports it; what came before nests less
    return False


def _too_deep(name: str) -> Diagnostic:
    return Diagnostic(name, "invalid YAML: nested too deeply to read", "", 1, 1)


@contextmanager
def gc_paused(keep: bool = False) -> Iterator[None]:
    """Pause the cyclic collector: loading 250k small dicts is 5x faster without it.

    `keep`: what is built meanwhile lives until the command ends (facts, a plan), so it is
    frozen on the way out; else the first collection after would scan all of it (~0.5 s
    at 150k pods) and every full collection after that again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if keep:
            gc.freeze()
        if enabled:
            gc.enable()


def read_bytes(path: Path, display: str | None = None) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DiagnosticError([Diagnostic(display or str(path), f"cannot read file: {exc}")]
                              ) from exc


_BLANK = re.compile(rb"\s*")


def first_byte(raw: bytes) -> bytes:
    """The first non-blank byte: `{` or `[` for JSON (lstrip() would copy the file)."""
    start = _BLANK.match(raw).end()  # type: ignore[union-attr]  # \s* always matches
    return raw[start:start + 1]


def load_fast(path: Path, display: str | None = None, raw: bytes | None = None) -> Any:
    """Parse one big JSON or YAML document quickly, without positions (`raw`: its bytes,
    when already read)."""
    name = display or str(path)
    if raw is None:
        raw = read_bytes(path, name)
    with gc_paused():
        if first_byte(raw) in (b"{", b"["):
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                line = raw[: exc.pos].count(b"\n") + 1
                col = exc.pos - (raw.rfind(b"\n", 0, exc.pos) + 1) + 1
                raise DiagnosticError([Diagnostic(name, f"invalid JSON: {exc.msg}", "", line, col)]
                                      ) from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DiagnosticError([Diagnostic(name, f"file is not UTF-8: {exc}")]) from exc
        yaml = YAML(typ="safe", pure=may_nest_deeply(text))
        try:
            docs = list(yaml.load_all(text))
        except (MarkedYAMLError, YAMLError) as exc:
            raise DiagnosticError([_mark_diag(name, exc)]) from exc
        except RecursionError:
            raise DiagnosticError([_too_deep(name)]) from None
        if len(docs) == 1:
            return docs[0]
        return {"apiVersion": "v1", "kind": "List", "items": [d for d in docs if d is not None]}


LOCATE_MAX_BYTES = 32 * 2**20


def locate_in_file(path: Path, pointers: list[str]) -> list[tuple[int, int]]:
    """Slow path: re-parse once with positions only to place error messages.

    Files above LOCATE_MAX_BYTES are not re-parsed (it would take minutes); their problems
    keep the JSON pointer and line 0.
    """
    try:
        if path.stat().st_size > LOCATE_MAX_BYTES:
            return [(0, 0)] * len(pointers)
        tree = _rt_yaml().load(path.read_text(encoding="utf-8"))
    except Exception:  # the fast parser accepted it; positions are a best effort
        return [(1, 1)] * len(pointers)
    return [locate(tree, p) for p in pointers]
