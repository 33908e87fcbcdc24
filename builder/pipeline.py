"""`builder validate`: per cell, lock if missing, gate on the check, look the result up in the
cache, prepare the backend's target (build an image or make a venv), run the probes, and write
`DIR/report.json`. Each step returns a record (`builder.records`); a failing cell never stops
the others, and unchanged cells are reused from the result cache.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from builder import __version__, cache, proc
from builder import probe as probe_module
from builder.backends import Backend, Setup, open_backend
from builder.check.fleet import probe_option as fleet_option
from builder.errors import BuilderError
from builder.files import ensure_dir, write_atomic
from builder.lock import (
    LockResult,
    lock_cell,
    lock_path,
    parse_lock,
    read_lock,
    stale_reason,
)
from builder.log import Log
from builder.matrix import Cell, Matrix
from builder.probe import SERVE_HTTP, Target, limits, memory_bytes, run_probe
from builder.records import (
    CachePart,
    CellResult,
    CheckPart,
    LockPart,
    ProbeResult,
    Status,
    Verdict,
    cell_status,
    summarize,
)
from builder.render import Rendered
from builder.resources import SERVE_PROBE, data_dir
from builder.settings import Settings

LockStep = Callable[[Matrix, Cell, Settings], LockResult]
CheckStep = Callable[[Matrix, Sequence[Cell], Settings, Log], Mapping[str, CheckPart]]


@dataclass(frozen=True, kw_only=True)
class ValidateOptions:
    """What the command line asks of one run."""

    engine: str = "docker"
    output: Path = Path("reports")
    cache_dir: Path | None = None
    use_cache: bool = True
    build_anyway: bool = False
    jobs: int = 1  # cells in flight: one builds while another is probed
    probe_jobs: int | None = None  # probes at once, across cells (None: this machine's cores)


@dataclass(frozen=True, kw_only=True)
class Session:
    """What every cell of one run shares: the backend chosen once, and the lock step."""

    matrix: Matrix
    options: ValidateOptions
    settings: Settings
    log: Log
    backend: Backend
    gpu_name: str | None = None
    lock: LockStep = lock_cell
    # what the probes of every cell share (cores, memory), and how many cells build at once
    budget: proc.Budget = field(default_factory=proc.machine_budget)
    builds: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(1))


def now() -> str:
    """The time as report.json has it: UTC, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def host_gpu(smi: str | None) -> str | None:
    """The first GPU's model name from nvidia-smi, or None."""
    if smi is None:
        return None
    done = proc.run([smi, "--query-gpu=name", "--format=csv,noheader"])
    names = done.stdout.strip().splitlines()
    return names[0].strip() if done.returncode == 0 and names else None


def numpy_spec(cell: Cell) -> str | None:
    from packaging.requirements import Requirement

    specs = [
        str(r.specifier)
        for line in cell.requirement_lines()
        if (r := Requirement(line)).name.lower() == "numpy" and str(r.specifier)
    ]
    return ",".join(specs) or None


def probe_options(
    session: Session,
    cell: Cell,
    name: str,
    extra: Iterable[tuple[str, Any]],
    target: Target,
) -> dict[str, Any]:
    """The options file of one probe: the cell's facts, then the matrix's per-probe options."""
    options: dict[str, Any] = {
        "lock": target.lock_path,
        "cuda": cell.base.cuda,
        "gpu": cell.gpu,
        "python": cell.base.python,
        "numpy_spec": numpy_spec(cell),
        "app_path": target.app_path,
        "entry_modules": list(cell.app.entry_modules) if cell.app else [],
        "reused": cell.base.reuse_preinstalled,
        "preinstalled": dict(cell.base.preinstalled) if cell.base.reuse_preinstalled else {},
    }
    if name == "cuda":  # the GPUs the image will land on, judged inside it without one
        options["fleet"] = fleet_option(cell)
    options.update(profile_options(session.matrix, cell, name))
    options.update({k: list(v) if isinstance(v, tuple) else v for k, v in extra})
    if options.get("model_dir"):  # relative to the matrix file, like every other path in it
        options["model_dir"] = str((session.matrix.root / options["model_dir"]).resolve())
    if name == "media":  # numba's cache outlives the probe's container (see validate/media.py)
        options.setdefault("jit_cache", str(session.settings.jit_cache.resolve()))
    return options


def profile_options(matrix: Matrix, cell: Cell, name: str) -> dict[str, Any]:
    """What the cell's model profiles ask of a probe (imports, variants)."""
    if not cell.profiles:
        return {}
    from builder.profiles import probe_requirements

    return probe_requirements(matrix, cell, name)


