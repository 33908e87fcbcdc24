"""`builder validate`: per cell, lock if missing, check, build (or make a venv), run the probes,
and write `DIR/report.json`. A failing cell never stops the others; unchanged cells are reused
from the result cache.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import __version__, cache
from builder import probe as probe_module
from builder.build import BuildRecord, build_cell
from builder.engine import DockerEngine
from builder.errors import BuilderError
from builder.files import ensure_dir, write_atomic
from builder.lock import (
    ISOLATION,
    lock_cell,
    lock_path,
    parse_lock,
    read_lock,
    stale_reason,
)
from builder.log import Log
from builder.matrix import Cell, Matrix
from builder.probe import ImageTarget, ProbeResult, Target, VenvTarget, run_probe
from builder.render import Rendered, render_cell
from builder.resources import data_dir
from builder.settings import Settings
from builder.venv import network_isolation, prepare

RESULT_FIELDS = ("status", "reason", "build", "probes")  # what a cache hit brings back


@dataclass(frozen=True, kw_only=True)
class ValidateOptions:
    engine: str = "docker"
    output: Path = Path("reports")
    cache_dir: Path | None = None
    use_cache: bool = True
    build_anyway: bool = False


@dataclass
class Session:
    """What every cell of one run shares."""

    matrix: Matrix
    options: ValidateOptions
    settings: Settings
    log: Log
    docker: DockerEngine | None
    gpu_name: str | None
    isolation: tuple[str, ...] = ()


def host_gpu(smi: str | None) -> str | None:
    """The first GPU's model name from nvidia-smi, or None."""
    if smi is None:
        return None
    done = subprocess.run(
        [smi, "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
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
    }
    options.update(profile_options(session.matrix, cell, name))
    options.update({k: list(v) if isinstance(v, tuple) else v for k, v in extra})
    if options.get("model_dir"):  # relative to the matrix file, like every other path in it
        options["model_dir"] = str((session.matrix.root / options["model_dir"]).resolve())
    return options


def profile_options(matrix: Matrix, cell: Cell, name: str) -> dict[str, Any]:
    """What the cell's model profiles ask of a probe (imports, variants)."""
    if not cell.profiles:
        return {}
    from builder.profiles import probe_requirements

    return probe_requirements(matrix, cell, name)


def cell_status(probes: Sequence[ProbeResult]) -> tuple[str, str]:
    for status in ("fail", "error"):
        bad = [p for p in probes if p.status == status]
        if bad:
            return status, "; ".join(f"{p.probe}: {p.reason}" for p in bad)
    if probes and all(p.status == "skipped" for p in probes):
        return "skipped", "every probe skipped"
    return "pass", f"{len(probes)} probes: " + ", ".join(f"{p.probe} {p.status}" for p in probes)


def base_record(matrix: Matrix, cell: Cell) -> dict[str, Any]:
    lock = read_lock(lock_path(matrix, cell))
    packages = {p.name: p.version for p in parse_lock(lock.text)} if lock else {}
    return {
        **cell.to_json(),
        "status": "error",
        "reason": "",
        "seconds": 0.0,
        "cache": {"hit": False, "key": "", "stored": None},
        "lock": {
            "path": str(lock_path(matrix, cell)),
            "sha256": lock.sha256 if lock else None,
            "preinstalled": ISOLATION,
            "packages": packages,
            "diff": None,
        },
        "build": None,
        "check": None,
        "probes": [],
    }


def ensure_lock(session: Session, cell: Cell, record: dict[str, Any]) -> bool:
    """Lock a cell that has no lock; never silently re-lock a stale one."""
    reason = stale_reason(session.matrix, cell)
    if reason is None:
        return True
    if read_lock(lock_path(session.matrix, cell)) is not None:
        record.update(status="fail", reason=f"{reason}; run `builder lock --cell {cell.id}`")
        return False
    result = lock_cell(session.matrix, cell, session.settings)
    if not result.ok:
        record.update(status="fail", reason=f"cannot resolve: {result.error}")
        return False
    record.update(base_record(session.matrix, cell))
    record["lock"]["diff"] = result.diff.to_json()
    return True


def run_checks(session: Session, cells: Sequence[Cell]) -> dict[str, dict[str, Any]]:
    """`builder check` on every cell first, with no engine: {cell id: its findings report}."""
    from builder.check import Options, check_cells

    options = Options(settings=session.settings)
    reports = check_cells(session.matrix, cells, options, session.log)
    return {r.id: {**r.to_json(), "status": "pass" if r.ok else "fail"} for r in reports}


def checked(session: Session, report: dict[str, Any] | None, record: dict[str, Any]) -> bool:
    """Cells with error findings are not built unless --build-anyway."""
    record["check"] = report
    errors = [f for f in (report or {}).get("findings", []) if f["severity"] == "error"]
    if errors and not session.options.build_anyway:
        reasons = "; ".join(
            f"{f['code']} {f.get('package') or ''}: {f['message']}" for f in errors[:3]
        )
        record.update(status="fail", reason=f"check: {reasons}")
        return False
    return True


def validate_cell(session: Session, cell: Cell, check: dict[str, Any] | None) -> dict[str, Any]:
    start = time.monotonic()
    record = base_record(session.matrix, cell)
    if ensure_lock(session, cell, record) and checked(session, check, record):
        _cached_or_probed(session, cell, record)
    record["seconds"] = round(time.monotonic() - start, 2)
    return record


def _guarded(session: Session, cell: Cell, check: dict[str, Any] | None) -> dict[str, Any]:
    """A bug or engine failure in one cell is that cell's `error`; the others still run."""
    try:
        return validate_cell(session, cell, check)
    except BuilderError:  # bad input or the engine gone: the run's exit code says which
        raise
    except Exception as exc:
        record = base_record(session.matrix, cell)
        record.update(reason=session.log.crash(cell.id, exc)[:500])
        return record


def _cached_or_probed(session: Session, cell: Cell, record: dict[str, Any]) -> None:
    rendered = None
    if session.docker is not None:  # rendered once: for the cache key and, if missed, the build
        secrets = session.settings.secret_files(cell.indexes.ca_bundle).values()
        output = session.options.output / "build"
        rendered = render_cell(session.matrix, cell, output, session.log, secrets=secrets)
    key = cache_key(session, cell, rendered)
    record["cache"]["key"] = key
    entry = (
        cache.load(session.options.cache_dir, key) if session.options.use_cache else cache.Entry()
    )
    if entry.problem:
        session.log.warn(f"{cell.id}: cache: {entry.problem}")
    if entry.record is not None:
        stored = entry.record
        record.update({k: stored[k] for k in RESULT_FIELDS if k in stored})
        record["cache"] = {"hit": True, "key": key, "stored": stored.get("finished")}
        session.log.info(f"{cell.id}: {record['status']} (cached {stored.get('finished')})")
        return
    target = make_target(session, cell, record, rendered)
    if target is not None:
        probes = [
            run_probe_logged(session, cell, target, name, options) for name, options in cell.probes
        ]
        record["probes"] = [p.to_json() for p in probes]
        record["status"], record["reason"] = cell_status(probes)
    if record["status"] in cache.CACHED:
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        problem = cache.store(session.options.cache_dir, key, {**record, "finished": now})
        if problem:  # the verdict stands; only the next run pays again
            session.log.warn(f"{cell.id}: result not cached: {problem}")


def run_probe_logged(
    session: Session, cell: Cell, target: Target, name: str, options: tuple[tuple[str, Any], ...]
) -> ProbeResult:
    result = run_probe(target, name, probe_options(session, cell, name, options, target))
    session.log.info(
        f"  {cell.id} {name:<10} {result.status:<7} {result.seconds:6.1f}s  {result.reason}"
    )
    return result


def cache_key(session: Session, cell: Cell, rendered: Rendered | None) -> str:
    lock = read_lock(lock_path(session.matrix, cell))
    parts: dict[str, Any] = {
        "cell": cell.id,
        "builder": [__version__, cache.files_digest([Path(probe_module.__file__)])],
        "engine": session.options.engine,
        "gpu": session.gpu_name,
        "gpu_mode": cell.gpu,
        "lock": lock.sha256 if lock else None,
        "probes": cache.files_digest(data_dir("validate").glob("*.py")),
        "probe_options": [[n, list(o)] for n, o in cell.probes],
        # what the profiles ask of each probe, by content: editing a profile re-validates
        "profile_asks": [[n, profile_options(session.matrix, cell, n)] for n, _ in cell.probes],
        "app": cache.tree_digest(cell.app.path) if cell.app else None,
        "model_dir": _model_dir_digest(session.matrix, cell),
    }
    if session.docker is not None and rendered is not None:
        parts["context"] = cache.tree_digest(rendered.directory)
        parts["base"] = _image_identity(session.docker, cell.base.image)
    else:
        parts["python"] = cell.base.python
    return cache.cell_key(parts)


def _model_dir_digest(matrix: Matrix, cell: Cell) -> str | None:
    """The model directory a `model-dir` probe reads, by its files' names, sizes and times."""
    folder = dict(dict(cell.probes).get("model-dir", ())).get("model_dir")
    path = (matrix.root / str(folder)).resolve() if folder else None
    return cache.stat_digest(path) if path and path.is_dir() else None


def _image_identity(engine: DockerEngine, image: str) -> str:
    from docker.errors import ImageNotFound

    try:
        attrs = engine.inspect(image)
    except ImageNotFound:  # not pulled yet: the build pulls it
        return f"unresolved:{image}"
    return str(attrs.get("Id"))


def make_target(
    session: Session, cell: Cell, record: dict[str, Any], rendered: Rendered | None
) -> Target | None:
    inputs = session.options.output / "inputs" / cell.id
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir(parents=True)
    shutil.copy(lock_path(session.matrix, cell), inputs / "lock.txt")
    if session.docker is not None:
        return _image_target(session, cell, record, inputs, rendered)
    return _venv_target(session, cell, record, inputs)


def _image_target(
    session: Session, cell: Cell, record: dict[str, Any], inputs: Path, rendered: Rendered | None
) -> Target | None:
    assert session.docker is not None
    built = build_cell(
        session.matrix,
        cell,
        session.docker,
        session.settings,
        session.options.output / "build",
        session.log,
        rendered=rendered,
    )
    record["build"] = built.to_json()
    if not built.ok:
        record.update(status="fail", reason=f"build failed: {built.error}")
        return None
    gpu = session.gpu_name is not None and cell.gpu != "none"
    return ImageTarget(
        session.docker,
        built.tag,
        inputs,
        data_dir("validate"),
        gpu,
        app_path="/app" if cell.app else None,
    )


def _venv_target(
    session: Session, cell: Cell, record: dict[str, Any], inputs: Path
) -> Target | None:
    prepared = prepare(
        session.matrix, cell, session.settings.venv_cache, session.settings, session.log
    )
    if not prepared.ok or prepared.python is None:
        skipped = prepared.reason.startswith("skipped")
        record.update(status="skipped" if skipped else "fail", reason=prepared.reason)
        if prepared.log:
            record["build"] = BuildRecord(
                cell_id=cell.id,
                tag="",
                ok=False,
                seconds=prepared.seconds,
                log_tail=prepared.log,
                error=prepared.reason,
            ).to_json()
        return None
    return VenvTarget(
        prepared.python,
        inputs,
        data_dir("validate"),
        str(inputs / "lock.txt"),
        str(cell.app.path) if cell.app else None,
        session.isolation,
        session.settings.environ.get("PATH", "/usr/bin:/bin"),
    )


def run_facts(session: Session, started: str, start: float, argv: Sequence[str]) -> dict[str, Any]:
    version = session.docker.version() if session.docker is not None else None
    return {
        "started": started,
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - start, 2),
        "engine": session.options.engine,
        "engine_version": version,
        "matrix": str(session.matrix.path),
        "command": " ".join(argv),
        "host": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "gpu": session.gpu_name,
            "cpus": os.cpu_count() or 1,
        },
    }


