"""The command line. Each command parses its options and calls one function; only `main` exits.

Exit codes: 0 all good, 1 at least one cell failed, 2 invalid input (usage, matrix, profile),
3 container engine unavailable, 4 internal error (a bug; traceback only with --debug).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from builder import __version__, errors
from builder.log import Log, from_env
from builder.settings import Settings, from_environ

if TYPE_CHECKING:
    from builder.lock import Resolver
    from builder.matrix import Cell, Matrix

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES = """\b
Exit codes:
  0  all good
  1  at least one cell failed
  2  invalid input (usage, matrix, profile, lock)
  3  container engine unavailable
  4  internal error (a bug; traceback with --debug)
"""


def matrix_option(f: F) -> F:
    return click.option(
        "-m",
        "--matrix",
        "matrix_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=Path("matrix.yaml"),
        show_default=True,
        help="The matrix file.",
    )(f)


def cell_option(f: F) -> F:
    return click.option(
        "--cell",
        "cells",
        multiple=True,
        metavar="ID",
        help="A cell id or glob (repeatable). Default: every cell.",
    )(f)


def jobs_option(default: int, text: str) -> Callable[[F], F]:
    return click.option(
        "-j", "--jobs", type=click.IntRange(min=1), default=default, show_default=True, help=text
    )


def output_dir_option(default: str, text: str) -> Callable[[F], F]:
    return click.option(
        "-o",
        "--output",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path(default),
        show_default=True,
        help=text,
    )


text_or_json = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)


def _log(ctx: click.Context) -> Log:
    log: Log = ctx.obj["log"]
    return log


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj["settings"]
    return settings


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="builder")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.option("-v", "--verbose", count=True, help="More output (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and results.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int, quiet: bool) -> None:
    """Build and validate model-serving images across a matrix of bases and pins."""
    state = ctx.ensure_object(dict)  # main() passes a dict and reads `debug` back on errors
    state["debug"] = debug
    environ = dict(os.environ)
    state["log"] = from_env(environ, -1 if quiet else verbose, tracebacks=debug)
    state["settings"] = from_environ(environ, state.get("argv", ()), debug=debug)


@cli.command(epilog=EXIT_CODES)
@matrix_option
@cell_option
@output_dir_option("build", "Directory for DIR/<cell-id>/Dockerfile and its build context.")
@click.pass_context
def render(ctx: click.Context, matrix_path: Path, cells: tuple[str, ...], output: Path) -> int:
    """Render each cell's multi-stage Dockerfile and build context."""
    from builder.matrix import load_matrix, select_cells
    from builder.render import render_cell

    matrix = load_matrix(matrix_path)
    settings = _settings(ctx)
    for cell in select_cells(matrix, cells):
        secrets = settings.secret_files(cell.indexes.ca_bundle).values()
        written = render_cell(matrix, cell, output, _log(ctx), secrets=secrets, settings=settings)
        click.echo(str(written.dockerfile))
    return errors.OK


@cli.command("matrix", epilog=EXIT_CODES)
@matrix_option
@cell_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "github", "bake"]),
    default="json",
    show_default=True,
    help="json: the cells; github: a strategy.matrix for fan-out jobs (one line); "
    "bake: a docker-bake.json with one target per cell.",
)
@click.pass_context
def matrix_cmd(ctx: click.Context, matrix_path: Path, cells: tuple[str, ...], fmt: str) -> int:
    """Print the expanded cells of the matrix, or a CI fan-out of them."""
    from builder.fanout import render_fanout
    from builder.matrix import load_matrix, select_cells

    matrix = load_matrix(matrix_path)
    selected = select_cells(matrix, cells)
    click.echo(render_fanout(matrix, selected, fmt, _settings(ctx)))
    return errors.OK


