"""What the declared requirements bring: a real resolution for the target Python and platform.

`uv pip compile` resolves the declared requirements as `lock` does (builder.lock's resolver,
for a cell made of them and of the files' `--index-url`, `--extra-index-url` and local
`--find-links`), without hashes; its `# via` notes are the dependency graph. A
resolution is cached like `check`'s, in `<metadata cache>/resolutions/<inputs digest>.json`
(fetched again once older than a day; offline, any age will do, and on a miss uv runs with
its own cache only). A requirement uv cannot take (no wheel for the platform, not on the
index, a build that fails) is dropped and the rest resolved again, each drop said.

The running interpreter's installed packages decide nothing here.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from builder.check.metadata import DEFAULT_MAX_AGE, read_cached
from builder.errors import InputError
from builder.files import write_atomic
from builder.lock import Resolution, inputs_digest, parse_lock, resolve_uv
from builder.matrix import Base, Cell, Indexes
from builder.scan.model import ResolutionInfo
from builder.settings import Settings

MAX_DROPS = 5
_NAME = r"([A-Za-z0-9][A-Za-z0-9._-]*)"
# What uv says about a requirement it cannot take, most specific first.
_CULPRITS = (
    re.compile(rf"Failed to (?:download and )?build `{_NAME}"),
    re.compile(rf"Failed to download `{_NAME}"),
    re.compile(rf"{_NAME} was not found in the package registry"),
    re.compile(rf"you require {_NAME}"),
)
# The index or uv's cache is not there: no requirement is to blame (a URL one may still be,
# when its host cannot be reached).
_UNREACHABLE = re.compile(
    r"not found in the cache|network was disabled|Failed to fetch|failed to lookup address"
    r"|Connection refused|timed out|certificate verify failed|Request failed after"
    r"|Could not resolve host"
)


@dataclass(frozen=True)
class Graph:
    """A resolution as a graph: pinned versions and, for each, what needs it."""

    pins: Mapping[str, str] = field(default_factory=dict)  # canonical name -> version
    parents: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def path(self, roots: Sequence[str], target: str) -> tuple[str, ...] | None:
        """The shortest chain root -> ... -> target along `# via` edges (roots in order)."""
        children: dict[str, list[str]] = {}
        for child, parents in sorted(self.parents.items()):
            for parent in sorted(parents):
                children.setdefault(parent, []).append(child)
        start = [r for r in roots if r in self.pins]
        before: dict[str, str | None] = dict.fromkeys(start)
        queue = deque(start)
        while queue:
            node = queue.popleft()
            if node == target:
                chain = [node]
                while (previous := before[chain[-1]]) is not None:
                    chain.append(previous)
                return tuple(reversed(chain))
            for child in children.get(node, ()):
                if child not in before:
                    before[child] = node
                    queue.append(child)
        return None


def parse_resolution(body: str) -> Graph:
    """uv's (or pip-compile's) output: `name==version` blocks and their `# via` notes."""
    pins, parents = {}, {}
    for block in parse_lock(body):
        pins[block.name] = block.version
        parents[block.name] = _via(block.block)
    return Graph(pins, parents)


def _via(block: str) -> frozenset[str]:
    """The packages that need a block's package (`# via torch`, or `# via` then `#   name`
    lines, or `name==1.0  # via a, b` on the pin's own line); `-r file` and `-c file` entries
    are the requirements files themselves."""
    needed = set()
    first, *rest = block.splitlines() or [""]
    for line in ("#" + first.partition("#")[2] if "#" in first else "", *rest):
        note = line.strip()
        if not note.startswith("#"):
            continue
        note = note.lstrip("#").strip()
        note = note[4:] if note.startswith("via ") else "" if note == "via" else note
        for entry in (e.strip() for e in note.split(",")):
            if entry and not entry.startswith(("-r ", "-c ")) and " " not in entry:
                needed.add(canonicalize_name(entry))
    return frozenset(needed)


@dataclass(frozen=True)
class Resolved:
    info: ResolutionInfo
    graph: Graph
    body: str = ""  # the resolver's output, as `parse_resolution` reads it


class Resolver(Protocol):
    """How the scan learns what declared requirements bring (a fake in tests)."""

    def resolve(
        self,
        requirements: Sequence[str],
        python: str,
        platform: str,
        indexes: Indexes | None = None,
    ) -> Resolved: ...


def scan_cell(
    requirements: Sequence[str], python: str, platform: str, indexes: Indexes | None = None
) -> Cell:
    """The requirements as a cell of their own, for the lock's resolver and its digest."""
    base = Base(name="scan", image="builder-scan", python=python, cuda=None, platform=platform)
    return Cell(
        id="scan",
        base=base,
        pins=(),
        axes=(),
        requirements=tuple(requirements),
        indexes=indexes or Indexes(),
        profiles=(),
        probes=(),
        gpu="none",
        app=None,
        line=0,
    )


