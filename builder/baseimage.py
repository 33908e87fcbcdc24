"""`preinstalled: auto`: the packages a base image's own Python carries, read from the image.

The engine runs the base's `python<version>` once in a throwaway container without network and
lists its distributions with importlib.metadata (so a base without pip works too); the answer is
cached by image id, so a base tag that moves is read again. Reading needs an engine: without one
the run stops with exit 3, naming the base.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.engine import Engine, EngineFailure
from builder.errors import EngineUnavailable, InputError
from builder.files import read_text, write_atomic
from builder.matrix import Base, Cell, Matrix

# Prints [[name, version], ...] of every distribution on the interpreter's path, in path order.
LIST_SCRIPT = (
    "import importlib.metadata as m, json; "
    "print(json.dumps([[d.metadata['Name'] or '', d.version] for d in m.distributions()]))"
)
TIMEOUT = 120


def needs_reading(cells: Sequence[Cell]) -> bool:
    return any(c.base.preinstalled_auto and not c.base.preinstalled for c in cells)


def read_auto(matrix: Matrix, cells: Sequence[Cell], engine: Engine, cache: Path) -> Matrix:
    """The matrix with every `preinstalled: auto` base the cells use read from its image."""
    wanted = {c.base.name for c in cells if c.base.preinstalled_auto and not c.base.preinstalled}
    bases = {
        b.name: replace(b, preinstalled=read_packages(engine, b, cache)) if b.name in wanted else b
        for b in matrix.bases
    }
    return replace(
        matrix,
        bases=tuple(bases.values()),
        cells=tuple(replace(c, base=bases[c.base.name]) for c in matrix.cells),
    )


def read_packages(engine: Engine, base: Base, cache: Path) -> tuple[tuple[str, str], ...]:
    """(canonical name, version) of what the base's Python carries, cached by image id."""
    image_id = str(_inspect(engine, base).get("Id", ""))
    path = cache / "preinstalled" / f"{image_id.removeprefix('sha256:')}-py{base.python}.json"
    if path.is_file():
        cached = _parse(read_text(path, "preinstalled cache"))
        if cached is not None:
            return cached
    argv = [f"python{base.python}", "-I", "-c", LIST_SCRIPT]
    try:
        outcome = engine.run(base.image, argv, timeout=TIMEOUT)
    except EngineFailure as exc:
        raise EngineUnavailable(
            f"bases.{base.name}.preinstalled: auto: the engine failed to run {base.image}: {exc}"
        ) from None
    found = _parse(outcome.stdout) if outcome.exit_code == 0 else None
    if found is None:
        raise InputError(
            f"bases.{base.name}.preinstalled: auto: cannot list the packages of {base.image} "
            f"with python{base.python} (exit {outcome.exit_code}): "
            f"{(outcome.stderr or outcome.stdout).strip()[-300:]}",
            hint="check the base's `python` version, or list its packages (name==version)",
        )
    write_atomic(path, json.dumps(found))
    return found


def _inspect(engine: Engine, base: Base) -> dict[str, Any]:
    from docker.errors import DockerException

    try:
        return engine.inspect(base.image, pull=True)
    except DockerException as exc:
        raise InputError(
            f"bases.{base.name}.preinstalled: auto: cannot get {base.image}: {exc}",
            hint="check the image reference and the registry login, or list the base's "
            "packages (name==version)",
        ) from None


def _parse(text: str) -> tuple[tuple[str, str], ...] | None:
    """The listing as pairs; None when it is not one (a base that printed something else)."""
    lines = text.strip().splitlines()
    try:
        pairs = [(str(n), str(v)) for n, v in json.loads(lines[-1])] if lines else None
    except (ValueError, TypeError):
        return None
    if pairs is None:
        return None
    found: dict[str, str] = {}
    for name, version in pairs:  # the first copy on the path is the one imported
        try:
            found.setdefault(canonicalize_name(name), str(Version(version)))
        except InvalidVersion:
            continue  # not a version pip could pin either
    return tuple(sorted((n, v) for n, v in found.items() if n))