def summary(cells: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = {
        s: sum(1 for c in cells if c["status"] == s) for s in ("pass", "fail", "error", "skipped")
    }
    return {"total": len(cells), **counts}


def validate(
    matrix: Matrix,
    cells: Sequence[Cell],
    options: ValidateOptions,
    settings: Settings,
    log: Log,
) -> dict[str, Any]:
    """Validate the cells and write `options.output/report.json`; returns the report."""
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    start = time.monotonic()
    ensure_dir(options.output)  # an unwritable -o is bad input, found before any build
    docker = DockerEngine(settings, log) if options.engine == "docker" else None
    session = Session(
        matrix,
        options,
        settings,
        log,
        docker,
        host_gpu(settings.nvidia_smi),
        network_isolation(settings.unshare) if docker is None else (),
    )
    with log.step("check"):
        checks = run_checks(session, cells)
    records = []
    for cell in cells:
        with log.step(f"validate {cell.id}"):
            records.append(_guarded(session, cell, checks.get(cell.id)))
    report = {
        "schema_version": 1,
        "builder_version": __version__,
        "run": run_facts(session, started, start, ["builder", *settings.argv]),
        "summary": summary(records),
        "cells": records,
    }
    write_atomic(
        options.output / "report.json", json.dumps(report, indent=2, sort_keys=True) + "\n"
    )
    from builder.report import append_step_summary

    append_step_summary(report, settings.step_summary)
    return report