@cli.command(epilog=EXIT_CODES)
@matrix_option
@cell_option
@click.option("--upgrade", is_flag=True, help="Re-resolve everything, ignoring current pins.")
@click.option(
    "--upgrade-package",
    "upgrade_packages",
    multiple=True,
    metavar="NAME",
    help="Bump one package, keeping every other pin where possible (repeatable).",
)
@click.option(
    "--resolver",
    type=click.Choice(["uv", "pip-tools"]),
    default="uv",
    show_default=True,
    help="uv resolves on the host for the cell's Python and platform; pip-tools runs "
    "pip-compile inside a container of the cell's base image.",
)
@jobs_option(4, "Cells resolved at once (resolution mostly waits on the index).")
@text_or_json
@click.pass_context
def lock(
    ctx: click.Context,
    matrix_path: Path,
    cells: tuple[str, ...],
    upgrade: bool,
    upgrade_packages: tuple[str, ...],
    resolver: str,
    jobs: int,
    fmt: str,
) -> int:
    """Write hashed per-cell locks to constraints/<cell-id>.txt and print what changed."""
    from builder.lock import lock_cells

    if upgrade and upgrade_packages:
        raise errors.InputError("--upgrade and --upgrade-package exclude each other")
    matrix, selected = _load(ctx, matrix_path, cells)
    results = lock_cells(
        matrix,
        selected,
        _settings(ctx),
        _log(ctx),
        upgrade=upgrade,
        upgrade_packages=upgrade_packages,
        resolver=_resolver(ctx, resolver),
        jobs=jobs,
    )
    if fmt == "json":
        click.echo(json.dumps({"cells": [r.to_json() for r in results]}, indent=2))
    else:
        for result in results:
            click.echo(result.summary())
    return errors.OK if all(r.ok for r in results) else errors.CELLS_FAILED


def _load(
    ctx: click.Context, matrix_path: Path, patterns: tuple[str, ...], engine: bool = True
) -> tuple[Matrix, tuple[Cell, ...]]:
    """The matrix and the cells `--cell` selects, with each `preinstalled: auto` base they use
    read from its image (on an engine that only runs containers; none there: exit 3)."""
    from builder.baseimage import needs_reading, read_auto
    from builder.engine import DockerEngine
    from builder.matrix import load_matrix, select_cells

    matrix = load_matrix(matrix_path)
    selected = select_cells(matrix, patterns)
    if not needs_reading(selected):
        return matrix, selected
    if not engine:
        raise errors.InputError(
            "preinstalled: auto reads the base image, which needs a container engine",
            hint="use --engine docker, or list the base's packages (name==version)",
        )
    settings = _settings(ctx)
    docker = DockerEngine(settings, _log(ctx), builds=False)
    matrix = read_auto(matrix, selected, docker, settings.metadata_cache)
    return matrix, select_cells(matrix, patterns)


def _resolver(ctx: click.Context, name: str) -> Resolver:
    """`--resolver`, built once: uv on the host, or pip-tools in containers of a Docker
    engine that only runs containers (no builds)."""
    from builder.engine import DockerEngine
    from builder.lock import UV
    from builder.piptools import PipToolsResolver

    if name == "uv":
        return UV
    return PipToolsResolver(DockerEngine(_settings(ctx), _log(ctx), builds=False))


