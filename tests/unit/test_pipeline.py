"""`builder validate`'s orchestration, every branch, on a fake backend and a fake engine: no
Docker, no uv, no network. The lock step, the checks and the backend are passed in."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from builder.backends import Backend, ImageBackend, Setup, VenvBackend
from builder.engine import BuildOutcome, EngineFailure, Mount, RunOutcome
from builder.errors import EngineUnavailable
from builder.lock import LockResult, diff_locks, header, inputs_digest, lock_path
from builder.log import Log
from builder.matrix import Cell, Matrix, parse_matrix
from builder.pipeline import ValidateOptions, validate
from builder.records import CheckPart
from builder.render import Rendered
from builder.report import load_report
from builder.settings import Settings

MATRIX = """version: 1
bases:
  b: {image: "debian:bookworm", python: "3.11"}
axes:
  base: [b]
  six: ["1.16.0", "1.17.0"]
probes: [imports, numpy]
"""
BODY = "six==1.16.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
PASS = RunOutcome(0, json.dumps({"status": "pass", "reason": ""}), "", 0.1)
ERROR_FINDING = {
    "severity": "error",
    "code": "known-issue",
    "package": "six",
    "message": "six 1.16.0 breaks everything",
    "hint": "",
    "source": "known_issues.yaml",
}


def write_lock(matrix: Matrix, cell: Cell, *, digest: str | None = None) -> str:
    """A lock as `builder lock` writes it; `digest` other than the cell's makes it stale."""
    digest = digest or inputs_digest(cell, "uv")
    text = header(matrix.path, cell, digest, "uv", BODY) + BODY
    path = lock_path(matrix, cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


@dataclass
class FakeTarget:
    """Answers each probe script with its scripted outcome (an exception is raised), else pass."""

    outcomes: Mapping[str, RunOutcome | Exception]
    lock_path: str = "/in/lock.txt"
    app_path: str | None = None

    def run(
        self, script: str, options: Mapping[str, Any], timeout: float, memory: str
    ) -> RunOutcome:
        outcome = self.outcomes.get(Path(script).stem, PASS)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@dataclass
class FakeBackend:
    """Prepares a FakeTarget per cell; `outcomes[cell id][script]` scripts its probes."""

    outcomes: Mapping[str, Mapping[str, RunOutcome | Exception]] = field(default_factory=dict)
    prepare_raises: Exception | None = None
    prepared: list[str] = field(default_factory=list)
    engine_version: str | None = "fake 1"

    def render(self, cell: Cell) -> Rendered | None:
        return None

    def key_parts(self, cell: Cell, rendered: Rendered | None) -> dict[str, Any]:
        return {"fake": True}

    def prepare(self, cell: Cell, inputs: Path, rendered: Rendered | None) -> Setup:
        self.prepared.append(cell.id)
        if self.prepare_raises is not None:
            raise self.prepare_raises
        assert (inputs / "lock.txt").is_file()
        return Setup(FakeTarget(self.outcomes.get(cell.id, {})))


@dataclass
class FakeEngine:
    """builder.engine.Engine without Docker: builds succeed unless told, probes pass."""

    build_ok: bool = True
    name: str = "fake"
    runs: list[str] = field(default_factory=list)

    def build(
        self,
        context: Path,
        tag: str,
        secrets: Mapping[str, Path],
        log_path: Path,
        no_cache: bool = False,
    ) -> BuildOutcome:
        assert (context / "Dockerfile").is_file()
        tail = "" if self.build_ok else "ERROR: failed to solve"
        return BuildOutcome(self.build_ok, "sha256:img" if self.build_ok else None, 1.0, tail)

    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        mounts: Sequence[Mount] = (),
        memory: str | None = None,
        timeout: float = 600,
        network: bool = False,
        gpu: bool = False,
        environment: Mapping[str, str] | None = None,
    ) -> RunOutcome:
        self.runs.append(argv[2])
        return PASS

    def inspect(self, image: str) -> dict[str, Any]:
        return {"Id": f"sha256:{image}", "Size": 123}

    def push(self, tag: str, log_path: Path) -> str:
        raise AssertionError("validate never pushes")