def run_checks(
    matrix: Matrix, cells: Sequence[Cell], settings: Settings, log: Log
) -> dict[str, CheckPart]:
    """`builder check` on every cell first, with no engine: {cell id: its check part}."""
    from builder.check import Options, check_cells

    reports = check_cells(matrix, cells, Options(settings=settings), log)
    return {r.id: CheckPart(r.id, tuple(f.to_json() for f in r.findings)) for r in reports}


# ---------------------------------------------------------------- the steps of one cell


def lock_part(matrix: Matrix, cell: Cell, diff: dict[str, Any] | None = None) -> LockPart:
    """The cell's lock as it is on disk now."""
    lock = read_lock(lock_path(matrix, cell))
    return LockPart(
        path=str(lock_path(matrix, cell)),
        sha256=lock.sha256 if lock else None,
        preinstalled=cell.base.policy,
        packages={p.name: p.version for p in parse_lock(lock.text)} if lock else {},
        diff=diff,
    )


def ensure_lock(session: Session, cell: Cell) -> tuple[LockPart, Verdict | None]:
    """Lock a cell that has no lock; never silently re-lock a stale one. A verdict ends the cell."""
    reason = stale_reason(session.matrix, cell)
    if reason is None:
        return lock_part(session.matrix, cell), None
    if read_lock(lock_path(session.matrix, cell)) is not None:
        stale = Verdict(Status.FAIL, f"{reason}; run `builder lock --cell {cell.id}`")
        return lock_part(session.matrix, cell), stale
    result = session.lock(session.matrix, cell, session.settings)
    if not result.ok:
        unresolved = Verdict(Status.FAIL, f"cannot resolve: {result.error}")
        return lock_part(session.matrix, cell), unresolved
    return lock_part(session.matrix, cell, result.diff.to_json()), None


def check_gate(session: Session, check: CheckPart | None) -> Verdict | None:
    """Cells with error findings are not built unless --build-anyway."""
    errors = check.errors if check else []
    if not errors or session.options.build_anyway:
        return None
    reasons = "; ".join(f"{f['code']} {f.get('package') or ''}: {f['message']}" for f in errors[:3])
    return Verdict(Status.FAIL, f"check: {reasons}")


def cache_key(session: Session, cell: Cell, rendered: Rendered | None) -> str:
    """Everything that can change the cell's verdict, hashed; the backend adds its own parts."""
    lock = read_lock(lock_path(session.matrix, cell))
    parts: dict[str, Any] = {
        "cell": cell.id,
        "builder": [__version__, cache.files_digest([Path(probe_module.__file__), SERVE_HTTP])],
        "engine": session.options.engine,
        "gpu": session.gpu_name,
        "gpu_mode": cell.gpu,
        "lock": lock.sha256 if lock else None,
        "probes": cache.files_digest(data_dir("validate").glob("*.py")),
        "probe_options": [[n, list(o)] for n, o in cell.probes],
        # a GPU added to the fleet re-judges the cell; a cell without one keeps its key
        **({"fleet": fleet} if (fleet := fleet_option(cell)) else {}),
        # what the profiles ask of each probe, by content: editing a profile re-validates
        "profile_asks": [[n, profile_options(session.matrix, cell, n)] for n, _ in cell.probes],
        "app": _app_digest(cell),
        "model_dir": _model_dir_digest(session.matrix, cell),
    }
    return cache.cell_key({**parts, **session.backend.key_parts(cell, rendered)})


def _app_digest(cell: Cell) -> str | list[str] | None:
    """The app by content: its directory's tree (alone, as before `app.git`, so old keys
    stay valid), or its repository's URL and commit; with `app.files` when there are any."""
    if cell.app is None:
        return None
    git = cell.app.git
    tree = cache.tree_digest(cell.app.path) if cell.app.path else ""
    if git is None and not cell.app.files:
        return tree
    return [*([git.url, git.rev] if git else [tree]), cache.files_digest(cell.app.files)]


def _model_dir_digest(matrix: Matrix, cell: Cell) -> str | None:
    """The model directory a `model-dir` probe reads, by its files' names, sizes and times."""
    folder = dict(dict(cell.probes).get("model-dir", ())).get("model_dir")
    path = (matrix.root / str(folder)).resolve() if folder else None
    return cache.stat_digest(path) if path and path.is_dir() else None


def lookup(session: Session, cell: Cell, key: str) -> tuple[Verdict, CachePart] | None:
    """The stored verdict under `key`, or None on a miss (an unusable entry is one, warned)."""
    options = session.options
    entry = cache.load(options.cache_dir, key) if options.use_cache else cache.Entry()
    if entry.problem:
        session.log.warn(f"{cell.id}: cache: {entry.problem}")
    if entry.record is None:
        return None
    verdict = Verdict.from_json(entry.record)
    finished = entry.record.get("finished")
    session.log.info(f"{cell.id}: {verdict.status} (cached {finished})")
    return verdict, CachePart(hit=True, key=key, stored=finished)


