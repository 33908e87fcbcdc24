"""The probes against real virtual environments: a good Wan stack and a broken NumPy-2 one.

The venvs are made by the harness, not here (torch comes from a local CPU wheel):
- ``BUILDER_PROBE_VENV``: torch 2.13 (CPU), numpy<2, transformers 4.51.3, diffusers 0.35,
  decord, imageio(-ffmpeg), soundfile, librosa, peft, accelerate, sentencepiece, einops,
  packaging.
- ``BUILDER_PROBE_VENV_NUMPY2``: numpy>=2 and packaging, no torch.
- ``BUILDER_PROBE_VENV_OLD_DIFFUSERS`` (optional): as the good one with diffusers 0.33.1, whose
  Wan pipelines predate Wan 2.2.
Each test is skipped, saying which variable to set, when its venv is not there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.resources import GENERATE_VARIANTS
from tests.conftest import NVIDIA, run_probe_script

pytestmark = pytest.mark.slow

VARIANTS = list(GENERATE_VARIANTS)
# What pip-compile leaves out of a lock unless asked (--allow-unsafe).
UNSAFE = {"pip", "setuptools", "wheel"}


def venv_python(variable: str) -> Path:
    root = os.environ.get(variable)
    python = Path(root or "") / "bin" / "python"
    if not root or not python.exists():
        problem = f"set {variable} to a prepared venv (scripts/setup.sh makes them)"
        if os.environ.get("CI"):
            pytest.fail(f"{problem}; CI is set: the probe venv tests must run")
        pytest.skip(problem)
    return python


@pytest.fixture(scope="session", autouse=True)
def suite_clock() -> Iterator[None]:
    start = time.monotonic()
    yield
    print(f"\nprobe venv suite: {time.monotonic() - start:.1f} s wall")


@pytest.fixture(scope="session")
def good() -> Path:
    return venv_python("BUILDER_PROBE_VENV")


@pytest.fixture(scope="session")
def numpy2() -> Path:
    return venv_python("BUILDER_PROBE_VENV_NUMPY2")


@pytest.fixture(scope="session")
def old_diffusers() -> Path:
    return venv_python("BUILDER_PROBE_VENV_OLD_DIFFUSERS")


@pytest.fixture(scope="session")
def good_lock(good: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pip-compile style lock (pins, hashes, via comments) of what the good venv holds."""
    listing = subprocess.run(
        [
            good,
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
    lock = tmp_path_factory.mktemp("lock") / "requirements.lock"
    lines = [f"# pip-compile --generate-hashes, simulated from {good}"]
    for name, version in sorted(pins.items(), key=lambda item: item[0].lower()):
        if name.lower() not in UNSAFE:
            lines += [f"{name}=={version} \\", f"    --hash=sha256:{'0' * 64}", "    # via -r x.in"]
    lock.write_text("\n".join(lines) + "\n")
    return lock


def run_probe(python: Path, name: str, options: dict, tmp_path: Path) -> dict:
    """Run one probe as the runner does and check the output and exit-code contract."""
    return run_probe_script(python, name, options, tmp_path)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("imports", {"optional_imports": ["flash_attn"]}),
        ("numpy", {"numpy_spec": "<2,>=1.23.5"}),
        ("pip-check", {"method": "pip"}),
        ("pip-check", {"method": "metadata"}),
        ("lock-match", {}),
        ("media", {"require": ["decord", "soundfile", "librosa", "imageio", "ffmpeg"]}),
        ("generate", {"variants": ["wan2.1"]}),
    ],
    ids=[
        "imports",
        "numpy",
        "pip-check-pip",
        "pip-check-metadata",
        "lock-match",
        "media",
        "generate",
    ],
)
def test_every_probe_passes_in_the_good_venv(
    good: Path, good_lock: Path, tmp_path: Path, name: str, options: dict
) -> None:
    common = {"lock": str(good_lock), "cuda": None, "gpu": "optional", "python": "3.11"}
    result = run_probe(good, name, {**common, **options}, tmp_path)
    assert result["status"] == "pass", result


def test_cuda_is_skipped_without_a_gpu_unless_the_cell_requires_one(
    good: Path, tmp_path: Path
) -> None:
    skipped = run_probe(good, "cuda", {"cuda": "12.1", "gpu": "optional"}, tmp_path)
    assert (skipped["status"], skipped["reason"]) == ("skipped", "no GPU visible")
    required = run_probe(good, "cuda", {"cuda": "12.1", "gpu": "required"}, tmp_path)
    assert required["status"] == "fail"


