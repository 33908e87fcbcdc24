"""The platforms a base may name: one table for the matrix, the resolver and `check`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Platform:
    """A Docker platform, the machine its wheels are tagged for, and how uv resolves for it."""

    name: str  # Docker's: linux/amd64
    machine: str  # wheel tags' and `platform.machine()`'s: x86_64
    uv_tag: str  # for `uv pip compile --python-platform`
    glibc_minor: int  # the newest manylinux_2_N a wheel may need to run there


# uv has no manylinux tag for ppc64le and s390x; `check` holds their wheels to glibc 2.28 too.
PLATFORMS: Mapping[str, Platform] = MappingProxyType(
    {
        p.name: p
        for p in (
            Platform("linux/amd64", "x86_64", "x86_64-manylinux_2_28", 28),
            Platform("linux/arm64", "aarch64", "aarch64-manylinux_2_28", 28),
            Platform("linux/arm64/v8", "aarch64", "aarch64-manylinux_2_28", 28),
            Platform("linux/ppc64le", "ppc64le", "powerpc64le-unknown-linux-gnu", 28),
            Platform("linux/s390x", "s390x", "s390x-unknown-linux-gnu", 28),
        )
    }
)
