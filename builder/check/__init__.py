"""`builder check`: what is wrong with each cell, found before anything is built.

No container engine is involved. Per cell: its profiles (builder/profiles.py) -> its versions
(`resolution`: the fresh lock, else a cached `uv pip compile`) -> package metadata from its
indexes (`metadata`, cached) -> `rules.RULES`, each a small function from a `Context` to
findings (`results`). The curated facts the rules apply are data, each row with its source:
builder/data/known_issues.yaml (`known_issues`) and the profiles' `known_bad`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from builder import proc
from builder.check.fixes import Recheck, Rechecks, offer_fixes
from builder.check.health import IndexHealth, urllib_probe
from builder.check.known_issues import KNOWN_ISSUES, KnownIssues, load_known_issues
from builder.check.metadata import Fetch, IndexPool, prefetch, urllib_fetch
from builder.check.resolution import (
    Options,
    Resolved,
    Resolver,
    conflict,
    exact_pins,
    resolve,
    unreachable_warnings,
    uv_resolver,
)
from builder.check.results import SEVERITIES, CellReport, Finding, error, render_json, render_text
from builder.check.rules import (
    RULES,
    Context,
    rule_companions,
    rule_cuda,
    rule_dependencies,
    rule_gpu,
    rule_known_bad,
    rule_metadata,
    rule_preinstalled,
    rule_profiles,
    rule_python,
    rule_wheels,
    supported_tags,
    torch_cuda,
)
from builder.log import Log
from builder.matrix import Cell, Matrix
from builder.profiles import Profile, load_profiles, profiles_for

__all__ = [
    "KNOWN_ISSUES",
    "RULES",
    "SEVERITIES",
    "CellReport",
    "Context",
    "Finding",
    "KnownIssues",
    "Options",
    "Resolved",
    "Resolver",
    "check_cell",
    "check_cells",
    "conflict",
    "exact_pins",
    "load_known_issues",
    "render_json",
    "render_text",
    "resolve",
    "rule_companions",
    "rule_cuda",
    "rule_dependencies",
    "rule_gpu",
    "rule_known_bad",
    "rule_metadata",
    "rule_preinstalled",
    "rule_profiles",
    "rule_python",
    "rule_wheels",
    "supported_tags",
    "torch_cuda",
    "uv_resolver",
]


def check_cells(
    matrix: Matrix, cells: Sequence[Cell], options: Options, log: Log | None = None
) -> list[CellReport]:
    """Check each cell; a cell's problems never stop the others. Profile errors raise first."""
    known = load_profiles(matrix.profile_paths)
    chosen = {c.id: tuple(profiles_for(matrix, c, known)) for c in cells}
    issues = load_known_issues()
    pool = IndexPool(
        cache_dir=options.cache_dir,
        fetch=_fetch(cells, options),
        max_age=options.max_age,
        health=_health(cells, options),
    )
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:  # cells finish on worker threads; keep their lines whole
            if log is not None:
                log.info(line)

    def one(cell: Cell, cancel: threading.Event) -> CellReport:
        return check_cell(matrix, cell, chosen[cell.id], issues, pool, options, say)

    def crashed(cell: Cell, exc: Exception) -> CellReport:
        reason = (log or Log(verbosity=-1)).crash(f"check {cell.id}", exc)
        finding = error(
            "internal-error", None, reason, "re-run with --debug and report it", "builder"
        )
        return CellReport(id=cell.id, findings=(finding,))

    reports = proc.parallel_map(one, cells, options.jobs, crashed)
    for warning in unreachable_warnings(cells, pool.health):
        if log is not None:  # once per run; each cell's findings say what it lacked
            log.warn(warning)
    return reports


def _at_line(cell: Cell, finding: Finding) -> Finding:
    """A finding about a package the cell's requirements name also names that line, as
    `requirements.txt:7: transformers==4.47.0` (`matrix.yaml:12: ...` for the matrix's own)."""
    declared = cell.declared(finding.package) if finding.package else None
    if declared is None or declared[1] in finding.hint:
        return finding
    line = f"{declared[1]}: {declared[0]}"
    return replace(finding, hint=f"{finding.hint} ({line})" if finding.hint else line)


def _fetch(cells: Sequence[Cell], options: Options) -> Fetch | None:
    if options.offline:
        return None
    configured = cells[0].indexes.ca_bundle if cells else None
    return options.fetch or urllib_fetch(options.settings.ca_for(configured))


def _health(cells: Sequence[Cell], options: Options) -> IndexHealth | None:
    """The run's table of which indexes answer (none offline: nothing is asked)."""
    if options.offline:
        return None
    configured = cells[0].indexes.ca_bundle if cells else None
    probe = options.probe or urllib_probe(options.settings.ca_for(configured))
    return IndexHealth(probe, options.probe_timeout)


def check_cell(
    matrix: Matrix,
    cell: Cell,
    profiles: tuple[Profile, ...],
    issues: KnownIssues,
    pool: IndexPool,
    options: Options,
    say: Callable[[str], None] = lambda line: None,
) -> CellReport:
    """All rules on one cell, then a fix that holds for each finding (`fixes`)."""
    start = time.monotonic()
    ctx, resolved, found = _checked(matrix, cell, profiles, issues, pool, options)

    def recheck(variant: Cell) -> Recheck:
        checked, again, findings = _checked(matrix, variant, profiles, issues, pool, options)
        return Recheck(findings=tuple(findings), versions=checked.versions, resolved=again.resolved)

    rechecks = Rechecks(cell=cell, run=recheck)
    found = offer_fixes(ctx, found, rechecks)
    findings = [_at_line(cell, f) for f in found]
    ordered = sorted(dict.fromkeys(findings), key=lambda f: SEVERITIES.index(f.severity))
    say(
        f"check {cell.id}: {len(resolved.versions)} packages ({resolved.origin}), "
        f"{len(ordered)} finding(s), {rechecks.count} fix re-check(s), "
        f"{time.monotonic() - start:.1f}s"
    )
    return CellReport(id=cell.id, findings=tuple(ordered))


def _checked(
    matrix: Matrix,
    cell: Cell,
    profiles: tuple[Profile, ...],
    issues: KnownIssues,
    pool: IndexPool,
    options: Options,
) -> tuple[Context, Resolved, list[Finding]]:
    """The cell's versions, its rules' context, and what the rules find."""
    resolved = resolve(matrix, cell, options, pool.health)
    metadata = pool.for_indexes(
        cell.indexes.index_url, cell.indexes.extra_index_urls, cell.indexes.wheelhouse
    )
    prefetch(metadata, resolved.versions)
    ctx = Context(
        cell=cell,
        where=matrix.where(cell),
        profiles=profiles,
        versions=resolved.versions,
        resolved=resolved.resolved,
        pinned=exact_pins(cell),
        metadata=metadata,
        issues=issues,
        add_to="the matrix `requirements`" if matrix.source is None else "the requirements",
    )
    return ctx, resolved, [*resolved.findings, *(f for rule in RULES for f in rule(ctx))]
