"""Build each cell's rendered context with BuildKit, in parallel; one failure never stops the rest.

Secrets (the CA bundle, a netrc with index credentials, a Hugging Face token) reach the build
only as BuildKit secrets; wheelhouses reach it as bind mounts from the build context.

BuildKit keeps what it received of a build context under the context's path: a new path is
sent whole, torch's wheel included (190 MB+ on CPU, GBs with CUDA), and checksummed again. The
cell id names the rendered context and changes with every pin bump, so each build runs from a
context slot (`DIR/.contexts/<wheels>-<n>`) whose path depends only on the wheels it carries:
the rendered context mirrored there by hard links, so that an unchanged wheel keeps its inode
and stat and BuildKit sends and hashes only what changed. A lock file per slot keeps two builds
(threads or processes) out of one slot.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from builder import proc
from builder.engine import Engine, EngineFailure
from builder.lock import require_fresh
from builder.log import Log
from builder.matrix import Cell, Matrix
from builder.records import BuildRecord
from builder.render import Rendered, failed_step, image_tag, render_cell
from builder.settings import Settings


@contextmanager
def build_secrets(cell: Cell, settings: Settings) -> Iterator[dict[str, Path]]:
    """Secret files for BuildKit: paths only; contents never reach a layer, log or report."""
    secrets = settings.secret_files(cell.indexes.ca_bundle)
    with tempfile.TemporaryDirectory(prefix="builder-secrets-") as tmp:
        if settings.hf_token:
            path = Path(tmp) / "hf_token"
            path.touch(mode=0o600)
            path.write_text(settings.hf_token)
            secrets["hf_token"] = path
        yield secrets


def build_cell(
    matrix: Matrix,
    cell: Cell,
    engine: Engine,
    settings: Settings,
    output: Path,
    log: Log,
    *,
    push: bool = False,
    registry: str | None = None,
    no_cache: bool = False,
    rendered: Rendered | None = None,
) -> BuildRecord:
    """Build one cell (rendering it unless `rendered` is given); every failure becomes a
    record, never an exception."""
    tag = image_tag(cell, registry or matrix.registry)
    if rendered is None:
        files = settings.secret_files(cell.indexes.ca_bundle).values()
        rendered = render_cell(matrix, cell, output, log, secrets=files, settings=settings)
    log_path = output / f"{cell.id}.build.log"
    with build_secrets(cell, settings) as secrets, context_slot(rendered.directory) as context:
        outcome = engine.build(context, tag, secrets, log_path, no_cache)
    record = BuildRecord(
        cell_id=cell.id,
        tag=tag,
        ok=outcome.ok,
        seconds=round(outcome.seconds, 2),
        image_id=outcome.image_id,
        log=str(log_path.resolve()),
        log_tail="" if outcome.ok else outcome.log_tail,
        cached_steps=outcome.cached_steps,
        total_steps=outcome.total_steps,
        lock_sha256=rendered.lock_sha256,
        error=None if outcome.ok else _build_error(outcome.log_tail),
    )
    if not outcome.ok:
        return record
    size = int(engine.inspect(tag).get("Size") or 0)
    digest = None
    if push:
        try:
            digest = engine.push(tag, log_path)
        except EngineFailure as exc:
            return replace(record, ok=False, size=size, error=str(exc))
    return replace(record, size=size, digest=digest)


SLOTS = ".contexts"


@contextmanager
def context_slot(rendered: Path) -> Iterator[Path]:
    """The rendered context, mirrored into the first free slot of its wheels (beside it,
    under `.contexts/`), held for the block."""
    root = rendered.parent / SLOTS
    root.mkdir(exist_ok=True)
    key = wheels_key(rendered / "wheelhouse")
    for index in itertools.count():
        slot = root / f"{key}-{index}"
        with (root / f"{slot.name}.lock").open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another build holds this slot
                continue
            mirror(rendered, slot)
            yield slot
            return


def wheels_key(wheelhouse: Path) -> str:
    """What a slot is named after: the wheels of the context (their paths, sizes and times:
    what BuildKit compares), so that a bump that keeps them finds its old slot."""
    digest = hashlib.sha256()
    for path in sorted(wheelhouse.rglob("*.whl")) if wheelhouse.is_dir() else ():
        found = path.stat()
        relative = path.relative_to(wheelhouse)
        digest.update(f"{relative}\0{found.st_size}\0{found.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def mirror(source: Path, target: Path) -> None:
    """Make `target` hold exactly what `source` holds: files as hard links (copies across file
    systems), symlinks as symlinks. An entry already the same (inode, or link text) is left
    alone, so its stat stays what BuildKit last saw."""
    target.mkdir(exist_ok=True)
    wanted = dict(_entries(source))
    for relative, kind in sorted(_entries(target), reverse=True):  # children before parents
        if wanted.get(relative) == kind:
            continue
        if kind == "dir":
            shutil.rmtree(target / relative)
        else:
            (target / relative).unlink()
    for relative, kind in sorted(wanted.items()):
        _mirror_entry(source / relative, target / relative, kind)


def _entries(root: Path) -> Iterator[tuple[str, str]]:
    """(relative path, "dir" | "link" | "file") under root, never following a symlink."""
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            yield str(path.relative_to(root)), kind


def _mirror_entry(source: Path, target: Path, kind: str) -> None:
    if kind == "dir":
        target.mkdir(exist_ok=True)
    elif kind == "link":
        text = os.readlink(source)
        if not target.is_symlink() or os.readlink(target) != text:
            target.unlink(missing_ok=True)
            os.symlink(text, target)
    else:
        _mirror_file(source, target)


SMALL = 1 << 20  # files compared by content before they are replaced (not the wheels)


def _mirror_file(source: Path, target: Path) -> None:
    """Put `source` at `target` as BuildKit will see it. BuildKit resends a file only when its
    stat (size, mtime to the nanosecond, mode) changed, and two renders of equal-sized files
    within one clock tick of the file system share an mtime: a replaced file whose stat would
    look unchanged is copied and given a later mtime. Same content keeps the old file."""
    old = target.lstat() if target.exists() else None
    if old is not None:
        if os.path.samefile(source, target):
            return
        same_mode = old.st_mode == source.stat().st_mode
        if same_mode and old.st_size <= SMALL and target.read_bytes() == source.read_bytes():
            return
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    new = target.stat()
    if old is not None and (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns):
        target.unlink()
        shutil.copy2(source, target)
        os.utime(target, ns=(new.st_atime_ns, old.st_mtime_ns + 1))


def _build_error(log_tail: str) -> str:
    """The build's error: which user step failed, when BuildKit's log tells."""
    step = failed_step(log_tail)
    return f"docker build failed at step {step!r}" if step else "docker build failed"


def build_cells(
    matrix: Matrix,
    cells: Sequence[Cell],
    engine: Engine,
    settings: Settings,
    output: Path,
    log: Log,
    *,
    jobs: int = 1,
    push: bool = False,
    registry: str | None = None,
    no_cache: bool = False,
) -> list[BuildRecord]:
    """Build cells, `jobs` at a time, after refusing any missing or stale lock; a cell that
    fails (or crashes) never stops the others."""
    require_fresh(matrix, cells)

    def one(cell: Cell, cancel: threading.Event) -> BuildRecord:
        log.info(f"build {cell.id}")
        record = build_cell(
            matrix,
            cell,
            engine,
            settings,
            output,
            log,
            push=push,
            registry=registry,
            no_cache=no_cache,
        )
        log.info(f"{'ok  ' if record.ok else 'FAIL'} {cell.id} ({record.seconds:.0f}s)")
        return record

    def crashed(cell: Cell, exc: Exception) -> BuildRecord:
        error = log.crash(cell.id, exc)
        return BuildRecord(
            cell_id=cell.id, tag=image_tag(cell, registry), ok=False, seconds=0.0, error=error
        )

    return proc.parallel_map(one, cells, jobs, crashed)
