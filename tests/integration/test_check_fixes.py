"""Fixes that hold, against the real index: every fix `check` offers for a fixture (the seed
cases of tests/fixtures/check/ and the community cases of tests/fixtures/check/fixes/), applied
to its cell and checked again with real uv and PyPI, clears its finding and adds no error."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from builder.check import CellReport, Options, check_cells
from builder.check.fixes import apply
from builder.matrix import Cell, Matrix, load_matrix
from builder.settings import Settings, from_environ

CHECK = Path(__file__).resolve().parents[1] / "fixtures" / "check"
CASES = sorted(
    str(p.relative_to(CHECK))
    for p in (*CHECK.iterdir(), *(CHECK / "fixes").iterdir())
    if (p / "matrix.yaml").is_file()
)

pytestmark = [pytest.mark.network, pytest.mark.slow]


def settings(cache: Path) -> Settings:
    return replace(from_environ(os.environ), metadata_cache=cache)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metadata")  # shared: the cases have packages in common


def check(matrix: Matrix, cells: list[Cell], cache: Path) -> list[CellReport]:
    return check_cells(matrix, cells, Options(settings=settings(cache)))


def problems(report: CellReport, severity: str = "error") -> set[tuple[str, str | None, str]]:
    """A report's problems as the fix search tells them apart across variants."""
    return {
        (
            f.code,
            None if f.code == "unresolvable" else f.package,
            f.source if f.code == "known-bad" else "",
        )
        for f in report.findings
        if severity in ("any", f.severity)
    }


@pytest.mark.parametrize("case", CASES)
def test_every_fix_offered_holds_when_applied_and_checked_again(
    case: str, pypi: None, cache: Path
) -> None:
    matrix = load_matrix(CHECK / case / "matrix.yaml")
    reports = dict(
        zip([c.id for c in matrix.cells], check(matrix, list(matrix.cells), cache), strict=True)
    )
    offered = [(c, f) for c in matrix.cells for f in reports[c.id].findings if f.fix]
    for cell, finding in offered:
        (again,) = check(matrix, [apply(cell, finding.fix or ())], cache)
        assert problems(again) <= problems(reports[cell.id]), (finding.fix, again.findings)
        gone = CellReport(id=cell.id, findings=(finding,))
        assert not problems(gone, "any") & problems(again, "any"), (finding.fix, again.findings)
    if case.startswith("fixes/"):
        for want in yaml.safe_load((CHECK / case / "expected.yaml").read_text()):
            (found,) = [
                f
                for f in reports[want["cell"]].findings
                if (f.code, f.package) == (want["code"], want["package"])
            ]
            assert [c.line for c in found.fix or ()] == want["fix"], found.hint
    else:  # each seed case's first error gets a fix (decord's and flash-attn's are not pins)
        want = yaml.safe_load((CHECK / case / "expected.yaml").read_text())
        seed = [f for f in reports[want["seed"]].findings if f.code == want["code"]]
        assert seed[0].fix or want["code"] in ("no-wheel", "needs-build"), seed[0].hint
