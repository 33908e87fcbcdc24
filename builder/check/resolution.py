"""A cell's versions for `check`: its fresh lock, else a cached uv resolution; a failed one
becomes findings that name the conflict, with the cell's exact pins standing in for versions."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.check.health import DEFAULT_PROBE_TIMEOUT, IndexHealth, Probe
from builder.check.metadata import DEFAULT_MAX_AGE, PYPI, Fetch, read_cached
from builder.check.results import Finding, error
from builder.errors import InputError
from builder.files import write_atomic
from builder.lock import (
    Resolution,
    inputs_digest,
    lock_path,
    parse_lock,
    read_lock,
    resolve_uv,
    stale_reason,
)
from builder.matrix import Cell, Matrix
from builder.settings import Settings

_NO_WHEELS = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?) has no wheels with a matching "
    r"platform tag"
)

Resolver = Callable[[Cell, Settings, bool], Resolution]  # (cell, settings, offline)


def uv_resolver(cell: Cell, settings: Settings, offline: bool) -> Resolution:
    """The real resolution: `uv pip compile` for the cell's Python and platform, no hashes."""
    return resolve_uv(cell, settings, hashes=False, offline=offline)


@dataclass(frozen=True, kw_only=True)
class Options:
    """How `check` runs; everything from the environment comes in `settings`."""

    settings: Settings
    offline: bool = False
    resolver: Resolver = uv_resolver
    fetch: Fetch | None = None  # None: urllib with the CA bundle (ignored when offline)
    probe: Probe | None = None  # None: a HEAD over urllib with the CA bundle (not offline)
    probe_timeout: float = DEFAULT_PROBE_TIMEOUT  # per index, once per run
    max_age: float = DEFAULT_MAX_AGE
    jobs: int = 4

    @property
    def cache_dir(self) -> Path:
        return self.settings.metadata_cache


@dataclass(frozen=True)
class Resolved:
    versions: dict[str, Version]
    resolved: bool
    findings: tuple[Finding, ...] = ()
    origin: str = "uv"


def resolve(
    matrix: Matrix, cell: Cell, options: Options, health: IndexHealth | None = None
) -> Resolved:
    """The cell's versions: from its fresh lock, else from the (cached) resolver. A lock
    edited by hand is an error finding (build and validate refuse it), not a source. With the
    run's `health` table, an index that does not answer is left out of the resolution, and a
    finding says so, instead of every cell waiting on it."""
    if stale_reason(matrix, cell) is None:
        lock = read_lock(lock_path(matrix, cell))
        assert lock is not None
        return Resolved(_versions(lock.text), True, origin="lock")
    result, origin, down = _cached_resolution(cell, options, health)
    where = matrix.where(cell)
    if result is None:
        resolved = Resolved(exact_pins(cell), False)
    elif result.ok:
        resolved = Resolved(_versions(result.body), True, origin=origin)
    else:
        resolved = _unresolved(cell, result.error or "", where)
    left_out = _left_out(cell, down, where, result)
    return replace(resolved, findings=(*_edited_lock(matrix, cell), *left_out, *resolved.findings))


def _left_out(
    cell: Cell, down: dict[str, str], where: str, result: Resolution | None
) -> tuple[Finding, ...]:
    """The finding of a cell resolved without the indexes in `down` (or not at all, when its
    main index is among them: `result` is None)."""
    if not down:
        return ()
    named = ", ".join(f"{url} ({why})" for url, why in down.items())
    if result is None:
        message = (
            f"cannot resolve: the cell's index did not answer: {named}; versions below are "
            "the matrix's own pins"
        )
    else:
        message = (
            f"resolved without {named}: it did not answer, so what it serves (for a per-CUDA "
            "index, torch's CUDA builds) came from the cell's other indexes, and findings about "
            "those packages may be wrong"
            + ("" if result.ok else "; the failure below may come from leaving it out")
        )
    hint = (
        "check the network, the index URL and `indexes.ca_bundle`, then check again "
        "(the run's warning lists every cell this index serves)"
    )
    return (error("index-unreachable", None, message, hint, where),)


def _edited_lock(matrix: Matrix, cell: Cell) -> tuple[Finding, ...]:
    path = lock_path(matrix, cell)
    lock = read_lock(path)
    if lock is None or lock.inputs_sha256 is None or not lock.edited:
        return ()
    finding = error(
        "lock-edited",
        None,
        f"{path} was edited by hand: its body does not match the body-sha256 in its header "
        "(these findings are for a fresh resolution instead)",
        f"run `builder lock --cell {cell.id}`; build and validate refuse this lock",
        str(path),
    )
    return (finding,)


def _versions(body: str) -> dict[str, Version]:
    out = {}
    for locked in parse_lock(body):
        try:
            out[locked.name] = Version(locked.version)
        except InvalidVersion:
            continue  # a direct URL or odd pin: nothing version-based to check
    return out


def _cached_resolution(
    cell: Cell, options: Options, health: IndexHealth | None = None
) -> tuple[Resolution | None, str, dict[str, str]]:
    """(the resolution, where it came from, the indexes left out because they did not
    answer). Resolutions are cached by the lock's inputs digest, so one without an index is
    cached as that of the cell without it; offline, any age will do. A cached one needs no
    probe; the resolution is None when the cell's main index does not answer."""
    max_age = None if options.offline else options.max_age
    cached = _read_cached(_cache_path(cell, options), max_age)
    if cached is not None:
        return cached, "cache", {}
    down = health.down(index_urls(cell)) if health is not None else {}
    if (cell.indexes.index_url or PYPI) in down:
        return None, "pins", down
    if down:
        cell = without_indexes(cell, down)
        cached = _read_cached(_cache_path(cell, options), max_age)
        if cached is not None:
            return cached, "cache", down
    result = options.resolver(cell, options.settings, options.offline)
    if result.ok or _genuine_conflict(result.error or ""):  # never a network or cache miss
        with contextlib.suppress(InputError):  # an unwritable cache costs a resolution later
            write_atomic(
                _cache_path(cell, options),
                json.dumps({"ok": result.ok, "body": result.body, "error": result.error}),
            )
    return result, "uv", down


