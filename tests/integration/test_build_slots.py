"""Builds run from context slots that outlive the cell id: a bump sends BuildKit only what
changed, and a slot reused by another cell never builds from the previous cell's files."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from builder.build import build_cell
from builder.engine import DockerEngine
from builder.log import Log
from builder.matrix import load_matrix
from builder.render import render_cell
from builder.settings import from_environ
from tests.conftest import SYSTEM_CA, WHEELS, run_cli
from tests.integration.test_build import REALISTIC, write_matrix

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

TWINS = """version: 1
bases:
  bookworm: {{image: "{base}", python: "3.11"}}
axes:
  base: [bookworm]
  six: ["1.16.0", "1.17.0"]
indexes:
  ca_bundle: {ca}
"""


def installed(tag: str, name: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({name!r}))"
    argv = ["docker", "run", "--rm", "--network", "none", tag, "python", "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def test_cells_rendered_in_one_clock_tick_each_build_their_own_pins(
    base_image: str, tmp_path: Path
) -> None:
    """Their pins files have the same size, and here the same mtime too: BuildKit, which
    compares only stat, must still get the second cell's file."""
    write_matrix(tmp_path, TWINS, base_image)
    assert run_cli("lock", cwd=tmp_path).code == 0
    matrix = load_matrix(tmp_path / "matrix.yaml")
    settings = from_environ(dict(os.environ))
    log = Log(verbosity=-1)
    output = tmp_path / "build"
    rendered = [render_cell(matrix, cell, output, log) for cell in matrix.cells]
    pins = [r.directory / "requirements" / "pins.txt" for r in rendered]
    assert pins[0].stat().st_size == pins[1].stat().st_size
    for path in pins:
        os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    engine = DockerEngine(settings, log)
    for cell, context in zip(matrix.cells, rendered, strict=True):
        record = build_cell(matrix, cell, engine, settings, output, log, rendered=context)
        assert record.ok, record.log_tail
        assert installed(record.tag, "six") == dict(cell.axes)["six"]
    assert len(list((output / ".contexts").glob("*-0"))) == 1  # both built in one slot


@pytest.mark.skipif(
    not any(WHEELS.glob("torch-2.13.0*.whl")), reason="CPU torch wheelhouse missing"
)
def test_a_bump_sends_buildkit_kilobytes_not_the_torch_wheel(
    base_image: str, tmp_path: Path
) -> None:
    write_matrix(tmp_path, REALISTIC, base_image)
    assert run_cli("lock", cwd=tmp_path).code == 0
    first = run_cli("build", "--cell", "*4.51.3", cwd=tmp_path)
    assert first.code == 0, first.out + first.err
    second = run_cli("build", "--cell", "*4.50.3", "--format", "json", cwd=tmp_path)
    assert second.code == 0, second.out
    log = Path(json.loads(second.out)["cells"][0]["log"]).read_text()
    sent = re.findall(r"^#\d+ transferring context: ([\d.]+)([kMG]?B)", log, re.M)
    scale = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
    assert sent and max(float(n) * scale[u] for n, u in sent) < 5e6, sent


def test_no_secret_file_lands_in_a_slot(base_image: str, tmp_path: Path) -> None:
    write_matrix(tmp_path, TWINS, base_image, ca=SYSTEM_CA)
    assert run_cli("lock", cwd=tmp_path).code == 0
    assert run_cli("build", "--cell", "*1.16.0", cwd=tmp_path).code == 0
    secret = SYSTEM_CA.stat()
    for path in (tmp_path / "build" / ".contexts").rglob("*"):
        if path.is_file():
            found = path.stat()
            assert (found.st_dev, found.st_ino) != (secret.st_dev, secret.st_ino), path
