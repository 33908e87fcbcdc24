"""Fixes that hold (builder/check/fixes.py), offline.

Two kinds of input: the community cases under tests/fixtures/check/fixes/, whose every uv
resolution (the cells' and each re-checked variant's) is recorded by what the resolver was given
(tests/fixtures/check/fixes/record.py re-records), with a trimmed index beside them; and a tiny
made-up index with a resolver that solves it by brute force, for the search itself.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from builder.check import (
    Finding,
    Options,
    check_cell,
    check_cells,
    load_known_issues,
    render_json,
    render_text,
)
from builder.check.fixes import Recheck, Rechecks, apply, range_text
from builder.check.metadata import IndexPool
from builder.check.results import CellReport, Change
from builder.lock import Resolution
from builder.matrix import Cell, Matrix, load_matrix, parse_matrix
from builder.profiles import KnownBad
from builder.settings import Settings

FIXES = Path(__file__).resolve().parents[1] / "fixtures" / "check" / "fixes"
CASES = sorted(p.name for p in FIXES.iterdir() if (p / "matrix.yaml").is_file())
EXPECTED = [
    (case, i)
    for case in CASES
    for i in range(len(yaml.safe_load((FIXES / case / "expected.yaml").read_text())))
]


def key(cell: Cell) -> str:
    """As tests/fixtures/check/fixes/record.py names a recording."""
    data = {
        "requirements": list(cell.requirement_lines()),
        "constraints": list(cell.constraint_lines()),
        "indexes": cell.indexes.pip_args(),
        "python": cell.base.python,
        "platform": cell.base.platform,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def recorded(case: str) -> Any:
    """What uv answered for exactly these inputs when the case was recorded."""

    def resolver(cell: Cell, settings: Settings, offline: bool) -> Resolution:
        stem = FIXES / case / "resolved" / key(cell)
        if stem.with_suffix(".txt").is_file():
            return Resolution(ok=True, body=stem.with_suffix(".txt").read_text())
        if stem.with_suffix(".error").is_file():
            return Resolution(ok=False, error=stem.with_suffix(".error").read_text())
        raise AssertionError(f"not recorded: {cell.requirement_lines()}; run {FIXES}/record.py")

    return resolver


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    shutil.copytree(FIXES / "index", tmp_path / "cache")
    return tmp_path / "cache"


def run(case: str, cache: Path, cells: Sequence[Cell] | None = None) -> dict[str, CellReport]:
    matrix = load_matrix(FIXES / case / "matrix.yaml")
    options = Options(
        settings=Settings(metadata_cache=cache), offline=True, resolver=recorded(case)
    )
    return {r.id: r for r in check_cells(matrix, cells or matrix.cells, options)}


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


# ---------------------------------------------------------------- the community cases


@pytest.mark.parametrize(("case", "index"), EXPECTED)
def test_each_case_gives_its_error_and_offers_the_fix_that_holds(
    case: str, index: int, cache: Path
) -> None:
    want = yaml.safe_load((FIXES / case / "expected.yaml").read_text())[index]
    report = run(case, cache)[want["cell"]]
    (finding,) = [
        f for f in report.findings if (f.code, f.package) == (want["code"], want["package"])
    ]
    assert finding.severity == "error"
    assert want["message"] in finding.message
    assert [c.line for c in finding.fix or ()] == want["fix"], finding.hint


@pytest.mark.parametrize("case", CASES)
def test_every_fix_offered_applied_and_checked_again_adds_no_error(case: str, cache: Path) -> None:
    matrix = load_matrix(FIXES / case / "matrix.yaml")
    reports = run(case, cache)
    offered = [(cell, f) for cell in matrix.cells for f in reports[cell.id].findings if f.fix]
    assert offered
    for cell, finding in offered:
        (again,) = run(case, cache, [apply(cell, finding.fix or ())]).values()
        assert problems(again) <= problems(reports[cell.id]), (finding.fix, again.findings)
        gone = CellReport(id=cell.id, findings=(finding,))
        assert not problems(gone, "any") & problems(again, "any"), (finding.fix, again.findings)


def test_multitalk_on_torch_2_5_is_not_told_to_take_a_transformers_5(cache: Path) -> None:
    report = run("multitalk-torch25", cache)["cu124.transformers-4.48.2"]
    (finding,) = [f for f in report.findings if f.package == "transformers"]
    assert "transformers>=4.49.0,<4.52" in finding.hint
    assert "re-checked, unlike transformers==5" in finding.hint  # the old hint, and why it fails
    assert "known-bad (transformers)" in finding.hint


def test_a_companion_is_pinned_to_what_resolves_beside_the_torch_pin(cache: Path) -> None:
    (report,) = run("torchaudio-unpinned", cache).values()
    (finding,) = report.findings
    assert "torchaudio==2.7.1: it adds unresolvable" in finding.hint
    assert "which resolves to 2.7.0" in finding.hint


def test_the_conflict_the_second_run_would_show_is_found_on_the_first(cache: Path) -> None:
    report = run("hub-below-transformers", cache)["cu121.transformers-4.47.0"]
    (finding,) = [f for f in report.findings if f.severity == "error"]
    assert finding.fix == (Change(package="transformers", specifier=">=4.49.0,<=4.51.3"),)
    assert "which resolves to 4.50.3" in finding.hint
    assert "transformers==4.51.3: it adds unresolvable" in finding.hint


def test_text_shows_the_fix_as_the_line_to_paste_and_json_as_data(cache: Path) -> None:
    reports = list(run("hub-below-transformers", cache).values())
    assert "\n          fix: transformers>=4.49.0,<=4.51.3\n" in render_text(reports)
    cells = json.loads(render_json(reports))["cells"]
    fixes = [f["fix"] for c in cells for f in c["findings"]]
    assert {"package": "transformers", "specifier": ">=4.49.0,<=4.51.3"} in fixes
    assert all(
        set(f) >= {"severity", "code", "package", "message", "hint", "source", "fix"}
        for c in cells
        for f in c["findings"]
    )


# ---------------------------------------------------------------- a made-up index

# name -> version -> its Requires-Dist
UNIVERSE: dict[str, dict[str, list[str]]] = {
    "app": {"1.0": ["lib<2"], "2.0": ["lib>=2"], "3.0": ["lib>=2"]},
    "lib": {"1.0": [], "2.0": [], "2.5": [], "3.0": []},
    "extra": {"1.0": []},
}


def write_index(cache: Path) -> None:
    """The universe as the metadata cache stores an index (offline reads only this)."""
    root = cache / "pypi.org-simple"
    for name, releases in UNIVERSE.items():
        (root / name).mkdir(parents=True)
        files = [[f"{name}-{v}-py3-none-any.whl", None, 0] for v in releases]
        (root / f"{name}.json").write_text(json.dumps({"name": name, "files": files}))
        for version, deps in releases.items():
            (root / name / f"{version}.json").write_text(json.dumps({"requires_dist": deps}))


class Solver:
    """A resolver for the universe: the highest versions that fit, else a conflict as uv
    words it. Counts what it is asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, ...]] = []

    def __call__(self, cell: Cell, settings: Settings, offline: bool) -> Resolution:
        self.asked.append(cell.requirement_lines())
        wanted = [Requirement(line) for line in cell.requirement_lines()]
        names = sorted({canonicalize_name(r.name) for r in wanted})
        choices = [sorted(UNIVERSE[n], key=Version, reverse=True) for n in names]
        for picked in itertools.product(*choices):
            chosen = dict(zip(names, picked, strict=True))
            if self._fits(wanted, chosen):
                return Resolution(ok=True, body="".join(f"{n}=={v}\n" for n, v in chosen.items()))
        return Resolution(ok=False, error=self._conflict(wanted))

    @staticmethod
    def _fits(wanted: list[Requirement], chosen: Mapping[str, str]) -> bool:
        needs = [*wanted, *(Requirement(d) for n, v in chosen.items() for d in UNIVERSE[n][v])]
        return all(
            canonicalize_name(r.name) in chosen
            and r.specifier.contains(chosen[canonicalize_name(r.name)])
            for r in needs
        )

    @staticmethod
    def _conflict(wanted: list[Requirement]) -> str:
        spec = {canonicalize_name(r.name): r.specifier for r in wanted}
        for r in wanted:
            for v in (v for v in UNIVERSE[canonicalize_name(r.name)] if r.specifier.contains(v)):
                for dep in map(Requirement, UNIVERSE[canonicalize_name(r.name)][v]):
                    other = spec.get(canonicalize_name(dep.name), SpecifierSet())
                    if not any(
                        dep.specifier.contains(x) and other.contains(x) for x in UNIVERSE[dep.name]
                    ):
                        return (
                            f"  × No solution found when resolving dependencies:\n  ╰─▶ Because "
                            f"{r.name}=={v} depends on {dep} and you require {r}, we can conclude "
                            f"that you require {dep}.\n      And because you require "
                            f"{dep.name}{other}, we can conclude that your requirements are "
                            "unsatisfiable."
                        )
        return "No solution found: unsatisfiable"


