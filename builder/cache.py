"""The result cache: a cell's verdict keyed by a content hash of everything that can change it.

The key covers the base image (id or digest, else its reference), the lock, the rendered build
context, the probe files and their options, the engine kind and the GPU model class. Entries are
JSON files (a report cell plus `finished`) written atomically through `builder.files`, so two
runs sharing the directory never see half an entry; the last writer of the same key wins with
the same content. The cache is only an optimisation: an entry that cannot be read or is not a
valid cell is a miss (with a `problem` to warn about), and a failed write is returned, not
raised, so neither can change a cell's result.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import InputError
from builder.files import read_text, write_atomic
from builder.records import Status, cell_record_problem, schema_problems

VERSION = 1
SKIP_PARTS = ("wheelhouse",)  # wheel bytes are pinned by the lock's hashes already
CACHED = (Status.PASS, Status.FAIL, Status.SKIPPED)  # errors say nothing of the image: re-run


def tree_digest(root: Path) -> str:
    """Hash every file under `root` (path and bytes), except wheelhouse bytes (names only).
    A symlink is hashed by its target's text, never followed, so nothing outside the tree
    counts; FIFOs, sockets and devices are skipped (reading one can block forever)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        content = _entry_digest(path, name_only=relative.parts[0] in SKIP_PARTS)
        if content is not None:
            digest.update(str(relative).encode() + b"\0" + content)
    return digest.hexdigest()


def _entry_digest(path: Path, name_only: bool) -> bytes | None:
    """What stands for one entry in the tree digest; None for directories and special files."""
    try:
        mode = path.lstat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            return None
        if name_only:
            return b""
        if stat.S_ISLNK(mode):
            return hashlib.sha256(b"symlink\0" + os.fsencode(os.readlink(path))).digest()
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None


def stat_digest(root: Path) -> str:
    """Names, sizes and modification times under `root`: enough to notice a changed model
    directory without reading gigabytes of weights."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest.update(f"{path.relative_to(root)}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def files_digest(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cell_key(parts: Mapping[str, Any]) -> str:
    """The cache key: a hash of the parts (each already a digest or a small value)."""
    text = json.dumps({"cache_version": VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """What `load` found. `record`: the stored cell (with `finished`), None on a miss.
    `problem`: why an entry that is there was not used (worth a warning); None otherwise."""

    record: dict[str, Any] | None = None
    problem: str | None = None


def load(cache_dir: Path | None, key: str) -> Entry:
    """The entry stored under `key`; an unreadable or invalid one is a miss with a problem."""
    if cache_dir is None or not os.path.lexists(cache_dir / f"{key}.json"):
        return Entry()
    path = cache_dir / f"{key}.json"
    try:
        data = json.loads(read_text(path, "cache entry"))
    except InputError as exc:
        return Entry(problem=f"{exc.message}; ignoring it")
    except RecursionError:
        return Entry(problem=f"{path}: nested too deeply; ignoring it")
    except ValueError as exc:
        return Entry(problem=f"{path}: invalid JSON: {exc}; ignoring it")
    problem = entry_problem(data)
    return Entry(problem=f"{path}: {problem}; ignoring it") if problem else Entry(record=data)


def entry_problem(data: object) -> str | None:
    """Why `data` is not a cached result (a report cell plus a `finished` time), or None."""
    if not isinstance(data, dict):
        return f"$: not a cell record but {type(data).__name__}"
    problem = cell_record_problem({k: v for k, v in data.items() if k != "finished"})
    if problem is not None:
        return problem
    if data["status"] not in CACHED:
        return f"$.status: {data['status']!r} results are never cached"
    return _finished_problem(data.get("finished"))


def _finished_problem(finished: object) -> str | None:
    problems = [] if finished is None else schema_problems(finished, "timestamp")
    return "$.finished" + problems[0].removeprefix("$") if problems else None


def store(cache_dir: Path | None, key: str, record: Mapping[str, Any]) -> str | None:
    """Store `record` under `key`; returns why it could not be written (None when it was),
    for the caller to warn about: the cell's result stands either way."""
    if cache_dir is None:
        return None
    try:
        write_atomic(cache_dir / f"{key}.json", json.dumps(record, sort_keys=True, indent=1))
    except InputError as exc:
        return exc.message
    return None