def _cache_path(cell: Cell, options: Options) -> Path:
    return options.cache_dir / "resolutions" / f"{inputs_digest(cell, 'uv')}.json"


def index_urls(cell: Cell) -> tuple[str, ...]:
    """The cell's indexes in the order uv asks them: extra indexes, then the main one."""
    return (*cell.indexes.extra_index_urls, cell.indexes.index_url or PYPI)


def unreachable_warnings(cells: Sequence[Cell], health: IndexHealth | None) -> list[str]:
    """One warning per index the run found down, naming the cells it serves."""
    down = health.unreachable() if health is not None else {}
    lines = []
    for url, why in down.items():
        served = [c.id for c in cells if url in index_urls(c)]
        lines.append(
            f"index {url} did not answer ({why}), so this run did without it; it serves "
            f"{len(served)} cell(s), and those resolved without it say so:"
            + "".join(f"\n  {cell_id}" for cell_id in served)
        )
    return lines


def without_indexes(cell: Cell, urls: Container[str]) -> Cell:
    """The cell with those of its extra indexes left out."""
    extra = tuple(u for u in cell.indexes.extra_index_urls if u not in urls)
    return replace(cell, indexes=replace(cell.indexes, extra_index_urls=extra))


def _read_cached(path: Path, max_age: float | None) -> Resolution | None:
    """A cache entry as `_cached_resolution` writes it, younger than `max_age`; else a miss."""
    data = read_cached(path, max_age)
    valid = (
        isinstance(data, dict)
        and isinstance(data.get("ok"), bool)
        and isinstance(data.get("body"), str)
        and isinstance(data.get("error"), (str, type(None)))
    )
    return Resolution(ok=data["ok"], body=data["body"], error=data["error"]) if valid else None


def exact_pins(cell: Cell) -> dict[str, Version]:
    """The `name==version` lines among the cell's requirements and pins."""
    out: dict[str, Version] = {}
    for line in cell.requirement_lines():
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
            out[canonicalize_name(req.name)] = Version(specs[0].version)
    return out


_UNREACHABLE = re.compile(
    r"Failed to fetch|failed to lookup address|Connection refused|timed out|"
    r"certificate verify failed|Request failed after"
)
# uv's two wordings of an offline cache miss
_OFFLINE_MISS = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:==\S+)? "
    r"(?:was not found in the cache|needs to be downloaded from a registry)"
)


def _genuine_conflict(explanation: str) -> bool:
    """A failure whose cause is in the inputs, so the same inputs fail the same way."""
    return "unsatisfiable" in explanation and not (
        _UNREACHABLE.search(explanation) or _OFFLINE_MISS.search(explanation)
    )


def _unresolved(cell: Cell, explanation: str, where: str) -> Resolved:
    """A failed resolution: its exact pins stand in for versions; the conflict is named."""
    versions = exact_pins(cell)
    platform_misses = _NO_WHEELS.findall(explanation)
    for name, version in platform_misses:
        versions[canonicalize_name(name)] = Version(version)
    if platform_misses:  # the no-wheel rule reports these, with a better hint
        return Resolved(versions, False)
    if miss := _OFFLINE_MISS.search(explanation):
        finding = error(
            "index-unreachable",
            canonicalize_name(miss[1]),
            f"cannot resolve offline: uv's cache has no index data for {miss[1]}; "
            "versions below are the matrix's own pins",
            "run `builder check` once without --offline to fill the cache",
            where,
        )
        return Resolved(versions, False, (finding,))
    if _UNREACHABLE.search(explanation):
        url = re.search(r"Failed to fetch: `?([^\s`]+)", explanation)
        finding = error(
            "index-unreachable",
            None,
            f"cannot resolve: the index did not answer ({url[1] if url else 'network error'}); "
            "versions below are the matrix's own pins",
            "check the network, the index URL and `indexes.ca_bundle`; the other findings "
            "may change once the index answers",
            where,
        )
        return Resolved(versions, False, (finding,))
    premises = conflict(explanation)
    names = re.findall(r"you require ([A-Za-z0-9][A-Za-z0-9._-]*)", " ".join(premises))
    finding = error(
        "unresolvable",
        canonicalize_name(names[0]) if names else None,
        "the requirements conflict: " + "; ".join(premises or [explanation[:300]]),
        f"change one of the requirements named; `builder lock --cell {cell.id}` "
        "shows uv's whole explanation",
        where,
    )
    return Resolved(versions, False, (finding,))


def conflict(explanation: str) -> list[str]:
    """uv's explanation cut to its premises: `A depends on B`, `you require C`, ..."""
    text = " ".join(explanation.split())
    premises: list[str] = []
    for sentence in re.split(r"(?:And )?[Bb]ecause ", text)[1:]:
        cause = re.split(r",? we can conclude that ", sentence)[0]
        premises += [
            p.strip(" .")
            for p in re.split(r" and (?=you |the |[A-Za-z0-9._-]+[=<>!~ ])", cause)
            if p.strip(" .")
        ]
    return list(dict.fromkeys(premises))
