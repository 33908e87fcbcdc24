"""The curated table `check` applies to every cell: builder/data/known_issues.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packaging.utils import canonicalize_name

from builder.profiles import KnownBad, read_known_bad

KNOWN_ISSUES = Path(__file__).resolve().parent.parent / "data" / "known_issues.yaml"


@dataclass(frozen=True, kw_only=True)
class KnownIssues:
    """builder/data/known_issues.yaml, read once per run."""

    known_bad: tuple[KnownBad, ...]
    companions: Mapping[str, Mapping[str, str]]  # package -> torch minor -> its minor
    companions_source: str
    torch_cuda: Mapping[str, str]  # torch minor -> CUDA of PyPI's default Linux wheel
    torch_cuda_source: str
    needs_build: Mapping[str, Mapping[str, str]]  # package -> reason, hint, source
    no_wheel: Mapping[str, Mapping[str, str]]  # package -> hint, source


def load_known_issues(path: Path = KNOWN_ISSUES) -> KnownIssues:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    companions = dict(data["companions"])
    source = " ".join(str(companions.pop("source")).split())
    return KnownIssues(
        known_bad=read_known_bad(path),
        companions={canonicalize_name(k): v for k, v in companions.items()},
        companions_source=source,
        torch_cuda=data["torch_cuda"]["versions"],
        torch_cuda_source=" ".join(str(data["torch_cuda"]["source"]).split()),
        needs_build={canonicalize_name(k): _text(v) for k, v in data["needs_build"].items()},
        no_wheel={canonicalize_name(k): _text(v) for k, v in data["no_wheel"].items()},
    )


def _text(row: Mapping[str, Any]) -> dict[str, str]:
    """A YAML row's values as one-line strings (folded scalars keep their line breaks)."""
    return {k: " ".join(str(v).split()) for k, v in row.items()}
