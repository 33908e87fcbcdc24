"""The fleet rules of `check`: a cell's torch build against the GPUs its image will land on.

No engine and no GPU: the torch build a cell resolves to (its version and CUDA variant) is
looked up in builder/data/torch_arch.yaml, the compiled arch lists that
scripts/gen_arch_lists.py reads from the real wheels (or cites, for builds PyPI does not
carry), and each GPU of the cell's `fleet` (builder/matrix.py) needs a kernel image there:

- SASS for its own sm_XY, or SASS of the same major and a lower minor (binary compatibility
  within a major: sm_80 code runs on sm_86 and sm_89);
- else PTX (compute_XY) of an architecture no newer than it, which the driver JIT-compiles at
  first use: a warning (`fleet-ptx-jit`), since start-up then takes minutes;
- else an error (`fleet-arch`), with the first build in the table that covers the fleet.

The driver floor (`fleet-driver`): CUDA's minor version compatibility lets any runtime of a
major run on a driver at least the floor of that major; a fleet whose oldest driver is below
the floor of the torch wheel's CUDA (or the base image's) cannot start the image.
The cuda probe (validate/cuda.py) applies the same arch rule inside the image to what is
really installed, torch and every CUDA extension; a unit test ties the two rules together.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packaging.version import Version

from builder.check.results import Change, Finding, Fix, error
from builder.matrix import Cell, Fleet, FleetGpu, driver_key

ARCH_TABLE = Path(__file__).resolve().parent.parent / "data" / "torch_arch.yaml"
TABLE_NAME = "builder/data/torch_arch.yaml"
INDEX = "https://download.pytorch.org/whl/{cuda}"
_ARCH = re.compile(r"^(sm|compute)_([1-9][0-9]?)([0-9])$")
# What rules.torch_cuda returns: ((major, minor), how); minor None when only the major is known.
CudaFound = tuple[tuple[int, int | None], str]


@dataclass(frozen=True)
class DriverFloor:
    """The oldest driver that runs any CUDA runtime of one major (minor version compatibility)."""

    cuda_major: int
    driver: str


DRIVER_FLOORS = (DriverFloor(13, "580"), DriverFloor(12, "525.60.13"), DriverFloor(11, "450.80.02"))
DRIVER_SOURCE = (
    "NVIDIA CUDA Compatibility, Minor Version Compatibility, Table 1 (CUDA 13.x >= 580, 12.x "
    ">= 525, 11.x >= 450): https://docs.nvidia.com/deploy/cuda-compatibility/"
    "minor-version-compatibility.html; the exact 12.x and 11.x floors (525.60.13, 450.80.02): "
    "CUDA Toolkit Release Notes, minimum required driver for minor version compatibility"
)


@dataclass(frozen=True)
class Build:
    """A torch build of the table: its release, CUDA variant and compiled arch list."""

    torch: Version  # the public release, 2.4.1
    cuda: str  # cu121
    arch: tuple[str, ...]
    measured: bool  # read from the wheel, else cited
    pypi_default: bool  # PyPI's own build of that release (no +cuXYZ needed)
    source: str

    @property
    def label(self) -> str:
        return f"torch {self.torch}+{self.cuda}"

    @property
    def requirement(self) -> str:
        """How a requirement names it: PyPI's default build needs no local label."""
        return f"torch=={self.torch}" if self.pypi_default else f"torch=={self.torch}+{self.cuda}"

    @property
    def cuda_version(self) -> tuple[int, int]:
        digits = self.cuda.removeprefix("cu")
        return int(digits[:-1]), int(digits[-1])

    @property
    def cited(self) -> str:
        how = "measured" if self.measured else "cited, not measured"
        return f"{TABLE_NAME} ({how}): {self.source}"


@functools.cache
def arch_table(path: Path = ARCH_TABLE) -> tuple[Build, ...]:
    """The committed table, read once per process (immutable rows)."""
    rows = yaml.safe_load(path.read_text(encoding="utf-8"))["builds"]
    return tuple(
        Build(
            torch=Version(str(row["torch"])),
            cuda=str(row["cuda"]),
            arch=tuple(row["arch"]),
            measured=bool(row["measured"]),
            pypi_default=bool(row.get("pypi_default")),
            source=" ".join(str(row["source"]).split()),
        )
        for row in rows
    )


