"""`builder check` against the real index: uv resolves each seed case, PyPI answers metadata."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from builder.check import Options, check_cells
from builder.matrix import load_matrix
from builder.settings import Settings, from_environ

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "check"
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "matrix.yaml").is_file())

pytestmark = [pytest.mark.network, pytest.mark.slow]


def settings(cache: Path) -> Settings:
    return replace(from_environ(os.environ), metadata_cache=cache)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metadata")  # shared: the cases have packages in common


@pytest.mark.parametrize("name", CASES)
def test_the_seed_case_fails_and_its_fix_passes_against_the_real_index(
    name: str, pypi: None, cache: Path
) -> None:
    want = yaml.safe_load((FIXTURES / name / "expected.yaml").read_text())
    matrix = load_matrix(FIXTURES / name / "matrix.yaml")
    reports = {
        r.id: r for r in check_cells(matrix, matrix.cells, Options(settings=settings(cache)))
    }
    seed = [f for f in reports[want["seed"]].findings if f.code == want["code"]]
    assert seed and seed[0].severity == "error", reports[want["seed"]].findings
    assert seed[0].package == want["package"]
    assert want["hint"] in seed[0].hint
    fixed = reports[want["fixed"]]
    assert fixed.ok, [(f.code, f.message) for f in fixed.findings]


def test_a_warm_check_reads_only_the_cache(pypi: None, cache: Path) -> None:
    matrix = load_matrix(FIXTURES / "transformers-wan22" / "matrix.yaml")
    online = check_cells(matrix, matrix.cells, Options(settings=settings(cache)))
    offline = check_cells(matrix, matrix.cells, Options(settings=settings(cache), offline=True))
    assert [r.to_json() for r in offline] == [r.to_json() for r in online]
