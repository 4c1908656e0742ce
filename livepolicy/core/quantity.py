"""Parsing of Kubernetes quantities and human durations into plain integers.

Facts are stored as integers (millicores, bytes, milliseconds) so that the planner's
arithmetic is exact and plans are byte-identical across runs.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_BIN = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DEC = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
        "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
        "P": Decimal(10**15), "E": Decimal(10**18)}
_QTY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a Kubernetes resource quantity ("500m", "2Gi", "1.5") into a Decimal."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"not a finite quantity: {value!r}")
        return Decimal(str(value))
    if not isinstance(value, str):  # snapshots are user input: a map or list lands here too
        raise ValueError(f"not a quantity: {value!r}")
    m = _QTY.match(value.strip())
    if not m:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation as exc:  # pragma: no cover - regex already filters
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from exc
    suffix = m.group(2) or ""
    return number * (_BIN[suffix] if suffix in _BIN else _DEC[suffix])


INT64 = 2**63  # Kubernetes keeps quantities in int64; so do plans and their hashes


def _in_range(n: int, value: str | int | float) -> int:
    if not -INT64 <= n < INT64:
        raise ValueError(f"quantity out of range: {value!r}")
    return n


def cpu_millis(value: str | int | float) -> int:
    """CPU quantity in millicores, rounded up like the scheduler does."""
    return _in_range(math.ceil(parse_quantity(value) * 1000), value)


def bytes_of(value: str | int | float) -> int:
    """Memory or storage quantity in bytes, rounded up."""
    return _in_range(math.ceil(parse_quantity(value)), value)


_DUR = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s|d)")


def parse_duration_ms(value: str | int) -> int:
    """Parse "300ms", "1h30m", "2d", "45s" (or a bare number of seconds) into milliseconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int):
        return value * 1000
    text = value.strip()
    if not text:
        raise ValueError("empty duration")
    pos = 0
    total = Decimal(0)
    unit_ms = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    for m in _DUR.finditer(text):
        if m.start() != pos:
            break
        total += Decimal(m.group(1)) * unit_ms[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"not a duration: {value!r} (use e.g. 300ms, 45s, 1h30m, 2d)")
    return int(total)


def format_duration_ms(ms: int) -> str:
    """Short human form used in plans: 850ms, 12.4s, 3m05s, 2h10m."""
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    if ms < 3_600_000:
        minutes, seconds = divmod(round(ms / 1000), 60)
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(round(ms / 60_000), 60)
    return f"{hours}h{minutes:02d}m"


_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*(K|M|G|T)?(i)?(bps|B/s|Bps)$")


def parse_bandwidth(value: str) -> int:
    """Parse "1Gbps", "500Mbps", "100MiB/s", "2GB/s" into bytes per second."""
    m = _RATE.match(value.strip())
    if not m:
        raise ValueError(f"not a bandwidth: {value!r} (use e.g. 1Gbps, 500Mbps, 100MiB/s)")
    number = Decimal(m.group(1))
    prefix = m.group(2) or ""
    base = 1024 if m.group(3) else 1000
    scale = {"": 1, "K": base, "M": base**2, "G": base**3, "T": base**4}[prefix]
    per_second = number * scale
    if m.group(4) == "bps":
        per_second /= 8
    return int(per_second)


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"