def arch_cc(entry: str) -> tuple[str, tuple[int, int]] | None:
    """("sm" or "compute", (major, minor)) of an arch entry; None for sm_90a-style ones."""
    match = _ARCH.match(entry)
    return (match[1], (int(match[2]), int(match[3]))) if match else None


def kernel_for(capability: tuple[int, int], arch: Sequence[str]) -> tuple[str, str | None]:
    """How a GPU of `capability` gets a kernel image from a build of `arch`, and from which
    entry: "sass" (its own), "compatible" (same major, lower minor), "ptx" (JIT) or "none".
    The same rule as validate/cuda.py's `kernel_for` (tests/unit/test_fleet.py ties them)."""
    parsed = [(p, entry) for entry in arch if (p := arch_cc(entry))]
    sass = [(cc, entry) for (kind, cc), entry in parsed if kind == "sm"]
    ptx = [(cc, entry) for (kind, cc), entry in parsed if kind == "compute"]
    exact = [entry for cc, entry in sass if cc == capability]
    if exact:
        return "sass", exact[0]
    same = [(cc, e) for cc, e in sass if cc[0] == capability[0] and cc[1] < capability[1]]
    if same:
        return "compatible", max(same)[1]
    jit = [(cc, entry) for cc, entry in ptx if cc <= capability]
    if jit:
        return "ptx", max(jit)[1]
    return "none", None


def covers(build: Build, gpus: Sequence[FleetGpu]) -> bool:
    return all(kernel_for(g.capability, build.arch)[0] != "none" for g in gpus)


def driver_floor(cuda_major: int) -> DriverFloor | None:
    return next((f for f in DRIVER_FLOORS if f.cuda_major == cuda_major), None)


def driver_ok(build: Build, fleet: Fleet) -> bool:
    floor = driver_floor(build.cuda_version[0])
    return not fleet.driver or floor is None or driver_key(fleet.driver) >= driver_key(floor.driver)


def probe_option(cell: Cell) -> dict[str, Any] | None:
    """The cuda probe's `fleet` option: the GPUs, the oldest driver and the floors."""
    if cell.fleet is None:
        return None
    rules = [
        {"cuda_major": f.cuda_major, "driver": f.driver, "source": DRIVER_SOURCE}
        for f in DRIVER_FLOORS
    ]
    return {**cell.fleet.to_json(), "driver_rules": rules}


# ---------------------------------------------------------------- which build a cell has


def find_build(torch: Version, cuda: str) -> tuple[Build, str] | None:
    """The table's row for torch's release and CUDA variant, and a note when it is another
    patch release of the same minor (a minor keeps its build matrix)."""
    rows = [b for b in arch_table() if b.cuda == cuda]
    public = Version(torch.public)
    exact = next((b for b in rows if b.torch == public), None)
    if exact is not None:
        return exact, ""
    near = [b for b in rows if b.torch.release[:2] == public.release[:2]]
    if near:
        chosen = max(near, key=lambda b: b.torch)
        return chosen, f"; the list of {chosen.label}, the same minor (no row for {public})"
    return None


def cell_build(cell: Cell, torch: Version, found: CudaFound | None) -> tuple[Build, str] | str:
    """The row for a cell's torch, or why there is none ("cpu" for a CPU-only build)."""
    if found is not None and found[0] == (0, 0):
        return "cpu"
    if cell.base.platform != "linux/amd64":
        return f"the table holds Linux x86_64 builds only (the cell is {cell.base.platform})"
    if found is not None and found[0][1] is not None:
        cuda = f"cu{found[0][0]}{found[0][1]}"
    elif not torch.local:  # no label, and its CUDA unknown (or only its major): PyPI's build
        default = next(
            (b for b in arch_table() if b.pypi_default and b.torch == Version(torch.public)), None
        )
        if default is None or (found is not None and default.cuda_version[0] != found[0][0]):
            return f"torch {torch}'s CUDA variant is unknown and {TABLE_NAME} has no PyPI build"
        cuda = default.cuda
    else:
        return f"torch {torch}'s local label names no CUDA variant"
    row = find_build(torch, cuda)
    if row is None:
        return f"{TABLE_NAME} has no row for torch {Version(torch.public)}+{cuda}"
    return row


