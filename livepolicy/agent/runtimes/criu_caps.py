"""What this node's CRIU, kernel and CPU can do, as the `criu` runtime advertises it.

Detected once at agent start (`CriuTool.detect`) and written to
`<state_dir>/runtime-capabilities.json`; the planner's pair rules compare the CPU model and
features of source and destination, so CPU flags are mapped to the names that
node-feature-discovery labels nodes with. Plain data, kept apart from the runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# /proc/cpuinfo flag -> node-feature-discovery cpuid name (feature.node.kubernetes.io/
# cpu-cpuid.NAME), for the CPU-feature pair rule.
NFD_CPUID = {
    "adx": "ADX", "aes": "AESNI", "avx": "AVX", "avx2": "AVX2", "avx512f": "AVX512F",
    "avx512bw": "AVX512BW", "avx512cd": "AVX512CD", "avx512dq": "AVX512DQ",
    "avx512vl": "AVX512VL", "avx512_vnni": "AVX512VNNI", "avx512_bf16": "AVX512BF16",
    "avx512_fp16": "AVX512FP16", "avx512ifma": "AVX512IFMA", "avx512vbmi": "AVX512VBMI",
    "avx512_vbmi2": "AVX512VBMI2", "avx512_bitalg": "AVX512BITALG",
    "avx512_vpopcntdq": "AVX512VPOPCNTDQ", "avx_vnni": "AVXVNNI", "amx_tile": "AMXTILE",
    "amx_bf16": "AMXBF16", "amx_int8": "AMXINT8", "bmi1": "BMI1", "bmi2": "BMI2",
    "f16c": "F16C", "fma": "FMA3", "gfni": "GFNI", "movbe": "MOVBE", "pclmulqdq": "CLMUL",
    "popcnt": "POPCNT", "rdrand": "RDRAND", "rdseed": "RDSEED", "sha_ni": "SHA",
    "sse4_1": "SSE4", "sse4_2": "SSE42", "ssse3": "SSSE3", "vaes": "VAES",
    "vpclmulqdq": "VPCLMULQDQ", "cx16": "CX16", "lzcnt": "LZCNT", "abm": "LZCNT",
    "erms": "ERMS", "fsrm": "FSRM", "hle": "HLE", "rtm": "RTM", "mpx": "MPX",
    "clwb": "CLWB", "clflushopt": "CLFLUSHOPT", "sgx": "SGX", "waitpkg": "WAITPKG",
}


@dataclass(frozen=True)
class CriuCapabilities:
    criu_path: str
    version: str
    check_ok: bool
    check_output: str
    dirty_tracking: bool  # soft-dirty: pre-dump / --track-mem work
    uffd: bool
    uffd_noncoop: bool  # post-copy (lazy pages) possible
    nftables_lock: bool
    cpu_vendor: str
    cpu_model: str
    cpu_flags: tuple[str, ...]
    cpu_features: tuple[str, ...]  # NFD cpuid names
    kernel: str

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["cpu_flags"] = list(self.cpu_flags)
        out["cpu_features"] = list(self.cpu_features)
        return out


def read_cpu_info(path: Path = Path("/proc/cpuinfo")) -> tuple[str, str, tuple[str, ...]]:
    vendor = model = ""
    flags: set[str] = set()
    try:
        text = path.read_text()
    except OSError:
        return "", "", ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return vendor, model, tuple(sorted(flags))
