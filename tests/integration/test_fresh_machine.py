"""What a new user hits first: `.venv/bin/builder` run without the venv on PATH, many cells at
once, and a run stopped with SIGTERM. Real uv, a local index and wheelhouse (no network)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from builder.probe import run_limited
from tests.conftest import run_cli

pytestmark = [pytest.mark.slow]

MATRIX = """version: 1
bases:
  one: {{image: debian:bookworm, python: "3.11"}}
  two: {{image: debian:bookworm, python: "3.11"}}
axes:
  base: [one, two]
  tinypkg: ["1.0", "1.1"]
indexes: {{index_url: "file://{index}", wheelhouse: [wheels]}}
probes: [numpy]
"""
# Only the system's own directories: neither uv nor the dev venv is on PATH.
BARE_PATH = "/usr/local/bin:/usr/bin:/bin"


def make_wheel(folder: Path, name: str, version: str) -> None:
    """A minimal valid pure-Python wheel, so resolution needs no network."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = (
        "".join(
            f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
            for path, data in files.items()
        )
        + f"{dist}/RECORD,,\n"
    )
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
        whl.writestr(f"{dist}/RECORD", record)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "wheels").mkdir()
    (tmp_path / "index").mkdir()
    for version in ("1.0", "1.1"):
        make_wheel(tmp_path / "wheels", "tinypkg", version)
    (tmp_path / "matrix.yaml").write_text(MATRIX.format(index=tmp_path / "index"))
    return tmp_path


def bare_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": BARE_PATH,
        "BUILDER_CACHE_DIR": str(tmp_path / "cache"),
        "TMPDIR": str(tmp_path),
    }


def test_lock_and_check_never_crash_with_uv_off_path_twenty_runs_in_a_row(project: Path) -> None:
    env = bare_env(project)
    for run in range(20):
        for path in (project / "constraints").glob("*"):
            path.unlink()
        locked = run_cli("lock", "-m", str(project / "matrix.yaml"), "-j", "4", env=env)
        assert locked.code == 0, f"run {run}: {locked.out}{locked.err}"
        assert len(list((project / "constraints").glob("*.txt"))) == 4
        for path in (project / "constraints").glob("*"):
            path.unlink()  # cold again: check resolves every cell itself, on threads
        shutil.rmtree(project / "cache", ignore_errors=True)  # no cached resolutions either
        checked = run_cli("check", "-m", str(project / "matrix.yaml"), env=env)
        assert checked.code in (0, 1) and "internal error" not in checked.err, checked.err


def test_sigterm_during_lock_kills_uv_and_leaves_no_temp_dirs(project: Path) -> None:
    fake = project / "bin"
    fake.mkdir()
    pids = project / "uv.pids"
    (fake / "uv").write_text(f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 600\n")
    (fake / "uv").chmod(0o755)
    env = {**os.environ, **bare_env(project), "PATH": f"{fake}:{BARE_PATH}"}
    builder = subprocess.Popen(
        [sys.executable, "-m", "builder", "lock", "-m", str(project / "matrix.yaml"), "-j", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not (pids.exists() and len(pids.read_text().split()) == 2):  # both uvs started
        assert builder.poll() is None and time.monotonic() < deadline, builder.stderr
        time.sleep(0.05)
    builder.send_signal(signal.SIGTERM)
    _, err = builder.communicate(timeout=60)
    assert builder.returncode == 143, err
    for pid in pids.read_text().split():
        assert not Path(f"/proc/{pid}").exists(), f"uv {pid} outlived builder"
    assert not list(project.glob("builder-lock-*"))


def test_a_probe_that_writes_bytes_that_are_not_utf8_is_read_not_fatal() -> None:
    code = "import sys; sys.stderr.buffer.write(b'\\xff\\xfe'); print('{}')"
    outcome = run_limited([sys.executable, "-c", code], {}, 30, 2**30)
    assert outcome.exit_code == 0 and outcome.stderr == "\ufffd\ufffd"
