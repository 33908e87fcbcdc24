"""The venv engine: the same cells without a container engine, one virtual environment per cell,
made with uv from the same lock (`--require-hashes --no-deps`), reused while the lock is unchanged.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.lock import index_args, lock_path, read_lock, uv_binary
from builder.log import Log
from builder.matrix import Cell, Matrix

READY = ".builder-ready"


@dataclass(frozen=True)
class Prepared:
    ok: bool
    python: Path | None = None
    reason: str = ""
    log: str = ""
    seconds: float = 0.0


def find_python(version: str) -> str | None:
    """A host interpreter of the cell's version, or None (the cell is then skipped)."""
    found = shutil.which(f"python{version}")
    if found:
        return found
    done = subprocess.run(
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    )
    return shutil.which("python3") if done.stdout.strip() == version else None


def prepare(
    matrix: Matrix, cell: Cell, root: Path, environ: Mapping[str, str], log: Log
) -> Prepared:
    """Create (or reuse) the cell's venv under `root`, installed exactly from its lock."""
    lock = read_lock(lock_path(matrix, cell))
    if lock is None:
        return Prepared(False, reason=f"no lock for {cell.id}")
    interpreter = find_python(cell.base.python)
    if interpreter is None:
        return Prepared(
            False, reason=f"skipped: Python {cell.base.python} is not available on this host"
        )
    venv = root / f"{cell.id}-{lock.sha256[:12]}"
    python = venv / "bin" / "python"
    if (venv / READY).is_file():
        return Prepared(True, python)
    shutil.rmtree(venv, ignore_errors=True)
    env = {**environ, "UV_PYTHON_DOWNLOADS": "never"}
    if cell.indexes.ca_bundle is not None:
        env["SSL_CERT_FILE"] = str(cell.indexes.ca_bundle)
    for argv in (
        _venv_argv(venv, interpreter),
        _install_argv(cell, python, lock_path(matrix, cell)),
    ):
        log.command(argv)
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            return Prepared(False, reason="venv install failed", log=done.stderr[-4000:])
    (venv / READY).write_text(lock.sha256)
    return Prepared(True, python)


def _venv_argv(venv: Path, interpreter: str) -> list[str]:
    return [uv_binary(), "venv", "--quiet", "--python", interpreter, str(venv)]


def _install_argv(cell: Cell, python: Path, lock: Path) -> list[str]:
    argv = [
        uv_binary(),
        "pip",
        "install",
        "--quiet",
        "--python",
        str(python),
        "--require-hashes",
        "--no-deps",
        "-r",
        str(lock),
    ]
    return argv + index_args(cell)


def network_isolation() -> tuple[str, ...]:
    """A prefix that runs a command without network (`unshare -rn`), or () where that fails."""
    argv = ("unshare", "--net", "--map-root-user")
    if shutil.which("unshare") is None:
        return ()
    done = subprocess.run([*argv, "true"], capture_output=True, check=False)
    return argv if done.returncode == 0 else ()