@cli.command(epilog=EXIT_CODES)
@matrix_option
@cell_option
@jobs_option(1, "Cells built at once.")
@click.option("--push", is_flag=True, help="Push each built image to the registry.")
@click.option("--registry", metavar="REPO", help="Image repository (overrides matrix `registry`).")
@click.option(
    "--no-cache", is_flag=True, help="Ignore BuildKit's layer cache (catch upstream drift)."
)
@output_dir_option("build", "Build contexts and logs.")
@text_or_json
@click.pass_context
def build(
    ctx: click.Context,
    matrix_path: Path,
    cells: tuple[str, ...],
    jobs: int,
    push: bool,
    registry: str | None,
    no_cache: bool,
    output: Path,
    fmt: str,
) -> int:
    """Build each cell's image with BuildKit from its lock (refuses stale or missing locks)."""
    from builder.build import build_cells
    from builder.engine import DockerEngine

    matrix, selected = _load(ctx, matrix_path, cells)
    if push and not (registry or matrix.registry):
        raise errors.InputError(
            "--push needs a registry: set `registry` in the matrix or pass --registry"
        )
    engine = DockerEngine(_settings(ctx), _log(ctx))
    records = build_cells(
        matrix,
        selected,
        engine,
        _settings(ctx),
        output,
        _log(ctx),
        jobs=jobs,
        push=push,
        registry=registry,
        no_cache=no_cache,
    )
    if fmt == "json":
        click.echo(json.dumps({"cells": [r.to_json() for r in records]}, indent=2))
    for r in records if fmt == "text" else ():
        size = f"{(r.size or 0) / 1e6:.0f} MB" if r.ok else r.error
        click.echo(
            f"{'ok  ' if r.ok else 'FAIL'} {r.cell_id}  {r.tag}  {size}  {r.seconds:.1f}s"
            + ("" if r.ok else "\n" + r.log_tail)
        )
    return errors.OK if all(r.ok for r in records) else errors.CELLS_FAILED


@cli.command(epilog=EXIT_CODES)
@matrix_option
@cell_option
@click.option(
    "--engine",
    type=click.Choice(["docker", "venv"]),
    default="docker",
    show_default=True,
    help="docker: build each cell and probe inside its image. venv: no container "
    "engine; a uv venv per cell from the same lock, probes as processes.",
)
@output_dir_option("reports", "Where report.json, build contexts and logs go.")
@click.option(
    "--no-cache",
    is_flag=True,
    help="Ignore stored results: build (layer cache still applies) and probe every cell again.",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Result cache directory (default: $BUILDER_RESULT_CACHE or .builder-cache).",
)
@click.option("--build-anyway", is_flag=True, help="Build cells even when `check` finds errors.")
@jobs_option(2, "Cells in flight: one builds while another is probed (half of them build).")
@click.pass_context
def validate(
    ctx: click.Context,
    matrix_path: Path,
    cells: tuple[str, ...],
    engine: str,
    output: Path,
    no_cache: bool,
    cache_dir: Path | None,
    build_anyway: bool,
    jobs: int,
) -> int:
    """Lock (if missing), check, build and probe each cell; write DIR/report.json."""
    from builder.pipeline import ValidateOptions
    from builder.pipeline import validate as run_validate

    settings = _settings(ctx)
    matrix, selected = _load(ctx, matrix_path, cells, engine == "docker")
    cache_dir = cache_dir or settings.result_cache
    options = ValidateOptions(
        engine=engine,
        output=output,
        cache_dir=cache_dir,
        use_cache=not no_cache,
        build_anyway=build_anyway,
        jobs=jobs,
    )
    report = run_validate(matrix, selected, options, settings, _log(ctx))
    for cell in report["cells"]:
        mark = "cached " if cell["cache"]["hit"] else ""
        click.echo(f"{cell['status']:<7} {cell['id']}  {mark}{cell['reason']}")
    click.echo(f"report: {output / 'report.json'}")
    bad = [c for c in report["cells"] if c["status"] in ("fail", "error")]
    return errors.CELLS_FAILED if bad else errors.OK