def test_generate_makes_frames_for_every_variant_the_installed_diffusers_supports(
    good: Path, tmp_path: Path
) -> None:
    start = time.monotonic()
    result = run_probe(good, "generate", {"variants": VARIANTS}, tmp_path)
    print(
        f"\ngenerate, all {len(VARIANTS)} variants in one process: {time.monotonic() - start:.1f} s"
    )
    assert result["status"] == "pass", result
    assert result["details"]["network_attempts"] == []
    for name, variant in result["details"]["variants"].items():
        print(
            f"  {name}: {variant['status']}, {variant['wall_seconds']} s wall, "
            f"{variant.get('seconds_per_step', '-')} s/step on {variant['device']}"
        )
        assert variant["status"] in ("pass", "skipped"), variant
        if variant["status"] == "pass" and name != "multitalk-audio":
            assert variant["frames_shape"][0] == 9
            assert variant["video"]["status"] == "pass"
    assert result["details"]["variants"]["multitalk-audio"]["hidden_shape"] == [1, 49, 32]


def test_the_two_experts_of_wan22_a14b_both_denoise(good: Path, tmp_path: Path) -> None:
    result = run_probe(good, "generate", {"variants": ["wan2.2-a14b"]}, tmp_path)
    calls = result["details"]["variants"]["wan2.2-a14b"]["transformer_calls"]
    assert calls["transformer"] > 0 and calls["transformer_2"] > 0


def test_numpy_probe_fails_when_numpy_2_is_installed_against_a_numpy_1_pin(
    numpy2: Path, tmp_path: Path
) -> None:
    result = run_probe(numpy2, "numpy", {"numpy_spec": "<2"}, tmp_path)
    assert result["status"] == "fail"
    assert result["reason"].startswith("numpy 2.")


def test_imports_reports_a_missing_required_module_as_missing_module(
    numpy2: Path, tmp_path: Path
) -> None:
    result = run_probe(numpy2, "imports", {"imports": ["peft", "numpy"]}, tmp_path)
    modules = {m["module"]: (m["status"], m["class"]) for m in result["details"]["modules"]}
    assert result["status"] == "fail"
    assert modules == {"peft": ("fail", "missing-module"), "numpy": ("pass", None)}


def test_an_entry_module_that_needs_a_gpu_at_import_is_classified_gpu_at_import(
    good: Path, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    (app / "wan").mkdir(parents=True)
    (app / "wan" / "__init__.py").write_text(f"import torch\nraise RuntimeError({NVIDIA!r})\n")
    options = {"app_path": str(app), "entry_modules": ["wan"]}
    result = run_probe(good, "imports", options, tmp_path)
    (module,) = result["details"]["modules"]
    assert (result["status"], module["class"]) == ("fail", "gpu-at-import")


def test_lock_match_names_the_pin_that_differs(good: Path, good_lock: Path, tmp_path: Path) -> None:
    lock = tmp_path / "drifted.lock"
    lock.write_text(re.sub(r"(?m)^peft==\S+", "peft==0.14.0", good_lock.read_text()))
    result = run_probe(good, "lock-match", {"lock": str(lock)}, tmp_path)
    assert result["status"] == "fail"
    assert [m["name"] for m in result["details"]["mismatched"]] == ["peft"]


def test_variants_an_old_diffusers_lacks_are_skipped_with_its_own_message(
    old_diffusers: Path, tmp_path: Path
) -> None:
    result = run_probe(old_diffusers, "generate", {"variants": ["wan2.1", "wan2.2-a14b"]}, tmp_path)
    variants = result["details"]["variants"]
    assert (result["status"], variants["wan2.1"]["status"]) == ("pass", "pass")
    assert variants["wan2.2-a14b"]["status"] == "skipped"
    assert "unexpected keyword argument" in variants["wan2.2-a14b"]["reason"]


def test_a_required_variant_an_old_diffusers_lacks_fails(
    old_diffusers: Path, tmp_path: Path
) -> None:
    options = {"variants": ["wan2.2-ti2v-5b"], "required_variants": ["wan2.2-ti2v-5b"]}
    result = run_probe(old_diffusers, "generate", options, tmp_path)
    assert result["status"] == "fail"
    assert "unexpected keyword argument" in result["reason"]
