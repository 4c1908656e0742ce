"""How the `criu` runtime finds and runs the CRIU binary, and reads what CRIU leaves behind.

Every CRIU command of the runtime goes through `CriuTool.run`, so they share one timeout,
one way into the pod's network namespace (`nsenter --net`) and one error (`criu_failed`,
never a traceback); `log_tail` picks the lines of a CRIU log worth reporting.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from livepolicy.agent.errors import ApiError
from livepolicy.agent.runtimes import netns as nets
from livepolicy.agent.runtimes.criu_caps import NFD_CPUID, CriuCapabilities, read_cpu_info

CRIU_ENV = "LIVEPOLICY_CRIU"
CACHE_ENV = "LIVEPOLICY_CACHE"
CRIU_TIMEOUT_S = 900.0
LOG_TAIL = 1500


def find_criu(configured: Path | None = None) -> Path:
    """The CRIU to run: the configured path, else `$LIVEPOLICY_CRIU`, else the wrapper that
    scripts/setup-criu.sh installs (`${LIVEPOLICY_CACHE:-~/.cache/livepolicy}/criu/bin/criu`),
    else `criu` on PATH."""
    if configured is not None:
        return configured
    env = os.environ.get(CRIU_ENV)
    if env:
        return Path(env)
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "livepolicy")
    wrapper = cache / "criu" / "bin" / "criu"
    if wrapper.is_file():
        return wrapper
    found = shutil.which("criu")
    if found:
        return Path(found)
    raise ValueError(f"no CRIU found: run scripts/setup-criu.sh, or give --criu PATH or "
                     f"${CRIU_ENV}")


class CriuTool:
    """Runs CRIU (optionally inside a network namespace) and reads what it reports."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def command(self, args: list[str], netns: str | None = None) -> list[str]:
        base = [str(self.path), *args]
        if netns:
            return ["nsenter", f"--net={nets.netns_path(netns)}", *base]
        return base

    def run(self, args: list[str], *, netns: str | None = None,
            timeout: float = CRIU_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(self.command(args, netns), capture_output=True, text=True,
                                  timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ApiError(500, "criu_failed", f"criu {args[0]} timed out after "
                           f"{timeout:.0f}s") from None
        except OSError as exc:
            raise ApiError(500, "criu_failed", f"cannot run {self.path}: {exc}") from None

    def start(self, args: list[str], *, netns: str | None = None) -> subprocess.Popen[str]:
        """`run` without waiting: the CRIU process (its pid is CRIU's own: `nsenter --net`
        and the setup script's wrapper both exec)."""
        try:
            return subprocess.Popen(self.command(args, netns), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    text=True)
        except OSError as exc:
            raise ApiError(500, "criu_failed", f"cannot run {self.path}: {exc}") from None

    def feature(self, name: str) -> bool:
        res = self.run(["check", "--feature", name], timeout=30)
        return res.returncode == 0 and "is supported" in (res.stdout + res.stderr)

    def detect(self) -> CriuCapabilities:
        version = ""
        res = self.run(["--version"], timeout=30)
        for line in res.stdout.splitlines():
            if line.startswith("Version:"):
                version = line.split(":", 1)[1].strip()
        check = self.run(["check"], timeout=60)
        check_out = (check.stdout + check.stderr).strip()
        vendor, model, flags = read_cpu_info()
        features = tuple(sorted({NFD_CPUID[f] for f in flags if f in NFD_CPUID}))
        return CriuCapabilities(
            criu_path=str(self.path), version=version,
            check_ok=check.returncode == 0 and "Looks good" in check_out,
            check_output=check_out[-500:],
            dirty_tracking=self.feature("mem_dirty_track"),
            uffd=self.feature("uffd"), uffd_noncoop=self.feature("uffd-noncoop"),
            nftables_lock=self.feature("network_lock_nftables"),
            cpu_vendor=vendor, cpu_model=model, cpu_flags=flags, cpu_features=features,
            kernel=platform.release())


def log_tail(path: Path, limit: int = LOG_TAIL) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return " | ".join((errors or lines)[-6:])


def pages_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("pages-*.img") if p.is_file())