Compile = Callable[[Cell, Settings, bool], Resolution]  # (cell, settings, offline)


def uv_compile(cell: Cell, settings: Settings, offline: bool) -> Resolution:
    """`uv pip compile` for the cell's Python and platform, no hashes (what `check` runs)."""
    return resolve_uv(cell, settings, hashes=False, offline=offline)


@dataclass(frozen=True)
class UvResolver:
    """uv on the host, with builder's cache of resolutions."""

    settings: Settings
    offline: bool = False
    max_age: float = DEFAULT_MAX_AGE
    compile: Compile = uv_compile

    def resolve(
        self,
        requirements: Sequence[str],
        python: str,
        platform: str,
        indexes: Indexes | None = None,
    ) -> Resolved:
        if not requirements:
            return Resolved(ResolutionInfo(True, 0, "none", python, platform), Graph())
        cell = scan_cell(requirements, python, platform, indexes)
        path = self.settings.metadata_cache / "resolutions" / f"{inputs_digest(cell, 'uv')}.json"
        cached = _read_cached(path, None if self.offline else self.max_age)
        if cached is not None:
            result, dropped, origin = cached[0], cached[1], "cache"
        else:
            result, dropped = self._resolve(cell)
            origin = "uv"
            if result.ok:
                with contextlib.suppress(InputError):  # an unwritable cache costs a resolution
                    write_atomic(path, _cache_text(result, dropped))
        info = ResolutionInfo(
            ok=result.ok,
            packages=len(parse_lock(result.body)) if result.ok else 0,
            origin=origin,
            python=python,
            platform=platform,
            error=result.error,
            dropped=dropped,
        )
        if not result.ok:
            return Resolved(info, Graph())
        return Resolved(info, parse_resolution(result.body), result.body)

    def _resolve(self, cell: Cell) -> tuple[Resolution, tuple[tuple[str, str], ...]]:
        dropped: list[tuple[str, str]] = []
        while True:
            result = self.compile(cell, self.settings, self.offline)
            culprit = None if result.ok else _culprit(result.error or "", cell.requirements)
            if culprit is None or len(dropped) == MAX_DROPS:
                return result, tuple(dropped)
            line, reason = culprit
            dropped.append((line, reason))
            rest = tuple(r for r in cell.requirements if r != line)
            cell = scan_cell(rest, cell.base.python, cell.base.platform, cell.indexes)


def _culprit(error: str, requirements: Sequence[str]) -> tuple[str, str] | None:
    """The one declared requirement uv's error blames, and the line that says why."""
    by_name: dict[str, str] = {}
    for text in requirements:
        with contextlib.suppress(InvalidRequirement):
            by_name.setdefault(canonicalize_name(Requirement(text).name), text)
    unreachable = _UNREACHABLE.search(error) is not None
    for pattern in _CULPRITS:
        for match in pattern.finditer(error):
            blamed = by_name.get(canonicalize_name(match[1]))
            if blamed is not None and not (unreachable and "@" not in blamed):
                why = next((ln for ln in error.splitlines() if match[0] in ln), match[0])
                return blamed, why.strip()[:300]
    return None


def _cache_text(result: Resolution, dropped: Sequence[tuple[str, str]]) -> str:
    data = {"ok": result.ok, "body": result.body, "error": result.error, "dropped": dropped}
    return json.dumps(data)


def _read_cached(
    path: Path, max_age: float | None
) -> tuple[Resolution, tuple[tuple[str, str], ...]] | None:
    """A cache entry as `UvResolver` writes it, younger than `max_age`; else a miss."""
    data = read_cached(path, max_age)
    if not (
        isinstance(data, dict)
        and data.get("ok") is True
        and isinstance(data.get("body"), str)
        and isinstance(data.get("dropped", []), list)
    ):
        return None
    dropped = tuple(
        (str(d[0]), str(d[1]))
        for d in data.get("dropped", [])
        if isinstance(d, list) and len(d) == 2
    )
    return Resolution(ok=True, body=data["body"], error=None), dropped


def unresolved(python: str, platform: str, why: str) -> Resolved:
    """No resolution: nothing is known to arrive transitively."""
    info = ResolutionInfo(False, 0, "none", python, platform, error=why)
    return Resolved(info, Graph())
