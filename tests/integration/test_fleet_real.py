"""The fleet against real files: a CUDA torch wheel's libtorch_python.so read from PyPI (HTTP
Range requests, only that member), a real CUDA torch installed from PyPI into a venv (torch
2.4.1, cu121, with its nvidia-* wheels: about 2.8 GB, kept under /var/tmp/builder-fleet between
runs), and the cuda probe in the prepared CPU venv.

The members are cached under /var/tmp/builder-fleet (BUILDER_FLEET_CACHE) between runs, by
the wheel's sha256, so a second run reads no network. The probe reads the arch list without a
GPU the way it does inside an image (its `library_arch_flags`, the fallback of
`torch._C._cuda_getArchFlags()`), and the result must be the committed table's row.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.version import Version

from builder.check.fleet import find_build, probe_option
from builder.matrix import load_matrix
from builder.settings import find_uv
from tests.conftest import ROOT, run_probe_script

CACHE = Path(os.environ.get("BUILDER_FLEET_CACHE", "/var/tmp/builder-fleet"))
GOOD_VENV = Path(os.environ.get("BUILDER_PROBE_VENV", "/var/tmp/builder-probe-venvs/good"))


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


probe = load(ROOT / "validate" / "cuda.py", "fleet_real_probe")


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return load(ROOT / "scripts" / "gen_arch_lists.py", "fleet_real_gen")


@pytest.fixture(scope="module")
def wheels(gen: ModuleType) -> dict[str, Any]:
    index = json.loads(gen.fetch(gen.PYPI_JSON))
    return {str(w.version): w for w in gen.pypi_wheels(index, Version("2.4"))}


def member(gen: ModuleType, wheel: Any, name: str) -> Path:
    """One member of a real wheel, fetched by range requests once, then from the cache."""

    def fetch() -> bytes:
        data: bytes = gen.read_member(wheel.url, gen.central_directory(wheel.url, wheel.size)[name])
        return data

    gen.cached(CACHE, wheel, name, fetch)
    return Path(CACHE / wheel.sha256 / name.replace("/", "__"))


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize(
    ("torch", "cuda"),
    [("2.4.1", "cu121"), ("2.8.0", "cu128")],  # 2.8's string follows an unterminated one
)
def test_the_probe_reads_a_real_wheels_arch_list_without_a_gpu_as_the_table_has_it(
    gen: ModuleType, wheels: dict[str, Any], torch: str, cuda: str
) -> None:
    wheel = wheels[torch]
    assert (
        gen.wheel_cuda(member(gen, wheel, gen.VERSION_PY).read_bytes())
        == f"{cuda[2:-1]}.{cuda[-1]}"
    )
    flags = probe.library_arch_flags(member(gen, wheel, gen.LIBRARY))
    row = find_build(Version(torch), cuda)
    assert row is not None and row[0].measured
    assert flags is not None and flags.split() == list(row[0].arch)
    assert wheel.sha256 in row[0].source


@pytest.mark.slow
@pytest.mark.network
def test_the_fatbin_reader_finds_the_kernels_of_a_real_torch_library(
    gen: ModuleType, wheels: dict[str, Any]
) -> None:
    """libtorch_cuda_linalg.so (49 MB packed) holds SASS for the table's list less sm_75, which
    sm_70's binaries cover (same major); no PTX."""
    library = member(gen, wheels["2.4.1"], "torch/lib/libtorch_cuda_linalg.so")
    found = probe.fatbin_archs(library)
    assert found == ["sm_50", "sm_60", "sm_70", "sm_80", "sm_86", "sm_90"]
    row = find_build(Version("2.4.1"), "cu121")
    assert row is not None and set(found) <= set(row[0].arch)


def good_python() -> Path:
    python = GOOD_VENV / "bin" / "python"
    if not python.exists():
        problem = f"no probe venv at {GOOD_VENV} (scripts/setup.sh makes it)"
        if os.environ.get("CI"):
            pytest.fail(f"{problem}; CI is set: the probe venv tests must run")
        pytest.skip(problem)
    return python


