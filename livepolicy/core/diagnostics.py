"""Located problems: every user-facing error is a Diagnostic, never a traceback.

Validation collects all problems before reporting, so a user fixes a whole file in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Level(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in one input file, pointing at a line, column and JSON pointer."""

    file: str
    message: str
    pointer: str | None = ""  # None: the problem is the file itself
    line: int = 0
    col: int = 0
    level: Level = Level.ERROR
    code: str = ""

    def format(self) -> str:
        where = self.file
        if self.line:
            where = f"{where}:{self.line}:{self.col}"
        code = f"[{self.code}] " if self.code else ""
        at = f" (at {self.pointer or '/'})" if self.pointer is not None else ""
        prefix = "" if self.level is Level.ERROR else f"{self.level.value}: "
        return f"{where}: {prefix}{code}{self.message}{at}"

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "pointer": self.pointer,
            "message": self.message,
            "level": self.level.value,
            "code": self.code,
        }


@dataclass
class DiagnosticError(Exception):
    """Raised by loaders when input is unusable; carries every problem found, not the first."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(d.format() for d in self.diagnostics)


def pointer_escape(token: str | int) -> str:
    """Escape one JSON-pointer token (RFC 6901)."""
    return str(token).replace("~", "~0").replace("/", "~1")


def join_pointer(base: str, *tokens: str | int) -> str:
    return base + "".join("/" + pointer_escape(t) for t in tokens)
