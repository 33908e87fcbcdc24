"""`builder scan` on repositories with a known truth (tests/fixtures/scan/<case>/truth.json).

Each case reproduces a way scan was wrong on a real model repository (transitive-only
packages, lazy through a local module, GPU at import, namespace `src/`, a missing local
submodule). Resolutions are the recorded `uv pip compile` output and wheel file lists of each
case (tests/fixtures/scan/record.py re-records them); the real uv runs in
tests/integration/test_scan_real.py. The same truth feeds benchmarks/bench_scan.py.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.utils import canonicalize_name

from builder.check import Options, check_cells
from builder.lock import Resolution, inputs_digest
from builder.matrix import Cell, Indexes, load_matrix
from builder.profiles import load_profiles
from builder.scan import (
    Environment,
    Reach,
    ScanOptions,
    ScanReport,
    Sources,
    UvResolver,
    parse_resolution,
    read_declared,
    read_indexes,
    render,
    scan,
    write_profile_draft,
)
from builder.scan.model import ResolutionInfo
from builder.scan.resolve import Resolved, scan_cell
from builder.scan.wheels import WheelModules
from builder.settings import Settings

CASES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "scan"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "truth.json").is_file())
ENV = Environment("3.11", frozenset(sys.stdlib_module_names))


class Recorded:
    """A case's recorded resolution and wheel file lists."""

    def __init__(self, case: Path) -> None:
        self.body = (case / "recorded" / "uv.txt").read_text()
        modules = json.loads((case / "recorded" / "modules.json").read_text())
        self.known = {name: tuple(found) if found else None for name, found in modules.items()}

    def resolve(
        self,
        requirements: Sequence[str],
        python: str,
        platform: str,
        indexes: Indexes | None = None,
    ) -> Resolved:
        graph = parse_resolution(self.body)
        info = ResolutionInfo(True, len(graph.pins), "uv", python, platform)
        return Resolved(info, graph, self.body)

    def modules(self, pins: Mapping[str, str]) -> dict[str, tuple[str, ...] | None]:
        return {name: self.known.get(name) for name in pins}


def truth(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CASES_DIR / name / "truth.json").read_text())
    return data


def options(name: str) -> ScanOptions:
    want, case = truth(name), CASES_DIR / name
    return ScanOptions(
        path=case,
        entries=tuple(Path(e) for e in want["entries"]),
        requirements=(case / want["requirements"],),
        python=want["python"],
        platform=want["platform"],
    )


def scan_case(name: str, sources: Sources | None = None) -> ScanReport:
    if sources is None:
        fake = Recorded(CASES_DIR / name)
        sources = Sources(fake, fake)
    return scan(options(name), ENV, sources)


def top(name: str) -> str:
    return name.split(".")[0]


def undeclared(report: ScanReport) -> dict[str, list[str]]:
    assert report.requirements is not None
    found: dict[str, list[str]] = {r.value: [] for r in Reach if r is not Reach.MODULE}
    found["required"] = []
    for item in report.requirements.undeclared:
        key = "required" if item.reach is Reach.MODULE else item.reach.value
        found[key].append(top(item.name))
    return {key: sorted(names) for key, names in found.items()}


@pytest.mark.parametrize("name", CASES)
def test_the_undeclared_imports_are_the_truth_by_reach(name: str) -> None:
    want = {k: sorted(v) for k, v in truth(name)["undeclared"].items()}
    assert undeclared(scan_case(name)) == want


@pytest.mark.parametrize("name", CASES)
def test_imports_that_arrive_through_declared_requirements_are_the_truth(name: str) -> None:
    report = scan_case(name)
    assert report.requirements is not None
    found = sorted(top(t.name) for t in report.requirements.transitive)
    assert found == sorted(truth(name)["transitive"])
    for item in report.requirements.transitive:  # each path starts at a declared requirement
        declared = {canonicalize_name(d.requirement.name) for d in report.requirements.declared}
        assert item.path[0] in declared and item.path[-1] == item.distribution


@pytest.mark.parametrize("name", CASES)
def test_missing_local_modules_are_the_truth_and_never_a_distribution(name: str) -> None:
    report = scan_case(name)
    assert sorted(m.module for m in report.missing_local) == truth(name)["missing_local"]
    local = {p.name for p in report.local}
    assert not local & {top(t.name) for t in report.third_party}


@pytest.mark.parametrize("name", CASES)
def test_namespace_packages_are_listed_as_local_with_the_flag(name: str) -> None:
    data = json.loads(render(scan_case(name), "json"))
    namespaces = sorted(p["name"] for p in data["local"] if p["namespace"])
    assert namespaces == truth(name)["namespaces"]


@pytest.mark.parametrize("name", CASES)
def test_gpu_at_import_sites_are_the_truth(name: str) -> None:
    report = scan_case(name)
    found = [[g.file, g.line, g.call, g.context, g.reach.value] for g in report.gpu_at_import]
    assert found == truth(name)["gpu_at_import"]


@pytest.mark.parametrize("name", CASES)
def test_every_text_line_of_a_case_is_at_most_100_characters(name: str) -> None:
    text = render(scan_case(name), "text")
    assert max(map(len, text.splitlines())) <= 100


