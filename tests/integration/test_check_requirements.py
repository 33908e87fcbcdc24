"""`builder check -r requirements.txt` against the real index: uv resolves the one cell, PyPI
answers metadata, and the findings are those of the equivalent matrix."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from builder.check import Finding, Options, check_cells
from builder.matrix import load_matrix, requirements_matrix
from builder.settings import Settings, from_environ

pytestmark = [pytest.mark.network, pytest.mark.slow]

# A Wan2.2 serving image's requirements: transformers on line 7, below Wan2.2's range.
REQUIREMENTS = """\
# Wan2.2 serving
torch==2.4.1
torchvision==0.19.1
numpy>=1.23.5,<2
diffusers==0.35.1
accelerate==1.1.1
transformers==4.47.0
-r extra.txt
"""
EXTRA = "peft==0.17.0\neinops\n"


def settings(cache: Path) -> Settings:
    return replace(from_environ(os.environ), metadata_cache=cache)


FILE_LINE = re.compile(r"[\w./-]+\.(?:txt|yaml):\d+")


def alike(findings: tuple[Finding, ...], where: str) -> list[tuple[str, ...]]:
    """Each finding with the places it names (any file:line, the cell's `where`) made alike."""
    return [
        (f.severity, f.code, f.package or "", f.message, alike_text(f.source, where))
        for f in findings
    ]


def alike_text(text: str, where: str) -> str:
    return FILE_LINE.sub("<where>", text.replace(where, "<where>"))


def test_check_r_finds_what_the_equivalent_matrix_finds(
    pypi: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "requirements.txt").write_text(REQUIREMENTS)
    (tmp_path / "extra.txt").write_text(EXTRA)
    lines = [line for line in (REQUIREMENTS + EXTRA).splitlines() if line[:1] not in ("#", "-")]
    (tmp_path / "matrix.yaml").write_text(
        "version: 1\nbases:\n  py310-cpu: {image: scratch, python: '3.10'}\n"
        "axes:\n  base: [py310-cpu]\nprofiles: [wan2.2]\nrequirements:\n"
        + "".join(f"  - {line!r}\n" for line in lines)
    )
    one_cell = requirements_matrix(
        [Path("requirements.txt")], python="3.10", profiles=["wan2.2"], known_profiles=["wan2.2"]
    )
    matrix = load_matrix(Path("matrix.yaml"))
    options = Options(settings=settings(tmp_path / "metadata"))

    (from_files,) = check_cells(one_cell, one_cell.cells, options)
    (from_matrix,) = check_cells(matrix, matrix.cells, options)

    assert not from_files.ok
    (transformers,) = [f for f in from_files.findings if f.code == "profile-range"]
    assert transformers.package == "transformers"
    assert "transformers==4.51.3" in transformers.hint
    assert "requirements.txt:7" in transformers.hint
    assert alike(from_files.findings, one_cell.where(one_cell.cells[0])) == alike(
        from_matrix.findings, "matrix.yaml:5"
    )
