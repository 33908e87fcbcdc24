"""`reuse_preinstalled` on the real engine, on a PyTorch-like base made locally (the test base
with the CPU torch wheel in its system Python): the image holds one torch and passes its probes;
a declared torch the base does not carry fails lock-match naming both versions; `auto` reads the
base's torch; a pin against the reused torch is a check error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from builder.lock import parse_lock, read_lock
from tests.conftest import SYSTEM_CA, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

MATRIX = """version: 1
bases:
  auto: {{image: "{base}", python: "3.11", preinstalled: auto, reuse_preinstalled: true}}
  declared:
    image: "{base}"
    python: "3.11"
    preinstalled: [torch==2.12.0]
    reuse_preinstalled: true
axes:
  base: [auto, declared]
requirements: ["numpy<2", "six", "torch"]
indexes:
  wheelhouse: [/opt/wheels]
  ca_bundle: {ca}
probes: [numpy, pip-check, lock-match]
"""
AUTO, DECLARED = "auto", "declared"


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory, torch_base_image: str) -> dict[str, Any]:
    project = tmp_path_factory.mktemp("reuse")
    (project / "matrix.yaml").write_text(MATRIX.format(base=torch_base_image, ca=SYSTEM_CA))
    locked = run_cli("lock", cwd=project)
    assert locked.code == 0, locked.err
    done = run_cli("validate", "--build-anyway", "-o", "out", cwd=project)
    report = json.loads((project / "out" / "report.json").read_text())
    return {"project": project, "code": done.code, "cells": {c["id"]: c for c in report["cells"]}}


def probe(cell: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in cell["probes"] if p["probe"] == name)


def test_auto_reads_the_bases_torch_and_the_lock_marks_it_from_base(
    validated: dict[str, Any],
) -> None:
    lock = read_lock(validated["project"] / "constraints" / f"{AUTO}.txt")
    assert lock is not None and "read from the image (" in lock.header
    pins = {p.name: p for p in parse_lock(lock.text)}
    assert pins["torch"].version == "2.13.0+cpu" and pins["torch"].from_base
    assert not pins["six"].from_base
    assert validated["cells"][AUTO]["lock"]["preinstalled"] == "reused"


def test_the_reused_image_holds_one_torch_and_passes_every_probe(
    validated: dict[str, Any],
) -> None:
    cell = validated["cells"][AUTO]
    assert cell["status"] == "pass", cell
    found = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            cell["build"]["tag"],
            "sh",
            "-c",
            "find / -xdev -path '*-packages/torch/__init__.py' 2>/dev/null",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert found == ["/usr/local/lib/python3.11/dist-packages/torch/__init__.py"]
    assert probe(cell, "lock-match")["details"]["from_base"] > 0


def test_a_declared_torch_the_base_does_not_carry_fails_lock_match_naming_both(
    validated: dict[str, Any],
) -> None:
    cell = validated["cells"][DECLARED]
    match = probe(cell, "lock-match")
    assert match["status"] == "fail" and cell["status"] == "fail"
    assert "torch: lock 2.12.0, the base carries 2.13.0+cpu" in match["reason"]
    assert validated["code"] == 1  # one cell failed, the other still passed


def test_a_pin_against_the_reused_torch_is_a_check_error(
    tmp_path: Path, torch_base_image: str
) -> None:
    text = MATRIX.format(base=torch_base_image, ca=SYSTEM_CA).replace(
        "  base: [auto, declared]", '  base: [auto]\n  torch: ["2.12.0"]'
    )
    (tmp_path / "matrix.yaml").write_text(text)
    done = run_cli("check", "--format", "json", cwd=tmp_path)
    findings = json.loads(done.out)["cells"][0]["findings"]
    conflict = next(f for f in findings if f["code"] == "reused-conflict")
    assert done.code == 1 and "torch==2.13.0+cpu" in conflict["hint"]