@pytest.mark.slow
def test_the_cuda_probe_on_the_example_cpu_cell_says_the_fleet_is_not_applicable(
    tmp_path: Path,
) -> None:
    cell = load_matrix(ROOT / "examples" / "wan-cpu" / "matrix.yaml").cells[0]
    options = {"cuda": cell.base.cuda, "gpu": cell.gpu, "fleet": probe_option(cell)}
    result = run_probe_script(good_python(), "cuda", options, tmp_path)
    assert result["status"] == "skipped"
    assert result["details"]["fleet"]["verdict"] == "fleet: not applicable (CPU build)"
    assert result["details"]["fleet"]["applicable"] is False


@pytest.mark.slow
def test_a_declared_fleet_on_a_cpu_build_is_not_applicable_and_does_not_fail(
    tmp_path: Path,
) -> None:
    fleet = {"gpus": [{"name": "rtx5090", "sm": "sm_120", "label": "NVIDIA GeForce RTX 5090"}]}
    result = run_probe_script(good_python(), "cuda", {"gpu": "optional", "fleet": fleet}, tmp_path)
    assert (result["status"], result["reason"]) == (
        "skipped",
        "no GPU visible; fleet: not applicable (CPU build)",
    )


CUDA_TORCH = "2.4.1"  # PyPI's default torch 2.4.1 is the cu121 build


@pytest.fixture(scope="module")
def cuda_torch_python() -> Path:
    """A venv with PyPI's CUDA torch and its nvidia-* wheels installed, made once (under a lock,
    `.ready` written last) and kept between runs."""
    venv = CACHE / f"venv-torch-{CUDA_TORCH}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{venv.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".ready").exists():
            shutil.rmtree(venv, ignore_errors=True)
            uv = find_uv(os.environ.get("PATH", ""))
            assert uv, "uv is a dependency of builder"
            make = [uv, "venv", "-q", "--python", sys.executable, str(venv)]
            subprocess.run(make, check=True)
            install = [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python")]
            subprocess.run([*install, f"torch=={CUDA_TORCH}"], check=True, timeout=1800)
            (venv / ".ready").touch()
    return venv / "bin" / "python"


@pytest.mark.slow
@pytest.mark.network
def test_a_real_cuda_torch_installed_from_pypi_reports_the_tables_arch_list_without_a_gpu(
    cuda_torch_python: Path,
) -> None:
    code = (
        "import json, torch; print(json.dumps([torch.version.cuda,"
        " torch._C._cuda_getArchFlags(), torch.cuda.is_available()]))"
    )
    done = subprocess.run(
        [str(cuda_torch_python), "-c", code], capture_output=True, text=True, check=True
    )
    cuda, flags, available = json.loads(done.stdout.splitlines()[-1])
    assert (cuda, available) == ("12.1", False)  # a CUDA build, on a machine with no GPU
    row = find_build(Version(CUDA_TORCH), "cu121")
    assert row is not None and row[0].measured
    assert flags.split() == list(row[0].arch)


@pytest.mark.slow
@pytest.mark.network
def test_the_cuda_probe_judges_the_fleet_from_a_real_cuda_torch_with_no_gpu(
    cuda_torch_python: Path, tmp_path: Path
) -> None:
    """The probe as it runs in a CUDA cell's image: no GPU, the arch list read from torch,
    the RTX 5090 failed with the table's message, the A100 and H100 passed."""
    gpus = [
        {"name": "a100", "sm": "sm_80", "label": "NVIDIA A100"},
        {"name": "h100", "sm": "sm_90", "label": "NVIDIA H100"},
        {"name": "rtx5090", "sm": "sm_120", "label": "NVIDIA GeForce RTX 5090"},
    ]
    options = {"cuda": "12.1", "gpu": "optional", "fleet": {"gpus": gpus}}
    result = run_probe_script(cuda_torch_python, "cuda", options, tmp_path)
    fleet = result["details"]["fleet"]
    assert fleet["arch_source"] == "torch._C._cuda_getArchFlags()"
    assert [(g["gpu"], g["status"]) for g in fleet["gpus"]] == [
        ("a100", "pass"),
        ("h100", "pass"),
        ("rtx5090", "fail"),
    ]
    assert result["status"] == "fail"
    assert "sm_120 not in torch 2.4.1+cu121" in result["reason"], result["reason"]
    only = {"gpus": gpus[:2]}
    result = run_probe_script(cuda_torch_python, "cuda", {**options, "fleet": only}, tmp_path)
    assert result["status"] == "pass", result["reason"]
    assert "no GPU visible: the device checks did not run" in result["reason"]
