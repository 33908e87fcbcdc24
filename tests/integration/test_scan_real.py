"""`builder scan` with the real uv and PyPI: each fixture repository's requirements resolved
for its Python and platform, the import names read from the resolved wheels, and the undeclared
imports equal to the case's truth; the second run reads builder's cache, offline too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, run_cli

pytestmark = [pytest.mark.network, pytest.mark.slow]

CASES_DIR = FIXTURES / "scan"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "truth.json").is_file())


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One builder cache for the module: each case's first scan fills it."""
    return tmp_path_factory.mktemp("scan-cache")


def scan(name: str, cache: Path, *more: str) -> dict[str, Any]:
    case = CASES_DIR / name
    truth = json.loads((case / "truth.json").read_text())
    entries = [arg for entry in truth["entries"] for arg in ("--entry", entry)]
    done = run_cli(
        "scan",
        str(case),
        *entries,
        "-r",
        str(case / truth["requirements"]),
        "--python",
        truth["python"],
        "--platform",
        truth["platform"],
        "--format",
        "json",
        *more,
        env={"BUILDER_CACHE_DIR": str(cache)},
        timeout=600,
    )
    assert done.code in (0, 1), done.err
    report: dict[str, Any] = json.loads(done.out)
    return report


def undeclared(report: dict[str, Any]) -> dict[str, list[str]]:
    groups = report["requirements"]["undeclared"]
    return {k: sorted(i["import"].split(".")[0] for i in v) for k, v in groups.items()}


@pytest.mark.parametrize("name", CASES)
def test_a_real_resolution_gives_the_truth_and_is_cached(name: str, cache: Path) -> None:
    truth = json.loads((CASES_DIR / name / "truth.json").read_text())
    first = scan(name, cache)
    # uv, or the cache when an earlier case declared the same requirements
    assert first["requirements"]["resolution"]["origin"] in ("uv", "cache")
    assert undeclared(first) == {k: sorted(v) for k, v in truth["undeclared"].items()}
    transitive = sorted(t["import"] for t in first["requirements"]["transitive"])
    assert transitive == sorted(truth["transitive"])
    again = scan(name, cache, "--offline")
    assert again["requirements"]["resolution"]["origin"] == "cache"
    assert again["third_party"] == first["third_party"]  # the wheel lists came from the cache


def test_the_imports_of_resolved_wheels_are_read_from_their_files(cache: Path) -> None:
    report = scan("transitive", cache)
    sources = {t["import"]: (t["source"], t["distributions"]) for t in report["third_party"]}
    assert sources["cv2"] == ("wheel", ["opencv-python"])
    assert sources["skimage"] == ("wheel", ["scikit-image"])
    assert sources["yaml"] == ("wheel", ["pyyaml"])
    assert sources["librosa"][0] == "name"  # not in the resolution: guessed
