"""One cell's crash (a bug in builder) is that cell's error; the other cells still run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from builder import build, check
from builder.check import CellReport, Options
from builder.log import Log
from builder.matrix import parse_matrix
from builder.settings import Settings

MATRIX = """version: 1
bases:
  b: {image: "debian:bookworm", python: "3.11"}
axes:
  base: [b]
  six: ["1.16.0", "1.17.0"]
"""


def matrix_at(tmp_path: Path) -> Any:
    return parse_matrix(MATRIX, tmp_path / "matrix.yaml")


def test_a_crash_checking_one_cell_is_its_internal_error_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    matrix = matrix_at(tmp_path)

    def check_cell(matrix: Any, cell: Any, *args: Any, **kwargs: Any) -> CellReport:
        if cell.id.endswith("1.16.0"):
            raise KeyError("ok")
        return CellReport(id=cell.id, findings=())

    monkeypatch.setattr(check, "check_cell", check_cell)
    log = Log(verbosity=-1, tracebacks=True)
    options = Options(settings=Settings(metadata_cache=tmp_path), offline=True)
    first, second = check.check_cells(matrix, matrix.cells, options, log)
    assert [f.code for f in first.findings] == ["internal-error"] and not first.ok
    assert second.ok
    assert "Traceback" in capsys.readouterr().err  # --debug shows where it crashed


def test_a_crash_building_one_cell_is_its_error_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix = matrix_at(tmp_path)

    def build_cell(matrix: Any, cell: Any, *args: Any, **kwargs: Any) -> build.BuildRecord:
        if cell.id.endswith("1.16.0"):
            raise AttributeError("'NoneType' object has no attribute 'get'")
        return build.BuildRecord(cell_id=cell.id, tag="t", ok=True, seconds=0.0)

    monkeypatch.setattr(build, "build_cell", build_cell)
    monkeypatch.setattr(build, "require_fresh", lambda matrix, cells: None)
    engine: Any = object()
    first, second = build.build_cells(
        matrix, matrix.cells, engine, Settings(), tmp_path, Log(verbosity=-1), jobs=2
    )
    assert not first.ok and first.error and "internal error" in first.error
    assert second.ok