@dataclass
class FakeLock:
    """The lock step: writes a fresh lock (no uv), or fails to resolve."""

    ok: bool = True
    calls: list[str] = field(default_factory=list)

    def __call__(self, matrix: Matrix, cell: Cell, settings: Settings) -> LockResult:
        self.calls.append(cell.id)
        if not self.ok:
            return LockResult(cell.id, lock_path(matrix, cell), ok=False, error="no solution")
        text = write_lock(matrix, cell)
        return LockResult(cell.id, lock_path(matrix, cell), ok=True, diff=diff_locks(None, text))


def no_findings(matrix: Matrix, cells: Sequence[Cell], *_: Any) -> dict[str, CheckPart]:
    return {c.id: CheckPart(c.id) for c in cells}


@dataclass
class Project:
    """A matrix with fresh locks in tmp_path, and a way to validate it with fakes."""

    root: Path
    matrix: Matrix
    stream: io.StringIO = field(default_factory=io.StringIO)

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def run(self, backend: Backend, **kwargs: Any) -> dict[str, Any]:
        """Validate every cell; the written report must load (it meets the schema)."""
        options = ValidateOptions(
            engine="venv",  # only recorded: the backend is passed in
            output=self.root / "out",
            cache_dir=kwargs.pop("cache_dir", self.cache),
            use_cache=kwargs.pop("use_cache", True),
            build_anyway=kwargs.pop("build_anyway", False),
        )
        settings = kwargs.pop("settings", Settings(argv=("validate",)))
        kwargs.setdefault("checks", no_findings)
        kwargs.setdefault("lock", FakeLock())
        log = Log(stream=self.stream)
        cells = self.matrix.cells
        report = validate(self.matrix, cells, options, settings, log, backend=backend, **kwargs)
        assert load_report(options.output / "report.json")["cells"] == report["cells"]
        return report

    def cell(self, backend: Backend, index: int = 0, **kwargs: Any) -> dict[str, Any]:
        cell: dict[str, Any] = self.run(backend, **kwargs)["cells"][index]
        return cell


@pytest.fixture
def project(tmp_path: Path) -> Project:
    matrix = parse_matrix(MATRIX, tmp_path / "matrix.yaml")
    for cell in matrix.cells:
        write_lock(matrix, cell)
    return Project(tmp_path, matrix)


def test_cells_whose_probes_pass_pass_and_their_verdicts_are_stored(project: Project) -> None:
    report = project.run(FakeBackend())
    assert report["summary"] == {"total": 2, "pass": 2, "fail": 0, "error": 0, "skipped": 0}
    first = report["cells"][0]
    assert (first["status"], first["reason"]) == ("pass", "2 probes: imports pass, numpy pass")
    assert first["cache"]["hit"] is False and len(first["cache"]["key"]) == 64
    assert first["check"] == {"id": first["id"], "status": "pass", "findings": []}
    stored = json.loads((project.cache / f"{first['cache']['key']}.json").read_text())
    assert stored["status"] == "pass" and stored["finished"]
    assert report["run"]["engine_version"] == "fake 1"


def test_an_unchanged_cell_is_a_cache_hit_that_prepares_and_probes_nothing(
    project: Project,
) -> None:
    before = project.cell(FakeBackend())
    backend = FakeBackend()
    after = project.cell(backend)
    assert backend.prepared == []
    assert after["cache"]["hit"] is True and after["cache"]["stored"]
    assert {k: after[k] for k in ("status", "reason", "build", "probes")} == {
        k: before[k] for k in ("status", "reason", "build", "probes")
    }
    assert "(cached " in project.stream.getvalue()