def inputs_of(session: Session, cell: Cell) -> Path:
    """A fresh host folder for the target to read: the cell's lock, then the options files."""
    inputs = session.options.output / "inputs" / cell.id
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    shutil.copy(lock_path(session.matrix, cell), inputs / "lock.txt")
    return inputs


def probe_cell(session: Session, cell: Cell, rendered: Rendered | None) -> Verdict:
    """Prepare the backend's target (as many cells at once as `session.builds` lets), then
    run every probe of the cell on it."""
    with session.builds:
        setup = session.backend.prepare(cell, inputs_of(session, cell), rendered)
    if not isinstance(setup, Setup):
        return setup
    probes = run_probes(session, cell, setup.target)
    return Verdict(*cell_status(probes), build=setup.build, probes=probes)


# Probes started first when they run side by side: the longest, so that the short ones fill
# in around them (media leads: the first time librosa's numba gufuncs compile, over 10 s on one
# core, it is the longest). The serve probe runs last and alone: its time to ready is measured.
LONGEST_FIRST = ("media", "generate", "imports", "model-dir", "cuda", "numpy", "pip-check")


def run_probes(session: Session, cell: Cell, target: Target) -> tuple[ProbeResult, ...]:
    """The cell's probes, each in its own container or process, as many at once as the
    session's budget of cores and memory allows (each holds a core and its memory limit);
    results in the cell's probe order."""
    probes = list(cell.probes)
    side_by_side = sorted(
        (p for p in probes if p[0] != SERVE_PROBE),
        key=lambda p: LONGEST_FIRST.index(p[0]) if p[0] in LONGEST_FIRST else len(LONGEST_FIRST),
    )
    alone = [p for p in probes if p[0] == SERVE_PROBE]

    def one(probe: tuple[str, tuple[tuple[str, Any], ...]], _: threading.Event) -> ProbeResult:
        name, options = probe
        cores = session.budget.cores if name == SERVE_PROBE else 1
        memory = memory_bytes(limits(name, dict(options))[1])
        with session.budget.hold(cores, memory):
            return run_probe_logged(session, cell, target, name, options)

    def crashed(probe: tuple[str, tuple[tuple[str, Any], ...]], exc: Exception) -> ProbeResult:
        reason = f"the probe crashed: {type(exc).__name__}: {exc}"
        return ProbeResult(probe=probe[0], status=Status.ERROR, reason=reason[:500], seconds=0.0)

    jobs = session.options.probe_jobs or session.budget.cores
    done = proc.parallel_map(one, side_by_side, jobs, crashed)
    done += proc.parallel_map(one, alone, 1, crashed)
    found = {name: result for (name, _), result in zip(side_by_side + alone, done, strict=True)}
    return tuple(found[name] for name, _ in probes)


def run_probe_logged(
    session: Session, cell: Cell, target: Target, name: str, options: tuple[tuple[str, Any], ...]
) -> ProbeResult:
    result = run_probe(target, name, probe_options(session, cell, name, options, target))
    session.log.info(
        f"  {cell.id} {name:<10} {result.status:<7} {result.seconds:6.1f}s  {result.reason}"
    )
    return result


def store(session: Session, result: CellResult) -> None:
    """Cache a verdict worth keeping; a failed write is a warning, the verdict stands."""
    if result.verdict.status not in cache.CACHED:
        return
    record = {**result.to_json(), "finished": now()}
    problem = cache.store(session.options.cache_dir, result.cache.key, record)
    if problem:  # only the next run pays again
        session.log.warn(f"{result.cell['id']}: result not cached: {problem}")


def judge(session: Session, cell: Cell, check: CheckPart | None) -> CellResult:
    """The steps of one cell, in order: lock, check gate, cache lookup, target and probes, and
    cache store. The first step that returns a verdict ends the cell."""
    lock, verdict = ensure_lock(session, cell)
    if verdict is not None:
        return CellResult(cell=cell.to_json(), lock=lock, verdict=verdict)
    result = functools.partial(CellResult, cell=cell.to_json(), lock=lock, check=check)
    verdict = check_gate(session, check)
    if verdict is not None:
        return result(verdict=verdict)
    rendered = session.backend.render(cell)  # once: for the cache key and, on a miss, the build
    key = cache_key(session, cell, rendered)
    hit = lookup(session, cell, key)
    if hit is not None:
        verdict, part = hit
        return result(verdict=verdict, cache=part)
    probed = result(verdict=probe_cell(session, cell, rendered), cache=CachePart(key=key))
    store(session, probed)
    return probed


