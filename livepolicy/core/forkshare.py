"""Run one share of a CPU-bound job in a forked child while the parent runs the rest.

Converting 150,000 pods or assessing their labels is pure Python, so one process uses
one core. A forked child already has the parsed input and every index in its memory
(copy-on-write), so all that crosses the pipe is its result. That pays only when the
result pickles much faster than it is computed, so callers offer this for large inputs.

Falls back to running the share in the parent when fork is unavailable, only one core
is usable, threads are running (a fork would copy their locks), or the child fails:
the result is the same either way.
"""

from __future__ import annotations

import contextlib
import copyreg
import io
import os
import pickle
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
U = TypeVar("U")

# Pickling reducers for the transfer only (copyreg.dispatch_table stays untouched).
Reducers = dict[type, Callable[[Any], tuple[Any, ...]]]


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    return hasattr(os, "fork") and usable_cores() > 1 and threading.active_count() == 1


def in_child(child: Callable[[], T], parent: Callable[[], U],
             reducers: Reducers | None = None, parallel: bool = True) -> tuple[T, U]:
    """Run `child` in a forked process and `parent` here, at the same time (one after the
    other, child first, when not `parallel` or when forking is not possible)."""
    if not parallel or not can_fork():
        return child(), parent()
    for stream in (sys.stdout, sys.stderr):  # or the child's copy of their buffers leaks
        with contextlib.suppress(ValueError, OSError, AttributeError):
            stream.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compute, send, and leave without running any cleanup
        status = 1
        try:
            os.close(read_fd)
            buf = io.BytesIO()
            pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
            pickler.dispatch_table = {**copyreg.dispatch_table, **(reducers or {})}
            pickler.dump(child())
            with os.fdopen(write_fd, "wb") as out:
                out.write(buf.getbuffer())
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    try:
        mine = parent()
    except BaseException:
        os.close(read_fd)
        os.waitpid(pid, 0)
        raise
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        return child(), mine  # the child failed (e.g. out of memory): do its share here
    theirs: T = pickle.loads(data)
    return theirs, mine