# ---------------------------------------------------------------- the findings


def fleet_findings(
    cell: Cell, torch: Version | None, found: CudaFound | None, where: str
) -> Iterator[Finding]:
    """fleet-arch, fleet-ptx-jit, fleet-driver, fleet-unknown, fleet-cpu-build."""
    fleet = cell.fleet
    if fleet is None or torch is None:
        return
    build = cell_build(cell, torch, found)
    if build == "cpu":
        if fleet.gpus:
            yield _cpu_build(torch, fleet, where)
        return
    if isinstance(build, str):
        yield _unknown(torch, build, where)
    else:
        yield from _arch(cell, fleet, *build)
        yield from _driver(fleet, f"{build[0].label}'s CUDA runtime", build[0].cuda_version)
    if cell.base.cuda:
        major, minor = (int(p) for p in cell.base.cuda.split(".")[:2])
        yield from _driver(fleet, f"base {cell.base.name}'s CUDA", (major, minor))


def _arch(cell: Cell, fleet: Fleet, build: Build, note: str) -> Iterator[Finding]:
    fixes = _fixes(cell, fleet, build)
    for gpu in fleet.gpus:
        kind, entry = kernel_for(gpu.capability, build.arch)
        if kind == "ptx":
            yield Finding(
                severity="warning",
                code="fleet-ptx-jit",
                package="torch",
                message=f"{gpu.label} ({gpu.sm}) has no SASS in {build.label}: the driver "
                f"JIT-compiles its {entry} PTX at first use, which makes start-up take minutes",
                hint=_fix_hint(cell, fleet, fixes, gpu),
                source=f"{build.cited}{note}; {gpu.name}: {gpu.source}",
                candidates=_candidates(fixes),
            )
        elif kind == "none":
            yield error(
                "fleet-arch",
                "torch",
                f"{gpu.label} with CUDA capability {gpu.sm} is not compatible with "
                f"{build.label}, which supports CUDA capabilities {' '.join(build.arch)}: on "
                "that GPU every kernel fails with 'CUDA error: no kernel image is available "
                f"for execution on the device' (fleet GPU {gpu.name})",
                _fix_hint(cell, fleet, fixes, gpu),
                f"{build.cited}{note}; {gpu.name}: {gpu.source}",
                _candidates(fixes),
            )


def _fixes(cell: Cell, fleet: Fleet, build: Build) -> list[Build]:
    """The builds to offer, best first: the first of the table, from the cell's release on,
    with SASS for every fleet GPU (a driver the fleet runs and a CUDA the base carries, when
    one has them), then PyPI's own first such build when that one is not."""
    whole = [b for b in arch_table() if _sass_for(b, fleet.gpus)]
    later = [b for b in whole if b.torch >= build.torch] or whole
    if not later:
        return []
    best = min(later, key=lambda b: (not driver_ok(b, fleet), not _base_runs(cell, b), b.torch))
    pypi = [b for b in later if b.pypi_default and driver_ok(b, fleet)]
    if best.pypi_default or not pypi:
        return [best]
    return [best, min(pypi, key=lambda b: b.torch)]


