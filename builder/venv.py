"""The venv engine: the same cells without a container engine, one virtual environment per cell,
made with uv from the same lock (`--require-hashes --no-deps`), reused while the lock is unchanged.
With `reuse_preinstalled` the venv sees the host interpreter's own packages (the "base" here),
and the lock's `# from base` pins are left to it, as in the image.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from builder import proc
from builder.files import ensure_dir
from builder.lock import lock_path, parse_lock, read_lock, uv_env
from builder.log import Log
from builder.matrix import Cell, Matrix
from builder.settings import Settings

READY = ".builder-ready"


@dataclass(frozen=True)
class Prepared:
    ok: bool
    python: Path | None = None
    reason: str = ""
    log: str = ""
    seconds: float = 0.0


def find_python(version: str, path: str | None) -> str | None:
    """A host interpreter of the cell's version on `path` (PATH), or None (then skipped)."""
    found = shutil.which(f"python{version}", path=path)
    python3 = shutil.which("python3", path=path)
    if found or python3 is None:
        return found
    done = proc.run([python3, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    return python3 if done.stdout.strip() == version else None


def prepare(matrix: Matrix, cell: Cell, root: Path, settings: Settings, log: Log) -> Prepared:
    """Create (or reuse) the cell's venv under `root`, installed exactly from its lock."""
    lock = read_lock(lock_path(matrix, cell))
    if lock is None:
        return Prepared(False, reason=f"no lock for {cell.id}")
    interpreter = find_python(cell.base.python, settings.environ.get("PATH"))
    if interpreter is None:
        return Prepared(
            False, reason=f"skipped: Python {cell.base.python} is not available on this host"
        )
    venv = root / f"{cell.id}-{lock.sha256[:12]}"
    python = venv / "bin" / "python"
    if (venv / READY).is_file():
        return Prepared(True, python)
    shutil.rmtree(venv, ignore_errors=True)
    env = uv_env(cell, settings)
    reuse = ["--system-site-packages"] if cell.base.reuse_preinstalled else []
    make = [settings.uv, "venv", "--quiet", *reuse, "--python", interpreter, str(venv)]
    installed = ensure_dir(root) / f"{venv.name}.install.txt"  # the lock less the base's
    installed.write_text("".join(p.block for p in parse_lock(lock.text) if not p.from_base))
    for argv in (make, _install_argv(cell, settings.uv, python, installed)):
        log.command(argv)
        done = proc.run(argv, env=env)
        if done.returncode != 0:
            return Prepared(False, reason="venv install failed", log=done.stderr[-4000:])
    (venv / READY).write_text(lock.sha256)
    return Prepared(True, python)


def _install_argv(cell: Cell, uv: str, python: Path, lock: Path) -> list[str]:
    argv = [
        uv,
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
    return argv + cell.indexes.pip_args()


def network_isolation(unshare: str | None) -> tuple[str, ...]:
    """A prefix that runs a command without network (`unshare -rn`), or () where that fails."""
    if unshare is None:
        return ()
    argv = (unshare, "--net", "--map-root-user")
    done = proc.run([*argv, "true"])
    return argv if done.returncode == 0 else ()