def test_no_cache_is_a_miss_that_probes_again(project: Project) -> None:
    project.run(FakeBackend())
    backend = FakeBackend()
    assert project.cell(backend, use_cache=False)["cache"]["hit"] is False
    assert len(backend.prepared) == 2


def test_a_bad_cache_entry_is_a_miss_with_a_warning(project: Project) -> None:
    key = project.cell(FakeBackend())["cache"]["key"]
    (project.cache / f"{key}.json").write_text("[]")
    cell = project.cell(FakeBackend())
    assert cell["cache"]["hit"] is False and cell["status"] == "pass"
    assert "cache: " in project.stream.getvalue() and "ignoring it" in project.stream.getvalue()


def test_a_failed_cache_write_is_a_warning_and_the_verdict_stands(project: Project) -> None:
    not_a_dir = project.root / "cache-file"
    not_a_dir.write_text("")
    cell = project.cell(FakeBackend(), cache_dir=not_a_dir)
    assert cell["status"] == "pass"
    assert "result not cached" in project.stream.getvalue()


def test_check_errors_skip_the_build_unless_build_anyway(project: Project) -> None:
    def erring(matrix: Matrix, cells: Sequence[Cell], *_: Any) -> dict[str, CheckPart]:
        return {c.id: CheckPart(c.id, (ERROR_FINDING,)) for c in cells}

    backend = FakeBackend()
    cell = project.cell(backend, checks=erring)
    assert cell["status"] == "fail"
    assert cell["reason"] == "check: known-issue six: six 1.16.0 breaks everything"
    assert cell["check"]["status"] == "fail" and cell["cache"]["key"] == ""
    assert backend.prepared == []
    built = project.cell(backend, checks=erring, build_anyway=True)
    assert built["status"] == "pass" and backend.prepared


def test_a_missing_lock_is_locked_on_the_fly(project: Project) -> None:
    lock_path(project.matrix, project.matrix.cells[0]).unlink()
    locker = FakeLock()
    cell = project.cell(FakeBackend(), lock=locker)
    assert locker.calls == [project.matrix.cells[0].id]
    assert cell["status"] == "pass"
    added = [{"name": "six", "version": "1.16.0"}]
    assert cell["lock"]["diff"] == {"added": added, "removed": [], "changed": []}
    assert cell["lock"]["packages"] == {"six": "1.16.0"}


def test_a_lock_that_cannot_be_resolved_fails_the_cell(project: Project) -> None:
    lock_path(project.matrix, project.matrix.cells[0]).unlink()
    cell = project.cell(FakeBackend(), lock=FakeLock(ok=False))
    assert (cell["status"], cell["reason"]) == ("fail", "cannot resolve: no solution")
    assert cell["lock"]["sha256"] is None and cell["check"] is None


def test_a_stale_lock_fails_the_cell_and_is_never_relocked(project: Project) -> None:
    cell = project.matrix.cells[0]
    write_lock(project.matrix, cell, digest="0" * 64)
    locker, backend = FakeLock(), FakeBackend()
    found = project.cell(backend, lock=locker)
    assert found["status"] == "fail" and "is stale" in found["reason"]
    assert found["reason"].endswith(f"run `builder lock --cell {cell.id}`")
    assert locker.calls == [] and cell.id not in backend.prepared


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (RunOutcome(1, "", "Traceback ...\nImportError: six", 0.1), "probe printed no result"),
        (RunOutcome(None, "", "", 300.0, timed_out=True), "timeout after 300s"),
        (EngineFailure("container vanished"), "the engine failed to run the probe"),
    ],
    ids=["crash", "timeout", "engine-failure"],
)
def test_a_probe_that_crashes_or_times_out_is_an_error_and_is_not_cached(
    project: Project, outcome: RunOutcome | Exception, reason: str
) -> None:
    first = project.matrix.cells[0].id
    report = project.run(FakeBackend({first: {"imports": outcome}}))
    cell = report["cells"][0]
    assert cell["status"] == "error" and cell["reason"].startswith(f"imports: {reason}")
    assert [p["status"] for p in cell["probes"]] == ["error", "pass"]  # the others still run
    assert not (project.cache / f"{cell['cache']['key']}.json").exists()
    assert report["cells"][1]["status"] == "pass"


