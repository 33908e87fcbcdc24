"""Fan the matrix out to CI: a GitHub Actions `strategy.matrix` (one job per cell, on a GPU or
CPU runner) and a docker-bake.json (one Bake target per rendered build context).

Bake file format: https://docs.docker.com/build/bake/reference/ (JSON form of the HCL blocks).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from builder.errors import InputError
from builder.lock import lock_path, read_lock
from builder.matrix import Cell, Matrix
from builder.render import image_tag, labels
from builder.settings import Settings

CONTEXT_DIR = "build"  # where `builder render` writes the contexts (its default -o)
# GitHub Actions: "A matrix can generate a maximum of 256 jobs per workflow run."
MAX_GITHUB_JOBS = 256
_BAKE_NAME = re.compile(r"[^A-Za-z0-9_-]", re.ASCII)


def needs_gpu(cell: Cell) -> bool:
    """GPU runner: the cell requires one, or may use one and its base has CUDA."""
    return cell.gpu == "required" or (cell.gpu == "optional" and cell.base.cuda is not None)


def github_matrix(matrix: Matrix, cells: Sequence[Cell]) -> dict[str, Any]:
    """`{"include": [...]}` for `strategy.matrix`: one job per cell, on its runner label.
    Refuses more cells than GitHub runs from one matrix (MAX_GITHUB_JOBS)."""
    if len(cells) > MAX_GITHUB_JOBS:
        raise InputError(
            f"{matrix.path}: {len(cells)} cells, but a GitHub Actions matrix runs at most "
            f"{MAX_GITHUB_JOBS} jobs",
            hint="split the cells over several jobs with --cell globs (e.g. --cell 'cu121-*' "
            "and --cell 'cpu-*'), each printing a matrix of its own",
        )
    runners = dict(matrix.runners)
    return {
        "include": [
            {
                "cell": cell.id,
                "runner": runners["gpu" if needs_gpu(cell) else "cpu"],
                "base": cell.base.name,
                "gpu": cell.gpu,
            }
            for cell in cells
        ]
    }


def bake_target_name(cell_id: str) -> str:
    """Bake names allow [a-zA-Z0-9_-]: cell ids' dots become underscores."""
    return _BAKE_NAME.sub("_", cell_id)


def bake_target(matrix: Matrix, cell: Cell, settings: Settings) -> dict[str, Any]:
    """One cell's Bake target. Its secrets (cacert, netrc) are files, as `build` mounts them:
    `type=env` would make the variable's value the secret, not its file."""
    lock = read_lock(lock_path(matrix, cell))
    secrets = settings.secret_files(cell.indexes.ca_bundle)
    return {
        "context": f"{CONTEXT_DIR}/{cell.id}",
        "dockerfile": "Dockerfile",
        "tags": [image_tag(cell, matrix.registry)],
        "labels": dict(labels(cell, lock.sha256 if lock else None)),
        "platforms": [cell.base.platform],
        "secret": [f"type=file,id={name},src={path}" for name, path in sorted(secrets.items())],
    }


def bake_file(matrix: Matrix, cells: Sequence[Cell], settings: Settings) -> dict[str, Any]:
    """docker-bake.json: a target per cell, a group per base and `default` with them all."""
    targets = {bake_target_name(c.id): bake_target(matrix, c, settings) for c in cells}
    groups: dict[str, dict[str, list[str]]] = {}
    for cell in cells:
        name = _group_name(cell.base.name, targets)
        groups.setdefault(name, {"targets": []})["targets"].append(bake_target_name(cell.id))
    groups["default"] = {"targets": list(targets)}
    return {"group": groups, "target": targets}


def _group_name(base: str, targets: Mapping[str, object]) -> str:
    """The base's name, unless a target (a cell with no pins) or `default` has it: groups
    shadow targets of the same name in Bake."""
    return f"{base}-cells" if base in targets or base == "default" else base


def render_fanout(matrix: Matrix, cells: Sequence[Cell], fmt: str, settings: Settings) -> str:
    """`builder matrix --format`: json (the cells), github (one line, for $GITHUB_OUTPUT), bake."""
    if fmt == "github":
        return json.dumps(github_matrix(matrix, cells), separators=(",", ":"))
    if fmt == "bake":
        return json.dumps(bake_file(matrix, cells, settings), indent=2)
    return json.dumps({"cells": [c.to_json() for c in cells]}, indent=2)
