"""The curated table `check` applies to every cell: builder/data/known_issues.yaml, plus the
torch tables generated from PyPI's metadata: builder/data/torch_tables.yaml
(scripts/gen_torch_tables.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from builder.profiles import KnownBad, read_known_bad

DATA = Path(__file__).resolve().parent.parent / "data"
KNOWN_ISSUES = DATA / "known_issues.yaml"
TORCH_TABLES = DATA / "torch_tables.yaml"
COMPANIONS = ("torchvision", "torchaudio")


@dataclass(frozen=True, kw_only=True)
class TorchBuild:
    """One torch release of torch_tables.yaml: the CUDA of PyPI's default Linux x86_64 wheel."""

    release: Version
    cuda: str | None  # `12.4`; None: the wheel declares no CUDA
    source: str


@dataclass(frozen=True, kw_only=True)
class KnownIssues:
    """builder/data/known_issues.yaml and builder/data/torch_tables.yaml, read once per run."""

    known_bad: tuple[KnownBad, ...]
    companions: Mapping[str, Mapping[str, str]]  # package -> torch minor -> its minor
    companions_source: str
    torch_cuda: Mapping[str, str]  # torch minor -> CUDA of its newest release's default wheel
    torch_cuda_source: str
    needs_build: Mapping[str, Mapping[str, str]]  # package -> needs, reason, hint, source
    no_wheel: Mapping[str, Mapping[str, str]]  # package -> hint, source
    torch_builds: tuple[TorchBuild, ...] = field(default=())  # every torch release, oldest first

    def torch_build(self, torch: Version) -> TorchBuild | None:
        """The release's row; for a release the table does not have yet, its minor's newest."""
        public = Version(torch.public)
        rows = [b for b in self.torch_builds if b.release.release[:2] == public.release[:2]]
        return next((b for b in rows if b.release == public), rows[-1] if rows else None)


def load_known_issues(path: Path = KNOWN_ISSUES, tables: Path = TORCH_TABLES) -> KnownIssues:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    generated = yaml.safe_load(tables.read_text(encoding="utf-8"))
    about = f"{_shown(tables)} (generated {generated['generated']} by scripts/gen_torch_tables.py"
    builds = _builds(generated["torch_cuda"], _shown(tables))
    return KnownIssues(
        known_bad=read_known_bad(path),
        companions={name: _companions(generated[name]) for name in COMPANIONS},
        companions_source=f"{about} from the Requires-Dist torch of each torchvision and "
        "torchaudio release on PyPI)",
        torch_cuda={f"{b.release.major}.{b.release.minor}": b.cuda for b in builds if b.cuda},
        torch_cuda_source=f"{about} from the Requires-Dist of each torch release on PyPI)",
        torch_builds=builds,
        needs_build={canonicalize_name(k): _text(v) for k, v in data["needs_build"].items()},
        no_wheel={canonicalize_name(k): _text(v) for k, v in data["no_wheel"].items()},
    )


def _shown(path: Path) -> str:
    """`builder/data/torch_tables.yaml` for the shipped file, else the path as given."""
    return f"builder/data/{path.name}" if path.parent == DATA else str(path)


def _builds(rows: Mapping[str, Mapping[str, Any]], where: str) -> tuple[TorchBuild, ...]:
    builds = (
        TorchBuild(
            release=Version(release),
            cuda=row.get("cuda"),
            source=f"{where}: torch {release} Requires-Dist {row.get('declared')} "
            f"({row.get('source')})",
        )
        for release, row in rows.items()
    )
    return tuple(sorted(builds, key=lambda b: b.release))


def _companions(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """torch minor -> the minor of the companion built for it, from each release's torch
    requirement: a pin (`==2.4.1`) names its torch minor; a lower bound alone (`>=2.14.0`,
    torchvision 0.29.1 on) the minor it starts at, unless a pin claims that minor already."""
    pinned: dict[Version, str] = {}
    starts: dict[Version, str] = {}
    for release, row in sorted(rows.items(), key=lambda item: Version(item[0])):
        mine = Version(release)
        try:
            specifier = SpecifierSet(row.get("torch") or "")
        except InvalidSpecifier:
            continue
        for spec in specifier:
            torch = Version(spec.version.removesuffix(".*"))
            key = Version(f"{torch.major}.{torch.minor}")
            if spec.operator in ("==", "==="):
                pinned[key] = f"{mine.major}.{mine.minor}"
            elif spec.operator in (">=", "~="):
                starts.setdefault(key, f"{mine.major}.{mine.minor}")
    merged = {**starts, **pinned}
    return {str(k): merged[k] for k in sorted(merged)}


def _text(row: Mapping[str, Any]) -> dict[str, str]:
    """A YAML row's values as one-line strings (folded scalars keep their line breaks)."""
    return {k: " ".join(str(v).split()) for k, v in row.items()}