def validate_cell(session: Session, cell: Cell, check: CheckPart | None) -> CellResult:
    """One cell's result, timed. A bug or engine failure in it is its `error`; a BuilderError
    (bad input, the engine gone) ends the run, whose exit code says which."""
    start = time.monotonic()
    try:
        result = judge(session, cell, check)
    except BuilderError:
        raise
    except Exception as exc:
        crash = Verdict(Status.ERROR, session.log.crash(cell.id, exc)[:500])
        return CellResult(cell=cell.to_json(), lock=lock_part(session.matrix, cell), verdict=crash)
    return replace(result, seconds=round(time.monotonic() - start, 2))


# ---------------------------------------------------------------- the run


def run_facts(session: Session, started: str, start: float, argv: Sequence[str]) -> dict[str, Any]:
    """report.json's `run`: when, with what engine, on what host."""
    return {
        "started": started,
        "finished": now(),
        "seconds": round(time.monotonic() - start, 2),
        "engine": session.options.engine,
        "engine_version": session.backend.engine_version,
        "matrix": str(session.matrix.path),
        "command": " ".join(argv),
        "host": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "gpu": session.gpu_name,
            "cpus": os.cpu_count() or 1,
        },
    }


def open_session(
    matrix: Matrix,
    options: ValidateOptions,
    settings: Settings,
    log: Log,
    backend: Backend | None,
    lock: LockStep,
) -> Session:
    """The run's shared state. The backend is chosen once, here (unless one is passed in),
    so a missing engine stops the run before any cell."""
    gpu = host_gpu(settings.nvidia_smi)
    if backend is None:
        backend = open_backend(
            options.engine, matrix, settings, log, options.output, gpu is not None
        )
    budget = proc.machine_budget()
    return Session(
        matrix=matrix,
        options=options,
        settings=settings,
        log=log,
        backend=backend,
        gpu_name=gpu,
        lock=lock,
        budget=proc.Budget(options.probe_jobs or budget.cores, budget.memory),
        builds=threading.Semaphore(max(1, options.jobs // 2)),
    )


def validate(
    matrix: Matrix,
    cells: Sequence[Cell],
    options: ValidateOptions,
    settings: Settings,
    log: Log,
    *,
    backend: Backend | None = None,
    lock: LockStep = lock_cell,
    checks: CheckStep = run_checks,
) -> dict[str, Any]:
    """Validate the cells and write `options.output/report.json`; returns the report.
    The backend (default: the one `options.engine` names), the lock step and the checks are
    what reaches outside builder, so tests pass fakes."""
    started, start = now(), time.monotonic()
    ensure_dir(options.output)  # an unwritable -o is bad input, found before any build
    session = open_session(matrix, options, settings, log, backend, lock)
    with log.step("check"):
        found = checks(matrix, cells, settings, log)
    results = validate_cells(session, cells, found)
    report = {
        "schema_version": 1,
        "builder_version": __version__,
        "run": run_facts(session, started, start, ["builder", *settings.argv]),
        "summary": summarize(results),
        "cells": results,
    }
    write_report(report, options.output, settings.step_summary)
    return report


def validate_cells(
    session: Session, cells: Sequence[Cell], checks: Mapping[str, CheckPart]
) -> list[dict[str, Any]]:
    """Every cell's result, in matrix order. With `jobs` > 1 that many cells are in flight
    (half of them building, at least one), so one cell builds while another is probed."""
    log, jobs = session.log, session.options.jobs
    if jobs <= 1 or len(cells) <= 1:
        results = []
        for cell in cells:
            with log.step(f"validate {cell.id}"):
                results.append(validate_cell(session, cell, checks.get(cell.id)).to_json())
        return results

    def one(cell: Cell, _: threading.Event) -> dict[str, Any]:
        log.info(f"==> validate {cell.id}")  # no step groups: cells interleave
        result = validate_cell(session, cell, checks.get(cell.id))
        log.info(f"    validate {cell.id}: {result.seconds or 0:.1f}s")
        return result.to_json()

    def crashed(cell: Cell, exc: Exception) -> dict[str, Any]:
        crash = Verdict(Status.ERROR, log.crash(cell.id, exc)[:500])
        lock = lock_part(session.matrix, cell)
        return CellResult(cell=cell.to_json(), lock=lock, verdict=crash).to_json()

    return proc.parallel_map(one, cells, jobs, crashed)


def write_report(report: dict[str, Any], output: Path, step_summary: Path | None) -> None:
    """DIR/report.json, written atomically; its Markdown appended to the job summary."""
    write_atomic(output / "report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    from builder.report import append_step_summary

    append_step_summary(report, step_summary)