ROW_APP = KnownBad(
    when=(("app", SpecifierSet("<2")),),
    reason="app 1 is broken",
    source="https://x/app",
    hint="use app>=2",
)
ROW_LIB = KnownBad(
    when=(("lib", SpecifierSet(">=3")), ("app", SpecifierSet("<3"))),
    reason="lib 3 breaks app 2",
    source="https://x/lib",
    hint="use lib<3",
)


def made_up(
    tmp_path: Path, requirements: Sequence[str], rows: Sequence[KnownBad], limit: int = 32
) -> tuple[CellReport, Solver]:
    text = (
        "version: 1\nbases:\n  b: {image: img, python: '3.11', cuda: null}\naxes:\n  base: [b]\n"
        f"requirements: [{', '.join(repr(r) for r in requirements)}]\n"
    )
    matrix: Matrix = parse_matrix(text, tmp_path / "matrix.yaml")
    write_index(tmp_path / "cache")
    solver = Solver()
    options = Options(
        settings=Settings(metadata_cache=tmp_path / "cache"), offline=True, resolver=solver
    )
    issues = replace(load_known_issues(), known_bad=tuple(rows))
    pool = IndexPool(cache_dir=tmp_path / "cache")
    return check_cell(matrix, matrix.cells[0], (), issues, pool, options), solver


