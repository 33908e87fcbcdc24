"""`validate` runs the probes of a cell side by side and overlaps cells (one builds while
another is probed), within a budget of cores and memory; results keep their fixed order."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from builder import proc
from builder.backends import Setup
from builder.engine import RunOutcome
from builder.log import Log
from builder.matrix import Cell, parse_matrix
from builder.pipeline import ValidateOptions, validate
from builder.render import Rendered
from builder.settings import Settings
from tests.unit.test_pipeline import PASS, FakeLock, no_findings, write_lock

MATRIX = """version: 1
bases:
  b: {image: "debian:bookworm", python: "3.11"}
axes:
  base: [b]
  six: ["1.15.0", "1.16.0", "1.17.0"]
probes: [imports, numpy, pip-check, lock-match]
"""


@dataclass
class ScriptedTarget:
    """Each probe script runs `behaviour[stem]()` (default: pass at once)."""

    behaviour: Mapping[str, Any]
    lock_path: str = "/in/lock.txt"
    app_path: str | None = None
    command: tuple[str, ...] = ()

    def run(
        self, script: str, options: Mapping[str, Any], timeout: float, memory: str
    ) -> RunOutcome:
        action = self.behaviour.get(Path(script).stem)
        return action() if action else PASS

    def launch(self, argv: Any, timeout: float, memory: str) -> RunOutcome:
        return PASS

    def app_file(self, name: str) -> Path | None:
        return None


@dataclass
class ScriptedBackend:
    behaviour: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    on_prepare: Mapping[str, Any] = field(default_factory=dict)
    prepared: list[str] = field(default_factory=list)
    engine_version: str | None = "fake 1"

    def render(self, cell: Cell) -> Rendered | None:
        return None

    def key_parts(self, cell: Cell, rendered: Rendered | None) -> dict[str, Any]:
        return {}

    def prepare(self, cell: Cell, inputs: Path, rendered: Rendered | None) -> Setup:
        self.prepared.append(cell.id)
        if cell.id in self.on_prepare:
            self.on_prepare[cell.id]()
        return Setup(ScriptedTarget(self.behaviour.get(cell.id, {})))


def run(tmp_path: Path, backend: ScriptedBackend, **options: Any) -> dict[str, Any]:
    matrix = parse_matrix(MATRIX, tmp_path / "matrix.yaml")
    for cell in matrix.cells:
        write_lock(matrix, cell)
    chosen = ValidateOptions(engine="venv", output=tmp_path / "out", use_cache=False, **options)
    return validate(
        matrix,
        matrix.cells,
        chosen,
        Settings(argv=("validate",)),
        Log(stream=io.StringIO()),
        backend=backend,
        lock=FakeLock(),
        checks=no_findings,
    )


def cell_ids(tmp_path: Path) -> list[str]:
    return [c.id for c in parse_matrix(MATRIX, tmp_path / "matrix.yaml").cells]


def test_probes_of_a_cell_run_side_by_side_and_report_in_their_fixed_order(
    tmp_path: Path,
) -> None:
    both = threading.Barrier(2, timeout=10)  # breaks unless two probes run at once

    def meet() -> RunOutcome:
        both.wait()
        return PASS

    def slow() -> RunOutcome:
        time.sleep(0.2)
        return PASS

    first = cell_ids(tmp_path)[0]
    backend = ScriptedBackend({first: {"imports": meet, "pip_check": meet, "numpy": slow}})
    report = run(tmp_path, backend, probe_jobs=2)
    probes = report["cells"][0]["probes"]
    assert [p["probe"] for p in probes] == ["imports", "numpy", "pip-check", "lock-match"]
    assert {p["status"] for p in probes} == {"pass"}


def test_a_probe_that_raises_is_that_probes_error_and_the_others_still_report(
    tmp_path: Path,
) -> None:
    def boom() -> RunOutcome:
        raise RuntimeError("kaput")

    first = cell_ids(tmp_path)[0]
    report = run(tmp_path, ScriptedBackend({first: {"numpy": boom}}), probe_jobs=2)
    found = {p["probe"]: p for p in report["cells"][0]["probes"]}
    assert found["numpy"]["status"] == "error"
    assert "kaput" in found["numpy"]["reason"]
    assert {found[n]["status"] for n in ("imports", "pip-check", "lock-match")} == {"pass"}


def test_one_cell_builds_while_another_is_probed_and_the_report_keeps_matrix_order(
    tmp_path: Path,
) -> None:
    ids = cell_ids(tmp_path)
    second_prepared = threading.Event()

    def wait_for_second() -> RunOutcome:
        assert second_prepared.wait(10), "the second cell was not built while the first probed"
        return PASS

    def slow_build() -> None:
        time.sleep(0.3)  # the first cell to finish is not the first in the matrix

    backend = ScriptedBackend(
        behaviour={ids[0]: {"imports": wait_for_second}},
        on_prepare={ids[1]: second_prepared.set, ids[0]: slow_build},
    )
    report = run(tmp_path, backend, jobs=2, probe_jobs=4)
    assert [c["id"] for c in report["cells"]] == ids
    assert {c["status"] for c in report["cells"]} == {"pass"}


def test_without_jobs_cells_run_one_after_the_other(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    report = run(tmp_path, backend)
    assert backend.prepared == cell_ids(tmp_path) == [c["id"] for c in report["cells"]]


def test_a_budget_holds_cores_and_memory_and_runs_an_oversized_request_alone() -> None:
    budget = proc.Budget(2, 8 << 30)
    running, peak, lock = [0], [0], threading.Lock()

    def work(request: tuple[int, int], _: threading.Event) -> None:
        with budget.hold(*request):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    def crashed(request: tuple[int, int], exc: Exception) -> None:
        raise exc

    proc.parallel_map(work, [(1, 4 << 30)] * 4, 4, crashed)
    assert peak[0] == 2
    peak[0] = 0
    proc.parallel_map(work, [(1, 6 << 30)] * 3, 3, crashed)  # two would exceed the memory
    assert peak[0] == 1
    peak[0] = 0
    proc.parallel_map(work, [(1, 64 << 30), (1, 1 << 30)], 2, crashed)  # more than all: alone
    assert peak[0] == 1


@pytest.mark.parametrize("jobs", [1, 3])
def test_a_bug_while_preparing_one_cell_is_its_error_and_the_others_pass(
    tmp_path: Path, jobs: int
) -> None:
    ids = cell_ids(tmp_path)

    def bug() -> None:
        raise KeyError("oops")

    report = run(tmp_path, ScriptedBackend(on_prepare={ids[1]: bug}), jobs=jobs)
    assert [c["status"] for c in report["cells"]] == ["pass", "error", "pass"]
