"""Plumbing: settings read once, atomic writes that name the path, child processes and pools."""

from __future__ import annotations

import ast
import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from builder import proc
from builder.errors import InputError
from builder.files import read_text, staged_dir, write_atomic
from builder.settings import from_environ

BUILDER = Path(__file__).resolve().parents[2] / "builder"


def test_settings_give_each_cache_its_own_variable(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = from_environ(
        {
            "HOME": str(tmp_path),
            "BUILDER_CACHE_DIR": str(tmp_path / "root"),
            "BUILDER_RESULT_CACHE": str(tmp_path / "results"),
            "BUILDER_CA_BUNDLE": str(ca),
            "HF_TOKEN": "hf_secret",
            "PATH": "/nonexistent",
        }
    )
    assert settings.metadata_cache == tmp_path / "root" / "metadata"
    assert settings.result_cache == tmp_path / "results"
    assert settings.ca_for(None) == ca
    assert settings.ca_for(tmp_path / "matrix-ca.pem") == tmp_path / "matrix-ca.pem"
    assert settings.secret_files(None) == {"cacert": ca}
    assert "hf_secret" not in repr(settings)


def test_uv_is_found_without_path_from_the_uv_wheel() -> None:
    settings = from_environ({"PATH": "/nonexistent", "HOME": "/tmp"})
    assert Path(settings.uv).name == "uv" and os.access(settings.uv, os.X_OK)


def test_a_ca_bundle_variable_that_names_no_file_is_bad_input_when_used(tmp_path: Path) -> None:
    settings = from_environ({"HOME": str(tmp_path), "BUILDER_CA_BUNDLE": str(tmp_path / "nope")})
    with pytest.raises(InputError, match="BUILDER_CA_BUNDLE"):
        settings.ca_for(None)
    assert settings.ca_for(tmp_path) == tmp_path  # the matrix's own bundle wins, unchecked here


def _reads_environment(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            pair = f"{node.value.id}.{node.attr}"
            if pair in ("os.environ", "sys.argv", "Path.home", "os.getenv"):
                found.append(f"{pair} at line {node.lineno}")
    return found


def test_nothing_below_the_cli_reads_the_environment_or_argv() -> None:
    offenders = {
        path.name: hits
        for path in sorted(BUILDER.glob("*.py"))
        if path.name not in ("cli.py", "settings.py")
        and (hits := _reads_environment(ast.parse(path.read_text())))
    }
    assert offenders == {}


def test_write_atomic_honours_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


@pytest.mark.parametrize("kind", ["under-a-file", "directory", "fifo"])
def test_write_atomic_refuses_what_it_cannot_write_and_leaves_nothing(
    tmp_path: Path, kind: str
) -> None:
    (tmp_path / "file").write_text("keep")
    target = (
        {"under-a-file": tmp_path / "file" / "x", "directory": tmp_path}[kind]
        if kind != "fifo"
        else tmp_path / "pipe"
    )
    if kind == "fifo":
        os.mkfifo(target)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError, match="cannot write") as caught:
        write_atomic(target, "data")
    assert str(target) in caught.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "file").read_text() == "keep"


def test_staged_dir_replaces_the_target_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with staged_dir(target) as stage:
        (stage / "a").write_text("1")
    with pytest.raises(RuntimeError), staged_dir(target) as stage:
        (stage / "b").write_text("2")
        raise RuntimeError("half way")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in target.iterdir()] == ["a"]


def test_read_text_names_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "lock.txt"
    path.write_bytes(b"six==1.0 \xff\n")
    with pytest.raises(InputError, match=r"lock.txt: cannot read lock: not UTF-8"):
        read_text(path, "lock")


def test_a_child_writing_bytes_that_are_not_utf8_is_read_with_replacement() -> None:
    done = proc.run([sys.executable, "-c", "import sys; sys.stderr.buffer.write(b'\\xff ok')"])
    assert done.returncode == 0 and done.stderr == "\ufffd ok"


def test_a_cancelled_child_is_killed() -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(proc.Cancelled):
        proc.run([sys.executable, "-c", "import time; time.sleep(60)"], cancel=cancel)


def test_one_items_crash_is_its_result_and_the_others_still_run() -> None:
    def work(item: int, cancel: threading.Event) -> str:
        if item == 2:
            raise ZeroDivisionError("boom")
        return f"ok {item}"

    results = proc.parallel_map(work, [1, 2, 3], 2, lambda item, exc: f"crashed {item}: {exc}")
    assert results == ["ok 1", "crashed 2: boom", "ok 3"]


def test_bad_input_in_one_item_still_ends_the_run() -> None:
    def work(item: int, cancel: threading.Event) -> int:
        raise InputError("read-only")

    with pytest.raises(InputError):
        proc.parallel_map(work, [1], 1, lambda item, exc: 0)


def test_write_atomic_writes_through_a_symlink_and_keeps_the_link(tmp_path: Path) -> None:
    (tmp_path / "target.md").write_text("old")
    (tmp_path / "link.md").symlink_to("target.md")
    write_atomic(tmp_path / "link.md", "new")
    assert (tmp_path / "link.md").is_symlink()
    assert (tmp_path / "target.md").read_text() == "new"


def test_write_atomic_refuses_a_symlink_to_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "out").symlink_to("pipe")
    with pytest.raises(InputError, match="not a regular file"):
        write_atomic(tmp_path / "out", "x")
    assert (tmp_path / "out").is_symlink()


def test_ca_bundle_and_netrc_reach_uv_from_one_policy(tmp_path: Path) -> None:
    from builder.lock import uv_env
    from builder.matrix import parse_matrix

    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "netrc").write_text("machine x")
    text = (
        'version: 1\nbases:\n  b: {image: "debian:bookworm", python: "3.11"}\naxes:\n  base: [b]\n'
    )
    cell = parse_matrix(text, tmp_path / "matrix.yaml").cells[0]
    settings = from_environ(
        {
            "HOME": str(tmp_path),
            "BUILDER_CA_BUNDLE": str(tmp_path / "ca.pem"),
            "BUILDER_NETRC": str(tmp_path / "netrc"),
        }
    )
    env = uv_env(cell, settings, offline=True)
    assert env["SSL_CERT_FILE"] == str(tmp_path / "ca.pem")
    assert env["NETRC"] == str(tmp_path / "netrc")
    assert env["UV_OFFLINE"] == "1" and env["UV_PYTHON_DOWNLOADS"] == "never"