@cli.command("report", epilog=EXIT_CODES)
@click.argument(
    "reports",
    nargs=-1,
    required=True,
    metavar="REPORT_JSON...",
    type=click.Path(path_type=Path, dir_okay=False),
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html", "junit", "json"]),
    help="Default: md; json with --merge. --diff prints md or json.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write here (atomically) instead of stdout.",
)
@click.option(
    "--diff",
    "old",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="OLD_JSON",
    help="Show what changed since OLD_JSON; exit 1 if something that passed there fails now.",
)
@click.option(
    "--merge",
    is_flag=True,
    help="Merge the per-cell reports of fan-out jobs (a later duplicate cell wins).",
)
@click.pass_context
def report_cmd(
    ctx: click.Context,
    reports: tuple[Path, ...],
    fmt: str | None,
    output: Path | None,
    old: Path | None,
    merge: bool,
) -> int:
    """Render a report.json as Markdown, HTML, JUnit XML or JSON; diff or merge reports."""
    from builder.files import write_atomic
    from builder.report import run_report

    text, code = run_report(reports, fmt=fmt, merge=merge, old=old, log=_log(ctx))
    if output is None:
        click.echo(text, nl=False)
    else:
        write_atomic(output, text)
    return code


@cli.command(epilog=EXIT_CODES)
def schema() -> int:
    """Print the JSON Schema of matrix.yaml (for yaml-language-server and editors)."""
    from builder.schema import matrix_schema

    click.echo(json.dumps(matrix_schema(), indent=2))
    return errors.OK


@cli.command("scan", epilog=EXIT_CODES)
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--entry",
    "entries",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Entry file (repeatable). Default: every .py at the top of PATH.",
)
@click.option(
    "-r",
    "--requirements",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="A requirements file to compare with (repeatable).",
)
@text_or_json
@click.option("--python", metavar="X.Y", help="Target Python. Default: the running one.")
@click.option(
    "--platform",
    default="linux/amd64",
    show_default=True,
    metavar="PLATFORM",
    help="Target platform the requirements are resolved for (a base's `platform`).",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Use cached resolutions and wheel file lists only (uv runs with its cache only).",
)
@click.option(
    "--profile-draft",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Also write a draft model profile (YAML) here; a directory gets <name>.yaml.",
)
@click.pass_context
def scan_cmd(
    ctx: click.Context,
    path: Path,
    entries: tuple[Path, ...],
    requirements: tuple[Path, ...],
    fmt: str,
    python: str | None,
    platform: str,
    offline: bool,
    profile_draft: Path | None,
) -> int:
    """Follow PATH's imports statically and check them against its requirements, resolved with
    uv for the target Python and platform (cached in $BUILDER_METADATA_CACHE).

    Exits 1 when a local module is missing or a module-level import is not declared.
    """
    from builder.scan import ScanOptions, run_scan, uv_sources

    options = ScanOptions(
        path=path, entries=entries, requirements=requirements, python=python, platform=platform
    )
    sources = uv_sources(_settings(ctx), offline=offline)
    output, code = run_scan(options, fmt, profile_draft, sources)
    click.echo(output)
    return code


