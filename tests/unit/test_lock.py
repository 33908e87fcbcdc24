"""Lock files: parsing, headers and staleness, diffs, atomic writes, uv's failure explained,
and locking through any resolver (pip-tools with a fake engine)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from builder import lock
from builder.engine import Mount, RunOutcome
from builder.errors import InputError
from builder.files import write_atomic
from builder.lock import (
    LockResult,
    Resolution,
    diff_locks,
    explain_failure,
    header,
    inputs_digest,
    lock_cell,
    lock_path,
    parse_lock,
    read_lock,
    require_fresh,
    stale_reason,
)
from builder.log import Log
from builder.matrix import parse_matrix
from builder.piptools import PipToolsResolver
from builder.settings import Settings
from tests.conftest import run_cli

MATRIX = """version: 1
bases:
  cpu: {image: debian:bookworm, python: "3.11"}
axes:
  base: [cpu]
  six: ["1.16.0"]
requirements: ["numpy<2"]
"""
OLD = (
    "numpy==1.26.3 \\\n    --hash=sha256:"
    + "a" * 64
    + "\nsix==1.16.0 \\\n    --hash=sha256:"
    + "b" * 64
    + "\n"
)
NEW = (
    "numpy==1.26.4 \\\n    --hash=sha256:"
    + "c" * 64
    + "\n    # via -r requirements.in\nattrs==26.1.0 \\\n    --hash=sha256:"
    + "d" * 64
    + "\n"
)


def matrix_at(tmp_path: Path, text: str = MATRIX):
    path = tmp_path / "matrix.yaml"
    path.write_text(text)
    return parse_matrix(text, path)


def test_parse_lock_keeps_each_pin_with_its_hashes_and_notes() -> None:
    locked = parse_lock(NEW)
    assert [(p.name, p.version) for p in locked] == [("numpy", "1.26.4"), ("attrs", "26.1.0")]
    assert locked[0].hashes == ("sha256:" + "c" * 64,)
    assert locked[0].block.endswith("# via -r requirements.in\n")


def test_diff_lists_added_removed_and_changed_pins() -> None:
    diff = diff_locks(OLD, NEW)
    assert diff.lines() == ["+ attrs==26.1.0", "- six==1.16.0", "~ numpy 1.26.3 -> 1.26.4"]
    assert diff.to_json()["changed"] == [{"name": "numpy", "old": "1.26.3", "new": "1.26.4"}]
    assert not diff_locks(NEW, NEW)


def test_a_lock_written_for_the_current_inputs_is_fresh(tmp_path: Path) -> None:
    matrix = matrix_at(tmp_path)
    cell = matrix.cells[0]
    write_atomic(
        lock_path(matrix, cell),
        header(matrix.path, cell, inputs_digest(cell, "uv"), "uv", NEW) + NEW,
    )
    assert stale_reason(matrix, cell) is None
    assert read_lock(lock_path(matrix, cell)).inputs_sha256 == inputs_digest(cell, "uv")


def test_changing_a_requirement_makes_the_lock_stale(tmp_path: Path) -> None:
    matrix = matrix_at(tmp_path)
    cell = matrix.cells[0]
    write_atomic(
        lock_path(matrix, cell),
        header(matrix.path, cell, inputs_digest(cell, "uv"), "uv", NEW) + NEW,
    )
    bumped = matrix_at(tmp_path, MATRIX.replace("numpy<2", "numpy<2.1"))
    assert "is stale" in stale_reason(bumped, bumped.cells[0])


def test_missing_and_stale_locks_are_refused_with_the_fixing_command(tmp_path: Path) -> None:
    matrix = matrix_at(tmp_path)
    with pytest.raises(InputError, match="need a fresh lock") as caught:
        require_fresh(matrix, matrix.cells)
    assert "builder lock" in caught.value.hint


def test_the_digest_depends_on_python_and_platform(tmp_path: Path) -> None:
    a = matrix_at(tmp_path).cells[0]
    b = matrix_at(tmp_path, MATRIX.replace('"3.11"', '"3.10"')).cells[0]
    assert inputs_digest(a, "uv") != inputs_digest(b, "uv")


def test_write_atomic_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "constraints" / "x.txt"
    write_atomic(target, "one\n")
    write_atomic(target, "two\n")
    assert target.read_text() == "two\n"
    assert [p.name for p in target.parent.iterdir()] == ["x.txt"]


def test_uvs_failure_is_cut_to_the_conflict() -> None:
    stderr = """  × No solution found when resolving dependencies:
  ╰─▶ Because transformers==4.47.0 depends on tokenizers>=0.21,<0.22 and you require tokenizers==0.20.0, we can conclude that your requirements are unsatisfiable.

      hint: Pre-releases are available for `tokenizers` in the requested range
