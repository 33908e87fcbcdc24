"""`builder lock --resolver pip-tools`: pip-compile inside a container of the cell's base image,
so the interpreter and platform are exactly the image's. Slow (it downloads and hashes every
wheel) but independent of uv; both write the same lock format.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path

from builder.engine import Engine, Mount
from builder.lock import Resolution, explain_failure
from builder.matrix import Cell, Matrix
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
    if cell.indexes.index_url:
        args += ["--index-url", cell.indexes.index_url]
    for url in cell.indexes.extra_index_urls:
        args += ["--extra-index-url", url]
    for i, _ in enumerate(cell.indexes.wheelhouse):
        args += ["--find-links", f"/wheelhouse/{i}"]
    for name in upgrade_packages:
        args += ["--upgrade-package", name]
    seed = "cp /work/previous.txt /work/out.txt && " if previous else ""
    return (
        f"python{cell.base.python} -m venv /tmp/pt && /tmp/pt/bin/pip install -q pip-tools && "
        f"{seed}/tmp/pt/bin/pip-compile {shlex.join(args)}"
    )


def resolve_pip_tools(
    matrix: Matrix,
    cell: Cell,
    settings: Settings,
    engine: Engine,
    *,
    previous: str | None = None,
    upgrade_packages: Sequence[str] = (),
) -> Resolution:
    """pip-compile in a throwaway container of the cell's base (network on, CA mounted)."""
    with tempfile.TemporaryDirectory(prefix="builder-piptools-") as tmp:
        work = Path(tmp)
        (work / "requirements.in").write_text("\n".join(cell.requirement_lines()) + "\n")
        if previous is not None:
            (work / "previous.txt").write_text(previous)
        mounts = [Mount(work, "/work", read_only=False)]
        mounts += [Mount(w, f"/wheelhouse/{i}") for i, w in enumerate(cell.indexes.wheelhouse)]
        env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        ca = settings.ca_for(cell.indexes.ca_bundle)
        if ca is not None:
            mounts.append(Mount(ca, "/run/builder-ca.pem"))
            env["PIP_CERT"] = "/run/builder-ca.pem"
        script = compile_script(cell, upgrade_packages, previous is not None)
        outcome = engine.run(
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