def test_xfuser_behind_a_lazily_imported_local_module_does_not_fail_the_scan() -> None:
    report = scan_case("lazy_local")
    [xfuser] = [t for t in report.third_party if t.name == "xfuser"]
    assert xfuser.reach is Reach.LAZY
    module_level = {
        loc.file: loc.reach
        for loc in xfuser.locations
        if loc.file == "wan/distributed/xdit_context_parallel.py"
    }
    assert module_level == {"wan/distributed/xdit_context_parallel.py": Reach.LAZY}


def test_without_the_resolution_the_transitive_only_imports_are_undeclared() -> None:
    report = scan(options("transitive"), ENV)  # nothing resolved
    assert set(truth("transitive")["transitive"]) <= set(undeclared(report)["required"])


# --- the real resolver and wheel index, offline from a filled cache -----------------------------


def fill_cache(name: str, cache: Path) -> None:
    """builder's metadata cache as a real run leaves it, from the case's recordings."""
    recorded, want = Recorded(CASES_DIR / name), truth(name)
    declared = read_declared(CASES_DIR / name / want["requirements"], want["python"])
    lines = [str(d.requirement) for d in declared]
    indexes = read_indexes([CASES_DIR / name / want["requirements"]])
    cell = scan_cell(lines, want["python"], want["platform"], indexes)
    entry = {"ok": True, "body": recorded.body, "error": None, "dropped": []}
    path = cache / "resolutions" / f"{inputs_digest(cell, 'uv')}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(entry))
    for dist, version in parse_resolution(recorded.body).pins.items():
        found = recorded.known.get(dist)
        (cache / "modules" / dist).mkdir(parents=True, exist_ok=True)
        data = {"modules": list(found) if found else None, "reason": "no wheel"}
        (cache / "modules" / dist / f"{version}.json").write_text(json.dumps(data))


@pytest.mark.parametrize("name", ["transitive", "lazy_local"])
def test_offline_the_cached_resolution_and_wheel_lists_give_the_same_truth(
    name: str, tmp_path: Path
) -> None:
    fill_cache(name, tmp_path)
    settings = Settings(metadata_cache=tmp_path, uv_binary="/nonexistent/uv")  # never run
    sources = Sources(
        UvResolver(settings, offline=True), WheelModules(tmp_path / "modules", fetch=None)
    )
    report = scan_case(name, sources)
    assert report.requirements is not None
    assert report.requirements.resolution.origin == "cache"
    assert undeclared(report) == {k: sorted(v) for k, v in truth(name)["undeclared"].items()}


# --- scan -> profile draft -> a profile that loads -> builder check --------------------------


def pinned(body: str) -> Any:
    def resolver(cell: Cell, settings: Settings, offline: bool) -> Resolution:
        return Resolution(ok=True, body=body)

    return resolver


@pytest.mark.parametrize("name", ["transitive", "lazy_local"])
def test_the_profile_draft_loads_and_a_matrix_using_it_checks(name: str, tmp_path: Path) -> None:
    report = scan_case(name)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    written = write_profile_draft(report, profiles)
    draft_name = written.stem
    profile = load_profiles([profiles])[draft_name]
    assert profile.requirements and profile.source == str(CASES_DIR / name)
    assert {r.name for r in profile.requirements if not r.optional} >= {"torch"} | (
        {"librosa", "misaki"} if name == "transitive" else {"peft", "xfuser"}
    )
    assert profile.gpu_at_import is (name == "lazy_local")
    matrix_path = tmp_path / "matrix.yaml"
    matrix_path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "bases": {"gpu": {"image": "nvidia/cuda:12.4.1", "python": "3.11", "cuda": "12.4"}},
                "axes": {"base": ["gpu"]},
                "requirements": [r.text for r in profile.requirements if not r.optional],
                "profiles": [draft_name],
                "profile_paths": ["profiles"],
                "gpu": "optional",
            }
        )
    )
    matrix = load_matrix(matrix_path)
    body = (CASES_DIR / name / "recorded" / "uv.txt").read_text()
    extra = "".join(f"{n}==1.0\n" for n in ("librosa", "misaki", "soundfile", "moviepy", "peft"))
    options = Options(
        settings=Settings(metadata_cache=tmp_path / "cache"),
        offline=True,
        resolver=pinned(body + extra + "xfuser==0.4.1\nqwen-vl-utils==0.0.8\n"),
    )
    [cell_report] = check_cells(matrix, matrix.cells, options)
    from_profile = {
        "profile-range",
        "profile-missing-package",
        "gpu-at-import",
        "python-unsupported",
    }
    found = [(f.code, f.message) for f in cell_report.findings if f.code in from_profile]
    assert found == []


def test_a_draft_of_a_repository_named_in_capitals_loads(tmp_path: Path) -> None:
    repo = tmp_path / "MultiTalk"
    shutil.copytree(CASES_DIR / "transitive", repo)
    fake = Recorded(repo)
    report = scan(
        ScanOptions(path=repo, requirements=(repo / "requirements.txt",), python="3.11"),
        ENV,
        Sources(fake, fake),
    )
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    written = write_profile_draft(report, profiles)
    assert written.name == "multitalk.yaml"
    assert "multitalk" in load_profiles([profiles])
