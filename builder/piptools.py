"""`builder lock --resolver pip-tools`: pip-compile inside a container of the cell's base image,
so the interpreter and platform are exactly the image's. Slow (it downloads and hashes every
wheel) but independent of uv; both write the same lock format.
"""

from __future__ import annotations

import shlex
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from builder.engine import Engine, Mount
from builder.lock import Resolution, explain_failure, write_inputs
from builder.matrix import Cell
from builder.settings import Settings

TIMEOUT = 1800


def compile_script(cell: Cell, upgrade_packages: Sequence[str], previous: bool) -> str:
    """The shell run in the container: a throwaway venv with pip-tools, then pip-compile."""
    args = [
        "--quiet",
        "--generate-hashes",
        "--no-header",
        "--allow-unsafe",
        "--strip-extras",
        "--output-file",
        "/work/out.txt",
        "/work/requirements.in",
    ]
    args += cell.indexes.pip_args(_wheelhouses(cell))
    for name in upgrade_packages:
        args += ["--upgrade-package", name]
    seed = "cp /work/previous.txt /work/out.txt && " if previous else ""
    return (
        f"python{cell.base.python} -m venv /tmp/pt && /tmp/pt/bin/pip install -q pip-tools && "
        f"{seed}/tmp/pt/bin/pip-compile {shlex.join(args)}"
    )


@dataclass(frozen=True)
class PipToolsResolver:
    """pip-compile in throwaway containers of `engine`, one per cell's base image."""

    engine: Engine
    name: ClassVar[str] = "pip-tools"

    def resolve(
        self,
        cell: Cell,
        settings: Settings,
        *,
        previous: str | None = None,
        upgrade: bool = False,  # nothing to pass on: with it, `previous` is None
        upgrade_packages: Sequence[str] = (),
        cancel: threading.Event | None = None,  # the container's TIMEOUT bounds it instead
    ) -> Resolution:
        """pip-compile in a container of the cell's base (network on, CA mounted)."""
        with tempfile.TemporaryDirectory(prefix="builder-piptools-") as tmp:
            work = Path(tmp)
            write_inputs(work, cell)
            if previous is not None:
                (work / "previous.txt").write_text(previous)
            mounts, env = _mounts(cell, settings, work)
            script = compile_script(cell, upgrade_packages, previous is not None)
            outcome = self.engine.run(
                cell.base.image,
                ["sh", "-c", script],
                mounts=mounts,
                network=True,
                timeout=TIMEOUT,
                environment=env,
            )
            if outcome.exit_code != 0:
                return Resolution(ok=False, error=explain_failure(outcome.stderr + outcome.stdout))
            return Resolution(ok=True, body=(work / "out.txt").read_text())


def _mounts(cell: Cell, settings: Settings, work: Path) -> tuple[list[Mount], dict[str, str]]:
    """The work directory, the wheelhouses and the CA bundle, with the environment pip needs."""
    mounts = [Mount(work, "/work", read_only=False)]
    wheelhouses = zip(cell.indexes.wheelhouse, _wheelhouses(cell), strict=True)
    mounts += [Mount(source, target) for source, target in wheelhouses]
    env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    ca = settings.ca_for(cell.indexes.ca_bundle)
    if ca is not None:
        mounts.append(Mount(ca, "/run/builder-ca.pem"))
        env["PIP_CERT"] = "/run/builder-ca.pem"
    return mounts, env


def _wheelhouses(cell: Cell) -> list[str]:
    """Where the cell's wheelhouses are mounted in the container."""
    return [f"/wheelhouse/{i}" for i, _ in enumerate(cell.indexes.wheelhouse)]