@cli.command("init", epilog=EXIT_CODES)
@click.option(
    "--dockerfile",
    "dockerfiles",
    multiple=True,
    metavar="FILE[=TAG]",
    help="A Dockerfile to translate (repeatable; each is a base). FILE=TAG: it builds TAG, "
    "which another Dockerfile's FROM names.",
)
@click.option(
    "-r",
    "--requirements",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="A requirements file whose lines join `requirements` (repeatable).",
)
@click.option(
    "--repo",
    type=click.Path(path_type=Path),
    help="The model's code: scan it to draft requirements and a profile.",
)
@click.option(
    "--entry",
    "entries",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="An entry file of --repo (repeatable). Default: every .py at its top.",
)
@click.option("--profile", "profiles", multiple=True, metavar="NAME", help="A model profile.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("matrix.yaml"),
    show_default=True,
    help="The matrix file to write (refused if it exists, unless --force).",
)
@click.option("--force", is_flag=True, help="Replace the output (and the drafted profile).")
@click.option("--check", "run_check", is_flag=True, help="Run `builder check` on the result.")
@click.option("--offline", is_flag=True, help="With --check: cached index metadata only.")
@text_or_json
@click.pass_context
def init_cmd(
    ctx: click.Context,
    dockerfiles: tuple[str, ...],
    requirements: tuple[Path, ...],
    repo: Path | None,
    entries: tuple[Path, ...],
    profiles: tuple[str, ...],
    output: Path,
    force: bool,
    run_check: bool,
    offline: bool,
    fmt: str,
) -> int:
    """Draft a matrix.yaml from your Dockerfiles and requirements files.

    Every translated line names its source (`# Dockerfile:53`); what cannot be translated
    faithfully is listed on stderr (and in --format json). With --check, exits as check does.
    """
    from builder.init import InitOptions, run_init
    from builder.init.gitref import ls_remote

    if not dockerfiles:
        raise errors.InputError(
            "no --dockerfile given", hint="builder init --dockerfile Dockerfile"
        )
    if entries and repo is None:
        raise errors.InputError("--entry needs --repo (the entries are files of the repo)")
    settings = _settings(ctx)
    options = InitOptions(
        dockerfiles=dockerfiles,
        requirements=requirements,
        repo=repo,
        entries=entries,
        profiles=profiles,
        output=output,
        force=force,
    )
    result = run_init(options, ls_remote(settings.git, settings.environ))
    checked = _check_matrix(ctx, output, offline) if run_check else None
    if fmt == "json":
        data = {**result.to_json(), "check": json.loads(checked[0]) if checked else None}
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(result.report(), err=True)
        click.echo(f"wrote {output}" + (f"\n{checked[1]}" if checked else ""))
    return checked[2] if checked else errors.OK


def _check_matrix(ctx: click.Context, matrix_path: Path, offline: bool) -> tuple[str, str, int]:
    """`builder check` on a matrix: (its JSON, its text, its exit code)."""
    from builder.check import Options, check_cells, render_json, render_text

    matrix, selected = _load(ctx, matrix_path, ())
    options = Options(settings=_settings(ctx), offline=offline)
    reports = check_cells(matrix, selected, options, _log(ctx))
    code = errors.OK if all(r.ok for r in reports) else errors.CELLS_FAILED
    return render_json(reports), render_text(reports), code


@cli.command("inspect", epilog=EXIT_CODES)
@click.argument("model_dir", type=click.Path(path_type=Path))
@text_or_json
@click.option(
    "--gpu-memory-gb",
    type=click.FloatRange(min=0, min_open=True),
    metavar="N",
    help="GPU memory (GiB) to compare the bf16 weights with.",
)
def inspect_cmd(model_dir: Path, fmt: str, gpu_memory_gb: float | None) -> int:
    """Inspect a model directory: layout, pipeline class, profile, weights, memory.

    Exits 1 when files are missing or the weights do not fit the given GPU memory.
    """
    from builder.modeldir import run_inspect

    output, code = run_inspect(model_dir, fmt, gpu_memory_gb)
    click.echo(output)
    return code


# `check -r`'s options that state the one cell's base and profiles: {parameter: flag}
_CELL_OPTIONS = {
    "base_image": "--base",
    "python": "--python",
    "cuda": "--cuda",
    "platform": "--platform",
    "profile_names": "--profile",
}


