"""`builder init` then `builder check` against the real index: uv resolves each fixture's
matrix, PyPI answers metadata, and what each fixture plants is found."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from builder.check import Options, check_cells
from builder.matrix import load_matrix
from builder.settings import from_environ
from tests.conftest import run_cli
from tests.unit.test_init import CASES, copy_case, init_case, spec

pytestmark = [pytest.mark.network, pytest.mark.slow]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metadata")  # shared: the cases have packages in common


@pytest.mark.parametrize("case", CASES)
def test_check_finds_what_each_fixture_plants_against_the_real_index(
    case: str, pypi: None, cache: Path, tmp_path: Path
) -> None:
    _, path = init_case(case, tmp_path)
    matrix = load_matrix(path)
    settings = replace(from_environ(os.environ), metadata_cache=cache)
    reports = check_cells(matrix, matrix.cells, Options(settings=settings))
    found = {(f.code, f.package, f.severity) for r in reports for f in r.findings}
    for plant in spec(case)["plants"]:
        want = plant["finding"]
        assert (want["code"], want["package"], want["severity"]) in found, (plant["what"], found)


def test_init_check_exits_as_check_does(pypi: None, cache: Path, tmp_path: Path) -> None:
    where = copy_case("wan-s2v-runpod", tmp_path)
    args = ["init", "--dockerfile", "Dockerfile", "--profile", "wan2.2-s2v", "--check"]
    done = run_cli(*args, "--format", "json", cwd=where, env={"BUILDER_METADATA_CACHE": str(cache)})
    assert done.code == 1, done.err
    (cell,) = json.loads(done.out)["check"]["cells"]
    codes = {(f["code"], f["package"]) for f in cell["findings"]}
    assert {("profile-range", "transformers"), ("profile-range", "numpy")} <= codes