"""
    assert explain_failure(stderr) == (
        "Because transformers==4.47.0 depends on tokenizers>=0.21,<0.22 and you require "
        "tokenizers==0.20.0, we can conclude that your requirements are unsatisfiable."
    )


def test_cells_lock_side_by_side_and_keep_their_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix = matrix_at(tmp_path, MATRIX.replace('six: ["1.16.0"]', 'six: ["1.16.0", "1.17.0"]'))
    both_running = threading.Barrier(2, timeout=30)  # breaks, failing the test, if run in turn

    def fake_lock_cell(matrix: Any, cell: Any, settings: Any, **_: Any) -> LockResult:
        both_running.wait()
        return LockResult(cell.id, lock_path(matrix, cell), ok=True)

    monkeypatch.setattr(lock, "lock_cell", fake_lock_cell)
    results = lock.lock_cells(matrix, matrix.cells, Settings(), Log(verbosity=-1), jobs=2)
    assert [r.cell_id for r in results] == [c.id for c in matrix.cells]


def fresh_lock(matrix: Any, body: str = NEW) -> Path:
    cell = matrix.cells[0]
    path = lock_path(matrix, cell)
    write_atomic(path, header(matrix.path, cell, inputs_digest(cell, "uv"), "uv", body) + body)
    return path


def test_a_lock_body_edited_by_hand_is_refused_naming_the_file(tmp_path: Path) -> None:
    matrix = matrix_at(tmp_path)
    path = fresh_lock(matrix)
    path.write_text(path.read_text().replace("numpy==1.26.4", "numpy==1.26.0"))
    with pytest.raises(InputError, match="edited by hand") as caught:
        require_fresh(matrix, matrix.cells)
    assert str(path) in caught.value.message


def test_a_tampered_hash_under_a_kept_header_is_refused(tmp_path: Path) -> None:
    matrix = matrix_at(tmp_path)
    path = fresh_lock(matrix)
    path.write_text(path.read_text().replace("c" * 64, "e" * 64))
    assert "edited by hand" in (stale_reason(matrix, matrix.cells[0]) or "")


def test_an_unknown_upgrade_package_is_bad_input(tmp_path: Path) -> None:
    matrix = matrix_at(tmp_path)
    fresh_lock(matrix)
    done = run_cli("lock", "-m", str(matrix.path), "--upgrade-package", "nosuchpkg")
    assert done.code == 2, done.err
    assert "--upgrade-package nosuchpkg" in done.err and "Traceback" not in done.err


@pytest.mark.parametrize("kind", ["lock-is-a-directory", "lock-not-utf8", "constraints-is-a-file"])
def test_a_lock_that_cannot_be_read_or_written_is_exit_2_naming_it(
    tmp_path: Path, kind: str
) -> None:
    matrix = matrix_at(tmp_path)
    path = lock_path(matrix, matrix.cells[0])
    if kind == "lock-is-a-directory":
        path.mkdir(parents=True)
    elif kind == "lock-not-utf8":
        path.parent.mkdir()
        path.write_bytes(b"# header\nsix==1.16.0 \xff\n")
    else:
        path.parent.write_text("not a directory")
    done = run_cli("lock", "-m", str(matrix.path), env={"PATH": "/nonexistent"})
    assert done.code == 2, done.err
    assert str(path if kind != "constraints-is-a-file" else path.parent) in done.err
    assert "Traceback" not in done.err and "internal error" not in done.err


def test_one_cells_crash_is_that_cells_error_and_the_others_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix = matrix_at(tmp_path, MATRIX.replace('six: ["1.16.0"]', 'six: ["1.16.0", "1.17.0"]'))

    def fake_lock_cell(matrix: Any, cell: Any, settings: Any, **_: Any) -> LockResult:
        if cell.id.endswith("1.16.0"):
            raise TypeError("can only concatenate str (not 'NoneType') to str")
        return LockResult(cell.id, lock_path(matrix, cell), ok=True)

    monkeypatch.setattr(lock, "lock_cell", fake_lock_cell)
    first, second = lock.lock_cells(matrix, matrix.cells, Settings(), Log(verbosity=-1), jobs=2)
    assert not first.ok and first.error and "internal error" in first.error
    assert second.ok


class Named:
    """A resolver that answers a fixed body, recording what it was asked."""

    def __init__(self, name: str, body: str = NEW) -> None:
        self.name, self.body, self.asked = name, body, []

    def resolve(self, cell: Any, settings: Any, **request: Any) -> Resolution:
        self.asked.append(request)
        return Resolution(ok=True, body=self.body)


def test_any_resolver_locks_a_cell_and_its_name_keeps_the_lock_fresh(tmp_path: Path) -> None:
    matrix = matrix_at(tmp_path)
    cell = matrix.cells[0]
    resolver = Named("pip-tools")
    assert lock_cell(matrix, cell, Settings(), resolver=resolver).changed
    lock = read_lock(lock_path(matrix, cell))
    assert lock is not None and "# resolver: pip-tools; python 3.11;" in lock.header
    assert lock.resolver == "pip-tools" and stale_reason(matrix, cell) is None
    assert lock_cell(matrix, cell, Settings(), resolver=Named("uv")).changed  # another digest


def test_a_resolver_gets_the_old_lock_to_keep_its_pins_unless_upgrading(tmp_path: Path) -> None:
    matrix = matrix_at(tmp_path)
    resolver = Named("uv")
    lock_cell(matrix, matrix.cells[0], Settings(), resolver=resolver)
    lock_cell(matrix, matrix.cells[0], Settings(), resolver=resolver, upgrade_packages=["six"])
    lock_cell(matrix, matrix.cells[0], Settings(), resolver=resolver, upgrade=True)
    previous = [asked["previous"] for asked in resolver.asked]
    assert previous[0] is None and "numpy==1.26.4" in previous[1] and previous[2] is None
    assert resolver.asked[1]["upgrade_packages"] == ["six"] and resolver.asked[2]["upgrade"]


def test_a_bumped_cell_starts_from_the_lock_its_bump_left_behind(tmp_path: Path) -> None:
    """A bump renames the cell: its new lock is seeded with the old one's pins (uv keeps them
    where the requirements allow) and its diff is against them; `--upgrade` starts fresh."""
    resolver = Named("uv", body=OLD)
    old = matrix_at(tmp_path)
    lock_cell(old, old.cells[0], Settings(), resolver=resolver)
    bumped = matrix_at(tmp_path, MATRIX.replace('six: ["1.16.0"]', 'six: ["1.17.0"]'))
    resolver.body = NEW
    result = lock_cell(bumped, bumped.cells[0], Settings(), resolver=resolver)
    assert result.seed == lock_path(old, old.cells[0])
    assert "numpy==1.26.3" in resolver.asked[1]["previous"]
    assert result.diff.lines() == ["+ attrs==26.1.0", "- six==1.16.0", "~ numpy 1.26.3 -> 1.26.4"]
    assert "pins kept from cpu.six-1.16.0.txt" in result.summary()
    lock_path(bumped, bumped.cells[0]).unlink()
    fresh = lock_cell(bumped, bumped.cells[0], Settings(), resolver=resolver, upgrade=True)
    assert fresh.seed is None and resolver.asked[2]["previous"] is None


def test_a_seed_is_only_a_lock_no_cell_names_of_the_same_python_and_base(
    tmp_path: Path,
) -> None:
    """Locks of the matrix's own cells (written side by side), of another base or Python,
    edited by hand or unreadable never seed a new cell."""
    resolver = Named("uv", body=OLD)
    two = MATRIX.replace('six: ["1.16.0"]', 'six: ["1.16.0", "1.17.0"]')
    matrix = matrix_at(tmp_path, two)
    lock_cell(matrix, matrix.cells[0], Settings(), resolver=resolver)
    assert lock_cell(matrix, matrix.cells[1], Settings(), resolver=resolver).seed is None
    other = matrix_at(tmp_path, MATRIX.replace('"3.11"', '"3.12"').replace("1.16.0", "1.15.0"))
    lock_cell(other, other.cells[0], Settings(), resolver=resolver)
    edited = lock_path(other, other.cells[0]).with_name("cpu.six-1.14.0.txt")
    edited.write_text(read_lock(lock_path(matrix, matrix.cells[0])).text + "extra==1\n")
    (tmp_path / "constraints" / "bad.txt").write_bytes(b"\xff\xfe not a lock")
    newest = matrix_at(tmp_path, two.replace('"1.17.0"]', '"1.17.0", "1.18.0"]'))
    assert lock_cell(newest, newest.cells[2], Settings(), resolver=resolver).seed is None


class OneContainer:
    """An engine whose one container writes `out.txt` as pip-compile would."""

    name = "fake"

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    def run(self, image: str, argv: Any, **options: Any) -> RunOutcome:
        self.runs.append({"image": image, "argv": argv, **options})
        work = next(m.source for m in options["mounts"] if m.target == "/work")
        (work / "out.txt").write_text(NEW)
        return RunOutcome(exit_code=0, stdout="", stderr="", seconds=0.1)


def test_pip_tools_compiles_in_a_container_of_the_cells_base(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    matrix = matrix_at(tmp_path, MATRIX + "indexes:\n  wheelhouse: [wheels]\n")
    engine = OneContainer()
    result = PipToolsResolver(engine).resolve(matrix.cells[0], Settings())  # type: ignore[arg-type]
    assert result.ok and result.body == NEW
    run = engine.runs[0]
    assert run["image"] == "debian:bookworm" and run["network"]
    assert Mount(wheels, "/wheelhouse/0") in run["mounts"]
    script = run["argv"][-1]
    assert "--find-links /wheelhouse/0" in script and "python3.11 -m venv" in script