@cli.command(epilog=EXIT_CODES)
@matrix_option
@cell_option
@click.option(
    "-r",
    "--requirements",
    "requirement_files",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Check requirement files instead of a matrix, as one cell on the base the options "
    "below state (repeatable; excludes -m).",
)
@click.option("--base", "base_image", metavar="IMAGE", help="With -r: the image (default scratch).")
@click.option("--python", metavar="X.Y", help="With -r: the base's Python (default 3.11).")
@click.option("--cuda", metavar="X.Y", help="With -r: the base's CUDA (default none: CPU).")
@click.option(
    "--platform", metavar="OS/ARCH", help="With -r: the base's platform (default linux/amd64)."
)
@click.option(
    "--profile",
    "profile_names",
    multiple=True,
    metavar="NAME",
    help="With -r: a model profile the cell is held to (repeatable).",
)
@text_or_json
@click.option("--offline", is_flag=True, help="Use cached index metadata only.")
@jobs_option(4, "Cells checked at once (resolution mostly waits on the index).")
@click.pass_context
def check(
    ctx: click.Context,
    matrix_path: Path,
    cells: tuple[str, ...],
    requirement_files: tuple[Path, ...],
    base_image: str | None,
    python: str | None,
    cuda: str | None,
    platform: str | None,
    profile_names: tuple[str, ...],
    fmt: str,
    offline: bool,
    jobs: int,
) -> int:
    """Check each cell against its model profiles and the index, without building anything.

    With -r, check requirement files as the one cell of a matrix whose `requirements` are
    `-r FILE`. Exits 1 when any cell has an error finding. Metadata is cached in
    $BUILDER_METADATA_CACHE (default $BUILDER_CACHE_DIR/metadata, ~/.cache/builder/metadata).
    """
    from builder.check import Options, check_cells, render_json, render_text

    if requirement_files:
        base = {"image": base_image, "python": python, "cuda": cuda, "platform": platform}
        matrix, selected = _requirements_matrix(ctx, requirement_files, cells, base, profile_names)
    else:
        _refuse_cell_options(ctx)
        matrix, selected = _load(ctx, matrix_path, cells)
    options = Options(settings=_settings(ctx), offline=offline, jobs=jobs)
    reports = check_cells(matrix, selected, options, _log(ctx))
    click.echo(render_json(reports) if fmt == "json" else render_text(reports))
    return errors.OK if all(r.ok for r in reports) else errors.CELLS_FAILED


def _requirements_matrix(
    ctx: click.Context,
    files: tuple[Path, ...],
    cells: tuple[str, ...],
    base: dict[str, str | None],
    profiles: tuple[str, ...],
) -> tuple[Matrix, tuple[Cell, ...]]:
    """`check -r`: the one-cell matrix of the files (`matrix.requirements_matrix`)."""
    from builder.matrix import requirements_matrix
    from builder.profiles import load_profiles

    if ctx.get_parameter_source("matrix_path") is not click.core.ParameterSource.DEFAULT:
        raise errors.InputError(
            "-r and -m exclude each other: check requirement files or a matrix",
            hint="a matrix takes requirement files as `requirements: [-r FILE]`",
        )
    if cells:
        raise errors.InputError("--cell selects a matrix's cells; -r makes one cell")
    matrix = requirements_matrix(
        files, **base, profiles=profiles, known_profiles=tuple(load_profiles())
    )
    return matrix, matrix.cells


def _refuse_cell_options(ctx: click.Context) -> None:
    """The base and profile options describe the cell of -r files; a matrix states its own."""
    given = [
        flag
        for name, flag in _CELL_OPTIONS.items()
        if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
    ]
    if given:
        raise errors.InputError(
            f"{given[0]} needs -r FILE: it describes the cell of requirement files, and a "
            "matrix states its cells in `bases` and `profiles`",
            hint=f"add -r FILE, or leave out {', '.join(given)}",
        )


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that clean-ups run (temp dirs, child processes)."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI and exit with the documented code."""
    args = list(sys.argv[1:] if argv is None else argv)
    state: dict[str, Any] = {"argv": tuple(args), "debug": False}
    log = from_env(dict(os.environ), 0)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = cli.main(args=args, prog_name="builder", standalone_mode=False, obj=state)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = errors.INVALID_INPUT
    except click.Abort:
        log.error("interrupted")
        code = 130
    except Terminated:
        log.error("terminated")
        code = 143
    except errors.BuilderError as exc:
        log.error(exc.message, exc.hint)
        code = exc.exit_code
    except Exception as exc:  # a bug: say so, traceback only when asked
        if state["debug"]:
            traceback.print_exc()
        log.error(
            f"internal error: {type(exc).__name__}: {exc}", "re-run with --debug and report it"
        )
        code = errors.INTERNAL
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code if isinstance(code, int) else errors.OK)