def test_one_failing_cell_beside_a_passing_one(project: Project) -> None:
    failing = RunOutcome(1, json.dumps({"status": "fail", "reason": "numpy 2 found"}), "", 0.1)
    second = project.matrix.cells[1].id
    report = project.run(FakeBackend({second: {"numpy": failing}}))
    assert [c["status"] for c in report["cells"]] == ["pass", "fail"]
    assert report["cells"][1]["reason"] == "numpy: numpy 2 found"
    assert report["summary"]["fail"] == 1 and report["summary"]["pass"] == 1


def test_a_bug_in_one_cell_is_its_error_and_the_others_run(project: Project) -> None:
    class Flaky(FakeBackend):
        def prepare(self, cell: Cell, inputs: Path, rendered: Rendered | None) -> Setup:
            if cell is project.matrix.cells[0]:
                raise KeyError("boom")
            return super().prepare(cell, inputs, rendered)

    report = project.run(Flaky())
    crashed, fine = report["cells"]
    assert crashed["status"] == "error" and "internal error" in crashed["reason"]
    assert crashed["probes"] == [] and crashed["build"] is None
    assert fine["status"] == "pass"


def test_a_builder_error_ends_the_run(project: Project) -> None:
    backend = FakeBackend(prepare_raises=EngineUnavailable("the engine went away"))
    with pytest.raises(EngineUnavailable):
        project.run(backend)
    assert backend.prepared == [project.matrix.cells[0].id]


def image_backend(project: Project, engine: FakeEngine) -> ImageBackend:
    output = project.root / "out" / "build"
    log = Log(verbosity=-1)
    return ImageBackend(
        matrix=project.matrix, engine=engine, settings=Settings(), output=output, log=log, gpu=False
    )


def test_an_image_cell_is_rendered_built_and_probed_in_containers(project: Project) -> None:
    engine = FakeEngine()
    backend = image_backend(project, engine)
    cell = project.cell(backend)
    assert cell["status"] == "pass" and cell["build"]["ok"] and cell["build"]["size"] == 123
    # two probes at once, each in its own container: started in either order
    assert sorted(engine.runs[:2]) == ["/builder/validate/imports.py", "/builder/validate/numpy.py"]
    assert project.cell(backend)["cache"]["hit"] is True


def test_a_failed_build_fails_the_cell_without_probes(project: Project) -> None:
    engine = FakeEngine(build_ok=False)
    backend = image_backend(project, engine)
    cell = project.cell(backend)
    assert (cell["status"], cell["reason"]) == ("fail", "build failed: docker build failed")
    assert cell["build"]["log_tail"] == "ERROR: failed to solve" and cell["probes"] == []
    assert engine.runs == []


def test_a_venv_cell_without_its_python_on_this_host_is_skipped(project: Project) -> None:
    settings = Settings(environ={"PATH": str(project.root)}, venv_cache=project.root / "venvs")
    backend = VenvBackend(matrix=project.matrix, settings=settings, log=Log(verbosity=-1))
    cell = project.cell(backend, settings=settings)
    assert cell["status"] == "skipped" and "Python 3.11 is not available" in cell["reason"]
    assert cell["build"] is None


def test_the_run_appends_its_summary_to_the_job_summary(project: Project) -> None:
    summary = project.root / "summary.md"
    summary.write_text("earlier step\n")
    project.run(FakeBackend(), settings=Settings(step_summary=summary))
    assert summary.read_text().startswith("earlier step\n") and len(summary.read_text()) > 20