def finding(report: CellReport, code: str, package: str | None = None) -> Finding:
    (found,) = [
        f for f in report.findings if f.code == code and (package is None or f.package == package)
    ]
    return found


def test_a_hints_own_fix_that_holds_is_offered_and_the_hint_kept(tmp_path: Path) -> None:
    report, _ = made_up(tmp_path, ["app==1.0", "lib"], [ROW_APP])
    found = finding(report, "known-bad", "app")
    assert found.fix == (Change(package="app", specifier=">=2"),)
    assert found.hint == "use app>=2 (matrix.yaml:6: app==1.0)"  # as the rule wrote it


def test_a_fix_that_adds_an_error_is_not_offered_a_bounded_range_is(tmp_path: Path) -> None:
    report, _ = made_up(tmp_path, ["app==2.0", "lib==1.0"], [ROW_LIB])
    found = finding(report, "dependency-range", "lib")
    assert found.fix == (Change(package="lib", specifier=">=2,<3"),)
    assert found.hint.startswith(
        "change lib==1.0 at matrix.yaml:6 to lib>=2,<3, which resolves to 2.5"
    )
    assert "unlike lib==3.0: it adds known-bad (lib)" in found.hint
    conflict = finding(report, "unresolvable")
    assert conflict.fix == (Change(package="lib", specifier=">=2,<3"),)


def test_when_no_single_package_fix_holds_the_joint_fix_that_does_is_offered(
    tmp_path: Path,
) -> None:
    report, _ = made_up(tmp_path, ["app==1.0", "lib==1.0"], [ROW_APP])
    found = finding(report, "known-bad", "app")
    assert found.fix == (
        Change(package="app", specifier=">=2"),
        Change(package="lib", specifier=">=2"),
    )
    assert found.hint.startswith("no single-package fix holds (tried app>=2: it adds unresolvable;")
    assert "together: change app==1.0 at matrix.yaml:6 to app>=2" in found.hint
    assert json.loads(render_json([report]))["cells"][0]["findings"][0]["fix"] == [
        {"package": "app", "specifier": ">=2"},
        {"package": "lib", "specifier": ">=2"},
    ]
    assert "fix: app>=2\n               lib>=2\n" in render_text([report])


def test_when_nothing_holds_the_hint_says_so_and_offers_nothing(tmp_path: Path) -> None:
    both = KnownBad(
        when=(("lib", SpecifierSet(">=2")),), reason="lib 2 is broken", source="https://x/l2"
    )
    report, _ = made_up(tmp_path, ["app==1.0", "lib==1.0"], [ROW_APP, both])
    found = finding(report, "known-bad", "app")
    assert found.fix is None
    assert found.hint.startswith(
        "no single-package fix holds, and no joint fix was found (tried app>=2"
    )
    assert "use app>=2" not in found.hint  # the row's hint named the fix that failed


def test_re_checks_are_memoised_by_the_variants_inputs_and_capped(tmp_path: Path) -> None:
    _, solver = made_up(tmp_path, ["app==2.0", "lib==1.0"], [ROW_LIB])
    assert len(solver.asked) == len(set(solver.asked))  # each variant resolved once
    matrix = parse_matrix(
        "version: 1\nbases:\n  b: {image: i, python: '3.11'}\naxes:\n  base: [b]\n",
        tmp_path / "m.yaml",
    )
    calls: list[Cell] = []
    rechecks = Rechecks(
        cell=matrix.cells[0],
        run=lambda c: calls.append(c) or Recheck(findings=(), versions={}, resolved=True),
        limit=1,
    )
    fix = (Change(package="lib", specifier="==2.0"),)
    assert rechecks.of(fix) is not None and rechecks.of(fix) is not None
    assert rechecks.of((Change(package="lib", specifier="==3.0"),)) is None
    assert len(calls) == 1 and rechecks.count == 1


