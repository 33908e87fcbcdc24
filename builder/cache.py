"""The result cache: a cell's verdict keyed by a content hash of everything that can change it.

The key covers the base image (id or digest, else its reference), the lock, the rendered build
context, the probe files and their options, the engine kind and the GPU model class. Entries are
JSON files written atomically (temp file + rename), so two runs sharing the directory never see
half an entry; the last writer of the same key wins with the same content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from builder.lock import write_atomic

VERSION = 1
SKIP_PARTS = ("wheelhouse",)  # wheel bytes are pinned by the lock's hashes already


def tree_digest(root: Path) -> str:
    """Hash every file under `root` (path and bytes), except wheelhouse bytes (names only)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        digest.update(str(relative).encode() + b"\0")
        if relative.parts[0] not in SKIP_PARTS:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
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


def load(cache_dir: Path | None, key: str) -> dict[str, Any] | None:
    if cache_dir is None:
        return None
    try:
        data: dict[str, Any] = json.loads((cache_dir / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def store(cache_dir: Path | None, key: str, record: Mapping[str, Any]) -> None:
    if cache_dir is not None:
        write_atomic(cache_dir / f"{key}.json", json.dumps(record, sort_keys=True, indent=1))
