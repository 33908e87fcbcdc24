"""Output paths that cannot be written are bad input (exit 2) for every command that writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, run_cli

MATRIX = 'version: 1\nbases:\n  b: {image: "debian:bookworm", python: "3.11"}\naxes:\n  base: [b]\n'
REPORT = FIXTURES / "reports" / "report.json"


def bad_path(tmp_path: Path, kind: str) -> Path:
    (tmp_path / "afile").write_text("keep")
    if kind == "under-a-file":
        return tmp_path / "afile" / "out"
    if kind == "fifo":
        os.mkfifo(tmp_path / "pipe")
        return tmp_path / "pipe"
    return tmp_path / "afile"  # a file where a directory is wanted (render, validate)


@pytest.mark.parametrize("kind", ["under-a-file", "fifo"])
def test_report_into_an_unwritable_path_is_exit_2(tmp_path: Path, kind: str) -> None:
    target = bad_path(tmp_path, kind)
    done = run_cli("report", str(REPORT), "--format", "md", "-o", str(target), timeout=60)
    assert done.code == 2, done.err
    assert str(target) in done.err and "Traceback" not in done.err
    assert (tmp_path / "afile").read_text() == "keep"


@pytest.mark.parametrize("command", ["render", "validate"])
@pytest.mark.parametrize("kind", ["under-a-file", "a-file", "fifo"])
def test_render_and_validate_into_an_unwritable_directory_are_exit_2(
    tmp_path: Path, command: str, kind: str
) -> None:
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    target = bad_path(tmp_path, kind)
    done = run_cli(command, "-m", str(tmp_path / "matrix.yaml"), "-o", str(target), timeout=60)
    assert done.code == 2, done.err
    assert str(target) in done.err and "Traceback" not in done.err
    assert (tmp_path / "afile").read_text() == "keep"


def test_report_into_a_read_only_directory_is_exit_2(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    target = folder / "r.md"
    done = run_cli("report", str(REPORT), "-o", str(target), unprivileged=True, timeout=60)
    assert done.code == 2, done.err
    assert f"{target}: cannot write: Permission denied" in done.err
    assert list(folder.iterdir()) == []


def test_lock_into_a_read_only_constraints_directory_is_exit_2_before_resolving(
    tmp_path: Path,
) -> None:
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    (tmp_path / "constraints").mkdir(mode=0o555)
    done = run_cli("lock", "-m", str(tmp_path / "matrix.yaml"), unprivileged=True, timeout=60)
    assert done.code == 2, done.err
    assert f"{tmp_path / 'constraints'}: cannot write: Permission denied" in done.err
