"""The result cache: entries checked on read, writes that cannot fail a cell, tree digests."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from builder import cache
from builder.records import Verdict
from tests.conftest import FIXTURES

ENTRIES = FIXTURES / "reports" / "cache"  # one stored entry per file, good.json the only valid one
KEY = "0" * 64


def cache_with(tmp_path: Path, fixture: str) -> Path:
    """A cache directory holding the fixture entry under KEY."""
    shutil.copy(ENTRIES / fixture, tmp_path / f"{KEY}.json")
    return tmp_path


def test_a_stored_result_is_read_back_as_it_was_written(tmp_path: Path) -> None:
    record = json.loads((ENTRIES / "good.json").read_text())
    assert cache.store(tmp_path, KEY, record) is None
    assert cache.load(tmp_path, KEY) == cache.Entry(record=record, problem=None)
    assert [p.name for p in tmp_path.iterdir()] == [f"{KEY}.json"]


def test_no_cache_directory_or_no_entry_is_a_plain_miss(tmp_path: Path) -> None:
    assert cache.load(None, KEY) == cache.Entry()
    assert cache.load(tmp_path, KEY) == cache.Entry(record=None, problem=None)


@pytest.mark.parametrize(
    ("fixture", "problem"),
    [
        ("empty_list.json", "$: not a cell record but list"),
        ("empty_object.json", "$: 'id' is a required property"),
        ("bogus_status.json", "$: 'id' is a required property"),
        ("error_status.json", "$.status: 'error' results are never cached"),
        (
            "impossible_finished.json",
            "$.finished: '2025-99-99T00:00:00+00:00' is not a 'date-time'",
        ),
        ("not_json.json", "invalid JSON"),
        ("not_utf8.json", "cannot read cache entry: not UTF-8"),
    ],
)
def test_an_entry_that_is_not_a_valid_cell_is_a_miss_with_a_problem_naming_the_file(
    tmp_path: Path, fixture: str, problem: str
) -> None:
    entry = cache.load(cache_with(tmp_path, fixture), KEY)
    assert entry.record is None
    assert entry.problem is not None
    assert entry.problem.startswith(f"{tmp_path / KEY}.json: ")
    assert problem in entry.problem and entry.problem.endswith("; ignoring it")


def test_a_stored_verdict_reads_back_exactly_even_without_optional_build_keys() -> None:
    record = json.loads((ENTRIES / "good.json").read_text())
    assert "cell_id" not in record["build"]  # the schema lets a build record leave it out
    fields = ("status", "reason", "build", "probes")
    assert Verdict.from_json(record).to_json() == {k: record[k] for k in fields}


def test_a_wrong_field_in_an_otherwise_good_entry_is_named_by_its_json_path(
    tmp_path: Path,
) -> None:
    record = json.loads((ENTRIES / "good.json").read_text())
    record["probes"][0]["status"] = "bogus"
    (tmp_path / f"{KEY}.json").write_text(json.dumps(record))
    problem = cache.load(tmp_path, KEY).problem
    assert problem is not None and "$.probes[0].status: 'bogus' is not one of" in problem


def test_an_entry_nested_100k_deep_is_a_miss(tmp_path: Path) -> None:
    (tmp_path / f"{KEY}.json").write_text("[" * 100_000 + "]" * 100_000)
    assert (
        cache.load(tmp_path, KEY).problem
        == f"{tmp_path / KEY}.json: nested too deeply; ignoring it"
    )


def test_an_entry_path_that_is_a_directory_is_a_miss(tmp_path: Path) -> None:
    (tmp_path / f"{KEY}.json").mkdir()
    problem = cache.load(tmp_path, KEY).problem
    assert problem is not None and "cannot read cache entry: not a regular file" in problem


def test_a_bad_entry_is_replaced_by_the_next_store(tmp_path: Path) -> None:
    cache_with(tmp_path, "bogus_status.json")
    record = json.loads((ENTRIES / "good.json").read_text())
    assert cache.store(tmp_path, KEY, record) is None
    assert cache.load(tmp_path, KEY).record == record


def test_a_cache_write_that_fails_is_returned_not_raised_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    record = json.loads((ENTRIES / "good.json").read_text())
    for cache_dir in (blocker, blocker / "under"):
        problem = cache.store(cache_dir, KEY, record)
        assert problem is not None and problem.startswith(f"{cache_dir / KEY}.json: cannot write")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A tree with a file and a symlink to a file and to a directory outside it."""
    root, outside = tmp_path / "tree", tmp_path / "outside"
    root.mkdir()
    (outside / "dir").mkdir(parents=True)
    (root / "app.py").write_text("print('hi')\n")
    (outside / "secret.txt").write_text("one\n")
    (outside / "dir" / "x.txt").write_text("one\n")
    (root / "link").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to(outside / "dir")
    return root, outside


def test_the_tree_digest_hashes_a_symlink_by_its_target_not_what_is_outside(
    tmp_path: Path,
) -> None:
    root, outside = tree(tmp_path)
    before = cache.tree_digest(root)
    (outside / "secret.txt").write_text("two\n")
    (outside / "dir" / "x.txt").write_text("two\n")
    assert cache.tree_digest(root) == before
    (root / "link").unlink()
    (root / "link").symlink_to(outside / "dir" / "x.txt")
    assert cache.tree_digest(root) != before


def test_the_tree_digest_skips_fifos_instead_of_reading_them(tmp_path: Path) -> None:
    root, _ = tree(tmp_path)
    before = cache.tree_digest(root)
    os.mkfifo(root / "pipe")
    (root / "pipe-link").symlink_to("pipe")
    assert cache.tree_digest(root) != before  # the link's text counts, the FIFO is skipped
    (root / "pipe-link").unlink()
    assert cache.tree_digest(root) == before


def test_the_tree_digest_counts_wheel_names_but_not_their_bytes(tmp_path: Path) -> None:
    root, _ = tree(tmp_path)
    (root / "wheelhouse").mkdir()
    (root / "wheelhouse" / "a.whl").write_bytes(b"one")
    before = cache.tree_digest(root)
    (root / "wheelhouse" / "a.whl").write_bytes(b"two")
    assert cache.tree_digest(root) == before
    (root / "wheelhouse" / "a.whl").rename(root / "wheelhouse" / "b.whl")
    assert cache.tree_digest(root) != before
