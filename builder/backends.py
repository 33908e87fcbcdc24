"""Where `builder validate` runs a cell's probes, behind one interface chosen once per run from
`--engine`: images built on a container engine (`ImageBackend`), or a uv venv per cell on this
host (`VenvBackend`). The cache-key parts that differ between them come from here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from builder import cache, venv
from builder.build import build_cell
from builder.engine import Engine
from builder.log import Log
from builder.matrix import Cell, Matrix
from builder.probe import ImageTarget, Target, VenvTarget
from builder.records import BuildRecord, Status, Verdict
from builder.render import Rendered, app_tree, render_cell, write_app
from builder.resources import SERVE_PROBE, data_dir
from builder.settings import Settings


@dataclass(frozen=True)
class Setup:
    """A target ready for the probes, and the build that made it (None: nothing was built)."""

    target: Target
    build: BuildRecord | None = None


class Backend(Protocol):
    """Where probes run. `render` happens once per cell, before the cache lookup; `prepare`
    only on a miss, and returns the cell's verdict instead when there is nothing to probe."""

    @property
    def engine_version(self) -> str | None: ...

    def render(self, cell: Cell) -> Rendered | None:
        """The cell's build context, or None where nothing is built from one."""
        ...

    def key_parts(self, cell: Cell, rendered: Rendered | None) -> dict[str, Any]:
        """What this backend adds to the cell's result-cache key."""
        ...

    def prepare(self, cell: Cell, inputs: Path, rendered: Rendered | None) -> Setup | Verdict:
        """Build or set up the cell's target; `inputs` holds its lock.txt."""
        ...


@dataclass(frozen=True, kw_only=True)
class ImageBackend:
    """Build each cell's rendered context on `engine`; probe in containers of the image."""

    matrix: Matrix
    engine: Engine
    settings: Settings
    output: Path  # build contexts and build logs
    log: Log
    gpu: bool  # the host has a GPU to give cells that can use one
    engine_version: str | None = None

    def render(self, cell: Cell) -> Rendered:
        secrets = self.settings.secret_files(cell.indexes.ca_bundle).values()
        return render_cell(
            self.matrix, cell, self.output, self.log, secrets=secrets, settings=self.settings
        )

    def key_parts(self, cell: Cell, rendered: Rendered | None) -> dict[str, Any]:
        assert rendered is not None, "an image cell is rendered before its key is made"
        context = cache.tree_digest(rendered.directory)
        return {"context": context, "base": image_identity(self.engine, cell.base.image)}

    def prepare(self, cell: Cell, inputs: Path, rendered: Rendered | None) -> Setup | Verdict:
        built = build_cell(
            self.matrix, cell, self.engine, self.settings, self.output, self.log, rendered=rendered
        )
        if not built.ok:
            return Verdict(Status.FAIL, f"build failed: {built.error}", build=built)
        app = "/app" if cell.app else None
        gpu = self.gpu and cell.gpu != "none"
        target = ImageTarget(
            self.engine,
            built.tag,
            inputs,
            data_dir("validate"),
            gpu,
            app_path=app,
            command=built_command(self.engine, built.tag),
            app_source=rendered.directory / "app" if rendered and cell.app else None,
        )
        return Setup(target, built)


def built_command(engine: Engine, tag: str) -> tuple[str, ...]:
    """What the built image runs, as Docker runs it: its entrypoint, then its cmd, both as
    the image config holds them (a base's ENTRYPOINT kept where the matrix sets none)."""
    config = engine.inspect(tag).get("Config") or {}
    return (*(config.get("Entrypoint") or ()), *(config.get("Cmd") or ()))


def image_command(cell: Cell) -> tuple[str, ...]:
    """What the cell's image runs: its entrypoint, then its cmd (the serve probe runs it)."""
    return (*(cell.image.entrypoint or ()), *(cell.image.cmd or ()))


def image_identity(engine: Engine, image: str) -> str:
    """The base image's id where it is pulled; its reference (marked unresolved) before."""
    from docker.errors import ImageNotFound

    try:
        attrs = engine.inspect(image)
    except ImageNotFound:  # not pulled yet: the build pulls it
        return f"unresolved:{image}"
    return str(attrs.get("Id"))


@dataclass(frozen=True, kw_only=True)
class VenvBackend:
    """A uv venv per cell from the same lock; probes as processes of its interpreter."""

    matrix: Matrix
    settings: Settings
    log: Log
    isolation: tuple[str, ...] = ()  # the prefix that takes the network away, where it works
    engine_version: str | None = None

    def render(self, cell: Cell) -> None:
        return None

    def key_parts(self, cell: Cell, rendered: Rendered | None) -> dict[str, Any]:
        # The image's command and env decide the serve probe's verdict here (in an image,
        # the rendered Dockerfile holds them).
        if SERVE_PROBE not in dict(cell.probes):
            return {"python": cell.base.python}
        serve = {"command": list(image_command(cell)), "env": dict(cell.image.env)}
        return {"python": cell.base.python, "serve": serve}

    def prepare(self, cell: Cell, inputs: Path, rendered: Rendered | None) -> Setup | Verdict:
        prepared = venv.prepare(
            self.matrix, cell, self.settings.venv_cache, self.settings, self.log
        )
        if not prepared.ok or prepared.python is None:
            return _unprepared(cell, prepared)
        target = VenvTarget(
            prepared.python,
            inputs,
            data_dir("validate"),
            str(inputs / "lock.txt"),
            self._app_dir(cell, inputs),
            self.isolation,
            self.settings.environ.get("PATH", "/usr/bin:/bin"),
            command=image_command(cell),
            env=cell.image.env,
        )
        return Setup(target)

    def _app_dir(self, cell: Cell, inputs: Path) -> str | None:
        """The app the probes run in: `app.path` itself, or, for a clone or `app.files`, the
        app as the image would hold it, written under the cell's inputs."""
        if cell.app is None:
            return None
        if cell.app.git is None and not cell.app.files:
            return str(cell.app.path)
        tree = app_tree(cell, self.settings, self.log)
        assert tree is not None
        secrets = self.settings.secret_files(cell.indexes.ca_bundle).values()
        write_app(cell, tree, inputs / "app", list(secrets), self.log)
        return str(inputs / "app")


def _unprepared(cell: Cell, prepared: venv.Prepared) -> Verdict:
    """A venv that could not be made: skipped (no such Python here) or failed, with uv's log."""
    status = Status.SKIPPED if prepared.reason.startswith("skipped") else Status.FAIL
    build = BuildRecord(
        cell_id=cell.id,
        tag="",
        ok=False,
        seconds=prepared.seconds,
        log_tail=prepared.log,
        error=prepared.reason,
    )
    return Verdict(status, prepared.reason, build=build if prepared.log else None)


def open_backend(
    engine: str, matrix: Matrix, settings: Settings, log: Log, output: Path, gpu: bool
) -> Backend:
    """The backend `--engine` names: Docker (connected now, so a missing engine stops the run
    before any cell) or venvs."""
    if engine != "docker":
        return VenvBackend(
            matrix=matrix,
            settings=settings,
            log=log,
            isolation=venv.network_isolation(settings.unshare),
        )
    from builder.engine import DockerEngine

    docker = DockerEngine(settings, log)
    return ImageBackend(
        matrix=matrix,
        engine=docker,
        settings=settings,
        output=output / "build",
        log=log,
        gpu=gpu,
        engine_version=docker.version(),
    )
