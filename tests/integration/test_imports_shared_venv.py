"""The imports probe in one shared interpreter agrees with one interpreter per module, in the
real probe venvs (see test_probes_venv.py): the good Wan stack with a GPU-at-import and a
missing-module app, and the NumPy-2 venv; and it is faster on the good stack."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.test_probes_venv import UNSAFE, run_probe, venv_python

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "apps"


def lock_of(python: Path, path: Path) -> Path:
    """A lock (pins only) of everything the venv holds."""
    listing = subprocess.run(
        [
            python,
            "-I",
            "-c",
            "import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    pins = json.loads(listing.stdout)
    path.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items()) if n not in UNSAFE))
    return path


def verdicts(result: dict) -> dict[str, tuple[str, str | None]]:
    return {m["module"]: (m["status"], m["class"]) for m in result["details"]["modules"]}


def timed(python: Path, options: dict, tmp_path: Path) -> tuple[dict, float]:
    start = time.monotonic()
    result = run_probe(python, "imports", options, tmp_path)
    return result, time.monotonic() - start


@pytest.mark.parametrize(
    ("app", "entry", "status", "verdict", "alone"),
    [
        ("gpu_app", "t5ish", "fail", ("fail", "gpu-at-import"), 2),
        ("peft_app", "uses_peft", "pass", ("pass", None), 1),
    ],
)
def test_the_good_stack_gives_the_same_verdicts_shared_and_alone(
    app: str, entry: str, status: str, verdict: tuple, alone: int, tmp_path: Path
) -> None:
    good = venv_python("BUILDER_PROBE_VENV")
    options = {
        "lock": str(lock_of(good, tmp_path / "lock.txt")),
        "app_path": str(FIXTURES / app),
        "entry_modules": [entry],
        "optional_imports": ["flash_attn"],
    }
    shared, shared_s = timed(good, {**options, "mode": "shared"}, tmp_path)
    isolated, alone_s = timed(good, {**options, "mode": "alone"}, tmp_path)
    print(f"\n{app}: shared {shared_s:.1f} s, one interpreter per module {alone_s:.1f} s")
    assert verdicts(shared) == verdicts(isolated)
    assert shared["status"] == isolated["status"] == status
    assert verdicts(shared)[entry] == verdict
    assert verdicts(shared)["flash_attn"] == ("warn", "missing-module")
    assert shared["details"]["imported_alone"] == alone  # the failures, and only them


def test_the_numpy2_venv_gives_the_same_verdicts_shared_and_alone(tmp_path: Path) -> None:
    numpy2 = venv_python("BUILDER_PROBE_VENV_NUMPY2")
    options = {"lock": str(lock_of(numpy2, tmp_path / "lock.txt")), "imports": ["peft", "numpy"]}
    shared = run_probe(numpy2, "imports", {**options, "mode": "shared"}, tmp_path)
    alone = run_probe(numpy2, "imports", {**options, "mode": "alone"}, tmp_path)
    assert verdicts(shared) == verdicts(alone)
    assert verdicts(shared)["peft"] == ("fail", "missing-module")