def test_a_resolver_that_ignores_the_fix_leaves_it_unverified_and_the_hint_as_it_was(
    tmp_path: Path,
) -> None:
    text = "version: 1\nbases:\n  b: {image: img, python: '3.11'}\naxes:\n  base: [b]\nrequirements: ['app==1.0', lib]\n"
    matrix = parse_matrix(text, tmp_path / "matrix.yaml")
    write_index(tmp_path / "cache")

    def stale(cell: Cell, settings: Settings, offline: bool) -> Resolution:
        return Resolution(ok=True, body="app==1.0\nlib==1.0\n")  # whatever it is asked

    options = Options(
        settings=Settings(metadata_cache=tmp_path / "cache"), offline=True, resolver=stale
    )
    issues = replace(load_known_issues(), known_bad=(ROW_APP,))
    report = check_cell(
        matrix, matrix.cells[0], (), issues, IndexPool(cache_dir=tmp_path / "cache"), options
    )
    found = finding(report, "known-bad", "app")
    assert found.fix is None
    assert found.hint.startswith("use app>=2 (not re-checked: the resolution ignores app>=2)")


def test_apply_replaces_the_axis_pin_rewrites_lines_keeping_extras_and_markers_or_adds() -> None:
    text = (
        "version: 1\nbases:\n  b: {image: i, python: '3.11'}\naxes:\n  base: [b]\n  numpy: ['1.26.4']\n"
        "requirements: ['misaki[en]==0.9.4; python_version >= \"3.10\"', 'numpy<2']\n"
    )
    cell = parse_matrix(text, Path("matrix.yaml")).cells[0]
    fixed = apply(
        cell,
        (
            Change(package="numpy", specifier=">=1.23.5,<2"),
            Change(package="misaki", specifier="==0.9.3"),
            Change(package="peft", specifier="", extras=("torch",)),
        ),
    )
    assert fixed.requirement_lines() == (
        'misaki[en]==0.9.3; python_version >= "3.10"',
        "numpy>=1.23.5,<2",
        "peft[torch]",
        "numpy>=1.23.5,<2",
    )
    assert fixed.declared("misaki") == (
        'misaki[en]==0.9.3; python_version >= "3.10"',
        "matrix.yaml:7",
    )
    assert cell.requirement_lines()[0].startswith("misaki[en]==0.9.4")  # frozen: a new cell


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        ("<1.0,>=0.30.0", ">=0.30.0,<1.0"),
        (">=4.49.0,<5,<4.52", ">=4.49.0,<4.52"),
        ("==2.7.*", "==2.7.*"),
        ("<=5,<5", "<5"),
    ],
)
def test_ranges_read_floor_first_with_looser_bounds_dropped(spec: str, text: str) -> None:
    assert range_text(SpecifierSet(spec)) == text


def test_findings_with_their_fixes_are_what_the_report_schema_allows(cache: Path) -> None:
    from builder.report import report_schema

    schema = report_schema()
    finding_schema = {"$defs": schema["$defs"], "$ref": "#/$defs/finding"}
    validator = jsonschema.Draft202012Validator(finding_schema)
    reports = [r for case in CASES for r in run(case, cache).values()]
    findings = [f for c in json.loads(render_json(reports))["cells"] for f in c["findings"]]
    assert any(isinstance(f["fix"], list) for f in findings)  # joint fixes too
    for finding in findings:
        validator.validate(finding)


def test_a_re_check_uv_cannot_answer_offline_is_not_taken_for_a_conflict(tmp_path: Path) -> None:
    text = (
        "version: 1\nbases:\n  b: {image: img, python: '3.11'}\naxes:\n  base: [b]\n"
        "requirements: ['app==1.0', lib]\n"
    )
    matrix = parse_matrix(text, tmp_path / "matrix.yaml")
    write_index(tmp_path / "cache")

    def offline_uv(cell: Cell, settings: Settings, offline: bool) -> Resolution:
        if cell.requirement_lines() == matrix.cells[0].requirement_lines():
            return Resolution(ok=True, body="app==1.0\nlib==1.0\n")
        return Resolution(
            ok=False,
            error="  cause: Because app==2.0 needs to be downloaded from a registry and you "
            "require app>=2, we can conclude that your requirements are unsatisfiable.",
        )

    options = Options(
        settings=Settings(metadata_cache=tmp_path / "cache"), offline=True, resolver=offline_uv
    )
    issues = replace(load_known_issues(), known_bad=(ROW_APP,))
    pool = IndexPool(cache_dir=tmp_path / "cache")
    found = finding(check_cell(matrix, matrix.cells[0], (), issues, pool, options), "known-bad")
    assert found.fix is None
    assert found.hint.startswith("use app>=2 (not re-checked: ") and "offline" in found.hint
