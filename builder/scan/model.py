"""What a scan finds, as frozen records; the JSON report is their serialisation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from packaging.requirements import Requirement


class Reach(str, Enum):
    """How an import is reached when the program runs, strongest first."""

    MODULE = "module"  # at import time of a module reached at import time
    LAZY = "lazy"  # inside a function or method body, or through a module imported there
    OPTIONAL = "optional"  # guarded by a try that catches ImportError
    GUARDED = "guarded"  # under `if TYPE_CHECKING:`, or a version/platform branch not taken

    @property
    def strength(self) -> int:
        return _STRENGTH[self]

    def through(self, other: Reach) -> Reach:
        """The reach of a path: its weakest link (a lazy import of a module that imports x at
        module level reaches x lazily)."""
        return self if self.strength <= other.strength else other


_STRENGTH = {Reach.GUARDED: 0, Reach.OPTIONAL: 1, Reach.LAZY: 2, Reach.MODULE: 3}


def strongest(reaches: Iterable[Reach]) -> Reach:
    return max(reaches, key=lambda reach: reach.strength)


@dataclass(frozen=True)
class Location:
    file: str
    line: int
    reach: Reach  # through the strongest path from the entries


@dataclass(frozen=True)
class ThirdParty:
    name: str  # the import name the mapping matched: top-level, or dotted (`google.protobuf`)
    distributions: tuple[str, ...]  # canonical names; several: ambiguous
    source: str  # "wheel" (a resolved wheel's files), "table" or "name" (both guessed)
    locations: tuple[Location, ...]

    @property
    def reach(self) -> Reach:
        return strongest(loc.reach for loc in self.locations)

    @property
    def guessed(self) -> bool:
        return self.source != "wheel"


@dataclass(frozen=True)
class MissingLocal:
    file: str
    line: int
    module: str
    reason: str
    reach: Reach


@dataclass(frozen=True)
class LocalPackage:
    """A local top-level package or module the scan reached."""

    name: str
    path: str  # relative to the repository
    kind: str  # "package" or "module"
    namespace: bool  # a directory without __init__.py
    files: int  # reached .py files under it


@dataclass(frozen=True)
class GpuSite:
    """A CUDA call evaluated when a module is imported: the module needs a GPU at import."""

    file: str
    line: int
    call: str  # `torch.cuda.current_device()`, `.cuda()`, `device="cuda"`, ...
    context: str  # "module level", "default argument", "class body", "decorator"
    reach: Reach  # the reach of the file it is in


@dataclass(frozen=True)
class SyntaxProblem:
    file: str
    line: int
    message: str


@dataclass(frozen=True)
class Note:
    level: str  # "info" or "warning"
    message: str


@dataclass(frozen=True)
class Declared:
    """A requirement a requirements file declares, and where."""

    requirement: Requirement
    file: str
    line: int


@dataclass(frozen=True)
class Transitive:
    name: str  # the import
    distribution: str
    path: tuple[str, ...]  # declared distribution -> ... -> distribution


@dataclass(frozen=True)
class ResolutionInfo:
    """How the transitive dependencies were found."""

    ok: bool
    packages: int
    origin: str  # "uv", "cache" or "none"
    python: str
    platform: str
    error: str | None = None
    dropped: tuple[tuple[str, str], ...] = ()  # (requirement, why uv could not take it)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "packages": self.packages,
            "origin": self.origin,
            "python": self.python,
            "platform": self.platform,
            "error": self.error,
            "dropped": [{"requirement": r, "reason": why} for r, why in self.dropped],
        }


UNDECLARED_KEYS = {
    Reach.MODULE: "required",
    Reach.LAZY: "lazy",
    Reach.OPTIONAL: "optional",
    Reach.GUARDED: "guarded",
}


@dataclass(frozen=True)
class RequirementsCheck:
    files: tuple[str, ...]
    declared: tuple[Declared, ...]
    resolution: ResolutionInfo
    undeclared: tuple[ThirdParty, ...]
    transitive: tuple[Transitive, ...]
    unused: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        undeclared: dict[str, list[dict[str, Any]]] = {k: [] for k in UNDECLARED_KEYS.values()}
        for item in self.undeclared:
            entry = {
                "import": item.name,
                "distributions": list(item.distributions),
                "guessed": item.guessed,
            }
            undeclared[UNDECLARED_KEYS[item.reach]].append(entry)
        return {
            "files": list(self.files),
            "declared": [str(d.requirement) for d in self.declared],
            "resolution": self.resolution.to_json(),
            "undeclared": undeclared,
            "transitive": [
                {
                    "import": t.name,
                    "distribution": t.distribution,
                    "via": t.path[0],
                    "path": list(t.path),
                }
                for t in self.transitive
            ],
            "unused": list(self.unused),
        }


@dataclass(frozen=True)
class ScanReport:
    path: str
    python: str
    platform: str
    stdlib_from: str
    entries: tuple[str, ...]
    files: tuple[str, ...]
    local: tuple[LocalPackage, ...]
    stdlib: tuple[str, ...]
    third_party: tuple[ThirdParty, ...]
    missing_local: tuple[MissingLocal, ...]
    gpu_at_import: tuple[GpuSite, ...]
    syntax_errors: tuple[SyntaxProblem, ...]
    notes: tuple[Note, ...]
    requirements: RequirementsCheck | None

    @property
    def exit_code(self) -> int:
        check = self.requirements
        undeclared = check is not None and any(t.reach is Reach.MODULE for t in check.undeclared)
        soft = (Reach.OPTIONAL, Reach.GUARDED)
        missing = any(m.reach not in soft for m in self.missing_local)
        return 1 if missing or undeclared else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "python": {
                "target": self.python,
                "platform": self.platform,
                "stdlib_names_from": self.stdlib_from,
            },
            "entries": list(self.entries),
            "files": list(self.files),
            "local": [vars(p).copy() for p in self.local],
            "stdlib": list(self.stdlib),
            "third_party": [_third_party_json(t) for t in self.third_party],
            "missing_local": [vars(m) | {"reach": m.reach.value} for m in self.missing_local],
            "gpu_at_import": [vars(g) | {"reach": g.reach.value} for g in self.gpu_at_import],
            "syntax_errors": [vars(s).copy() for s in self.syntax_errors],
            "notes": [vars(n).copy() for n in self.notes],
            "requirements": self.requirements.to_json() if self.requirements else None,
            "exit_code": self.exit_code,
        }


def _third_party_json(item: ThirdParty) -> dict[str, Any]:
    return {
        "import": item.name,
        "distributions": list(item.distributions),
        "ambiguous": len(item.distributions) > 1,
        "source": item.source,
        "guessed": item.guessed,
        "reach": item.reach.value,
        "locations": [
            {"file": x.file, "line": x.line, "reach": x.reach.value} for x in item.locations
        ],
    }