def _fix_hint(cell: Cell, fleet: Fleet, builds: Sequence[Build], missing: FleetGpu) -> str:
    """`use torch==X (...)`, the first build named as a requirement check can re-check."""
    if not builds:
        return f"no torch build in {TABLE_NAME} has SASS for {missing.sm}: take it out of the fleet"
    best = builds[0]
    what = ", ".join(sorted({g.sm for g in fleet.gpus}, key=_sm_order))
    hint = f"use {best.requirement} (the first build in {TABLE_NAME} with SASS for {what}"
    if not best.pypi_default:
        hint += f"; from {INDEX.format(cuda=best.cuda)}"
    if not _base_runs(cell, best):
        hint += f"; it needs a base with CUDA {best.cuda_version[0]}.{best.cuda_version[1]}+"
    hint += ")"
    for other in builds[1:]:
        hint += f", or use {other.requirement} (PyPI's own build, {other.cuda})"
    return hint


def _candidates(builds: Sequence[Build]) -> tuple[Fix, ...]:
    return tuple(
        (Change(package="torch", specifier=b.requirement[len("torch") :]),) for b in builds
    )


def _sm_order(sm: str) -> int:
    found = arch_cc(sm)
    return found[1][0] * 10 + found[1][1] if found else 0


def _sass_for(build: Build, gpus: Sequence[FleetGpu]) -> bool:
    return all(kernel_for(g.capability, build.arch)[0] in ("sass", "compatible") for g in gpus)


def _base_runs(cell: Cell, build: Build) -> bool:
    """The base's CUDA can host the build's runtime (same major, minor no older)."""
    if cell.base.cuda is None:
        return True
    major, minor = (int(p) for p in cell.base.cuda.split(".")[:2])
    wanted = build.cuda_version
    return major == wanted[0] and minor >= wanted[1]


def _driver(fleet: Fleet, what: str, cuda: tuple[int, int]) -> Iterator[Finding]:
    floor = driver_floor(cuda[0])
    if not fleet.driver or floor is None or driver_key(fleet.driver) >= driver_key(floor.driver):
        return
    is_torch = what.startswith("torch")
    yield error(
        "fleet-driver",
        "torch" if is_torch else None,
        f"{what} is CUDA {cuda[0]}.{cuda[1]}, which needs NVIDIA driver >= {floor.driver} "
        f"(CUDA {cuda[0]}.x minor version compatibility), but the fleet's oldest driver is "
        f"{fleet.driver}: there the image fails with 'The NVIDIA driver on your system is too "
        "old'"
        + ("" if is_torch else " (and an image that sets NVIDIA_REQUIRE_CUDA does not start)"),
        _driver_hint(fleet, floor, cuda, is_torch),
        DRIVER_SOURCE,
    )


def _driver_hint(fleet: Fleet, floor: DriverFloor, cuda: tuple[int, int], is_torch: bool) -> str:
    """The newest build of the table the fleet's driver runs (with SASS for its GPUs)."""
    raise_it = f"raise fleet.driver once every host runs >= {floor.driver}"
    if not is_torch:
        return f"use a base with CUDA {cuda[0] - 1}.x, or {raise_it}"
    runs = [b for b in arch_table() if driver_ok(b, fleet) and _sass_for(b, fleet.gpus)]
    if not runs:
        return raise_it
    newest = max(runs, key=lambda b: (b.torch, b.pypi_default))
    return (
        f"use {newest.requirement} ({newest.label}: CUDA {newest.cuda_version[0]}.x runs on "
        f"driver {fleet.driver}), or {raise_it}"
    )


def _cpu_build(torch: Version, fleet: Fleet, where: str) -> Finding:
    names = ", ".join(g.name for g in fleet.gpus)
    return Finding(
        severity="warning",
        code="fleet-cpu-build",
        package="torch",
        message=f"torch {torch} is the CPU-only build: the fleet's GPUs ({names}) go unused",
        hint="use a +cuXYZ build of torch (or drop the fleet for a CPU cell)",
        source=f"fleet at {where}",
    )


def _unknown(torch: Version, why: str, where: str) -> Finding:
    return Finding(
        severity="info",
        code="fleet-unknown",
        package="torch",
        message=f"the fleet is not checked against torch {torch} statically: {why}",
        hint="the cuda probe still judges the fleet inside the image; add the build to "
        f"{TABLE_NAME} (scripts/gen_arch_lists.py measures PyPI's, cite the others)",
        source=f"fleet at {where}",
    )
