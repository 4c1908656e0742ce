"""What we know about EC2 instance families: architecture and generation set.

Live migration restores a process on another CPU, so it only works between instance
families that expose the same CPU generation. Families are grouped into *generation sets*
by their generation digit and processor line (c5/m5/r5 share one set; c3/m3 another;
c5 and c3 never mix). The parsing follows AWS's naming scheme
(class letters, generation digit, attribute letters); settings can override it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FAMILY = re.compile(r"^([a-z]+?)(\d+)([a-z\-]*)$")


@dataclass(frozen=True, slots=True)
class FamilyInfo:
    family: str
    generation: int
    processor: str  # intel | amd | graviton
    architecture: str  # amd64 | arm64

    @property
    def generation_set(self) -> str:
        return f"gen{self.generation}-{self.processor}"


def family_of(instance_type: str) -> str:
    """"m5.xlarge" -> "m5"; a bare family passes through."""
    return instance_type.split(".", 1)[0].strip().lower()


def family_info(family: str) -> FamilyInfo | None:
    """Parse a family such as c5, m5a, c6gn, r7iz; None when the name is not an EC2 family."""
    m = _FAMILY.match(family.lower())
    if not m:
        return None
    cls, gen, attrs = m.group(1), int(m.group(2)), m.group(3)
    if "g" in attrs or (cls == "a" and gen == 1):  # a1 was the first Graviton family
        processor, arch = "graviton", "arm64"
    elif "a" in attrs:
        processor, arch = "amd", "amd64"
    else:
        processor, arch = "intel", "amd64"
    return FamilyInfo(family=family.lower(), generation=gen, processor=processor, architecture=arch)


def generation_set(instance_type_or_family: str,
                   overrides: dict[str, str] | None = None) -> str | None:
    """The generation-set name for an instance type or family, or None when unknown."""
    family = family_of(instance_type_or_family)
    if overrides and family in overrides:
        return overrides[family]
    info = family_info(family)
    return info.generation_set if info else None
