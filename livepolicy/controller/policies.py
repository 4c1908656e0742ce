"""Where the controller's policies come from, and what happens when they are wrong.

Two sources, the same contract: `check()` says whether the policy files changed and, if
so, loads them with every problem located (`file:line:col`). A directory (`--policies
DIR`, typically a mounted ConfigMap, whose kubelet updates swap a `..data` symlink) is
fingerprinted by content on each poll. A ConfigMap read through the API
(`--policies-configmap NS/NAME`) is watched; each data key is one policy file, and
diagnostics name the key as the file.

`PolicyState` keeps the last good set: an invalid change is logged, counted and shown
in /readyz, and assessment goes on with the previous policies; it never crashes. Until a
first valid set loads, nothing is assessed (and /readyz fails).
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from livepolicy.core.diagnostics import Diagnostic, DiagnosticError
from livepolicy.policy.load import PolicySet, load_policy_set, policy_files
from livepolicy.rules.registry import template_diagnostics

Loader = Callable[[], PolicySet]


def load_dir(root: Path) -> PolicySet:
    """The policies of a directory, checked as `livepolicy validate` checks them."""
    return load_policy_set(root, checks=(template_diagnostics,))


def dir_fingerprint(root: Path) -> str:
    """A digest of every policy file's name and content (mtimes lie across symlink swaps)."""
    h = hashlib.sha256()
    files, diags = policy_files(root)
    for d in diags:
        h.update(f"diag:{d.file}\0".encode())
    for f in files:
        h.update(str(f.relative_to(root) if f != root else f.name).encode() + b"\0")
        try:
            h.update(f.read_bytes())
        except OSError as exc:
            h.update(f"unreadable:{exc.errno}".encode())
        h.update(b"\0")
    return h.hexdigest()


def load_texts(texts: Mapping[str, str], where: str) -> PolicySet:
    """Load policy files given as {name: text} (ConfigMap keys); diagnostics name the key.

    The policy loader reads directories, so the texts go to a private temporary one whose
    path is then replaced by the key in every diagnostic and document origin.
    """
    if not texts:
        raise DiagnosticError([Diagnostic(where, "holds no policy files (no data keys)",
                                          None)])
    with tempfile.TemporaryDirectory(prefix="livepolicy-policies-") as tmp:
        root = Path(tmp)
        for key, text in texts.items():
            (root / key).write_text(text, encoding="utf-8")
        prefix = f"{root}/"
        try:
            ps = load_dir(root)
        except DiagnosticError as exc:
            raise DiagnosticError([dataclasses.replace(d, file=d.file.removeprefix(prefix))
                                   for d in exc.diagnostics]) from None
    ps.origins = {k: dataclasses.replace(doc, file=doc.file.removeprefix(prefix))
                  for k, doc in ps.origins.items()}
    ps.files = tuple(f.removeprefix(prefix) for f in ps.files)
    ps.root = where
    return ps


class PolicyState:
    """The policies in force, the last load's problems, and counters for the metrics."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.current: PolicySet | None = None
        self.loaded_at = 0.0
        self.fingerprint = ""
        self.problems: list[Diagnostic] = []
        self.errors = 0  # loads that failed
        self.loads = 0  # loads that succeeded
        self._lock = threading.Lock()

    @property
    def valid(self) -> bool:
        return not self.problems

    def offer(self, fingerprint: str, load: Loader) -> bool | None:
        """Load if `fingerprint` is new: True loaded, False invalid (last good kept),
        None unchanged."""
        with self._lock:
            if fingerprint == self.fingerprint:
                return None
            self.fingerprint = fingerprint
        try:
            ps = load()
        except DiagnosticError as exc:
            with self._lock:
                self.problems = list(exc.diagnostics)
                self.errors += 1
            return False
        with self._lock:
            self.current = ps
            self.problems = []
            self.loads += 1
            self.loaded_at = time.time()
        return True


class DirPolicies:
    """`--policies DIR`: polled every `interval` seconds by the controller loop."""

    def __init__(self, root: Path, interval: float = 2.0) -> None:
        self.root = root
        self.interval = interval
        self.state = PolicyState(str(root))
        self._next = 0.0

    def check(self, now: float) -> bool | None:
        if now < self._next:
            return None
        self._next = now + self.interval
        return self.state.offer(dir_fingerprint(self.root), lambda: load_dir(self.root))


class ConfigMapPolicies:
    """`--policies-configmap NS/NAME`: the ConfigMap cached by a reflector (`store`)."""

    def __init__(self, namespace: str, name: str, store: Any) -> None:
        self.namespace = namespace
        self.name = name
        self.store = store
        self.state = PolicyState(f"configmap {namespace}/{name}")

    def check(self, now: float) -> bool | None:
        if not self.store.synced:
            return None
        cm = self.store.get(f"{self.namespace}/{self.name}")
        if cm is None:
            return self.state.offer("absent", self._missing)
        data = {str(k): str(v) for k, v in sorted((cm.get("data") or {}).items())}
        digest = hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()
        return self.state.offer(digest, lambda: load_texts(data, self.state.where))

    def _missing(self) -> PolicySet:
        raise DiagnosticError([Diagnostic(self.state.where, "the ConfigMap does not exist",
                                          None)])
