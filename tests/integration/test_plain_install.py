"""A user's install: the wheel, no extras, in a fresh venv, run by its own `builder` script with
the dev venv off PATH. Every command's happy path must work there, which catches a module
builder imports at runtime that only the dev extra installs (exit 4, ModuleNotFoundError)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from uv import find_uv_bin

from tests.conftest import FIXTURES, ROOT, Run
from tests.unit.test_check import seed_resolutions
from tests.unit.test_inspect import diffusers_model

pytestmark = [pytest.mark.slow, pytest.mark.network]  # builds a wheel; installs from PyPI

REPORT = FIXTURES / "reports" / "report.json"
DEV_BIN = Path(sys.executable).parent
Builder = Callable[..., Run]


def plain_env() -> dict[str, str]:
    """The environment without the dev venv: not on PATH, not active, not importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    path = os.environ.get("PATH", "").split(os.pathsep)
    env["PATH"] = os.pathsep.join(p for p in path if p and Path(p).resolve() != DEV_BIN.resolve())
    return env


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding builder's wheel (built once per session) and nothing else."""
    root = tmp_path_factory.mktemp("plain")
    uv = find_uv_bin()
    for argv in (
        [uv, "build", "--wheel", "--out-dir", str(root / "dist"), "--python", sys.executable],
        [uv, "venv", "--quiet", "--python", sys.executable, str(root / "venv")],
    ):
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, env=plain_env())
    (wheel,) = (root / "dist").glob("builder-*.whl")
    install = [uv, "pip", "install", "--quiet", "--python", str(root / "venv" / "bin" / "python")]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True, env=plain_env())
    return root / "venv"


@pytest.fixture
def builder(venv: Path, tmp_path: Path) -> Builder:
    """Run the plain venv's `builder` by absolute path, outside the checkout."""

    def run(*args: str, env: dict[str, str] | None = None) -> Run:
        done = subprocess.run(
            [str(venv / "bin" / "builder"), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**plain_env(), **(env or {})},
            check=False,
        )
        assert done.returncode != 4, f"builder {' '.join(args)}: internal error\n{done.stderr}"
        return Run(done.returncode, done.stdout, done.stderr)

    return run


def test_the_plain_install_is_the_wheel_without_the_dev_extra(venv: Path) -> None:
    python = str(venv / "bin" / "python")
    code = "import builder, importlib.util; print(builder.__file__, importlib.util.find_spec('pytest'))"
    done = subprocess.run(
        [python, "-c", code], cwd=venv, capture_output=True, text=True, env=plain_env()
    )
    location, pytest_spec = done.stdout.split()
    assert Path(location).is_relative_to(venv) and pytest_spec == "None", done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["schema"],
        ["matrix", "-m", str(FIXTURES / "render" / "matrix.yaml")],
        ["render", "-m", str(FIXTURES / "render" / "matrix.yaml"), "-o", "build"],
    ],
    ids=lambda args: args[0],
)
def test_a_plain_install_runs_the_offline_commands(builder: Builder, args: list[str]) -> None:
    done = builder(*args)
    assert done.code == 0, done.err


def test_a_plain_install_checks_offline_from_a_seeded_cache(
    builder: Builder, tmp_path: Path
) -> None:
    cache = shutil.copytree(FIXTURES / "index", tmp_path / "cache")  # the recorded index
    seed_resolutions("numpy2-torch21", cache)
    matrix = FIXTURES / "check" / "numpy2-torch21" / "matrix.yaml"
    done = builder(
        "check",
        "-m",
        str(matrix),
        "--offline",
        "--cell",
        "fixed*",
        env={"BUILDER_METADATA_CACHE": str(cache)},
    )
    assert done.code == 0, done.out + done.err


def test_a_plain_install_scans_a_repo(builder: Builder) -> None:
    repo = FIXTURES / "scan_repo"
    done = builder("scan", str(repo), "-r", str(repo / "requirements.txt"))
    assert done.code == 1 and "src.audio_analysis.wav2vec2" in done.out, done.err  # its finding


def test_a_plain_install_translates_a_dockerfile(builder: Builder, tmp_path: Path) -> None:
    project = shutil.copytree(FIXTURES / "dockerfiles" / "wan-s2v-runpod", tmp_path / "worker")
    done = builder("init", "--dockerfile", str(project / "Dockerfile"), "-o", "matrix.yaml")
    assert done.code == 0, done.err
    assert "runpod/pytorch:2.4.0" in (tmp_path / "matrix.yaml").read_text()


def test_a_plain_install_inspects_a_model_dir(builder: Builder, tmp_path: Path) -> None:
    model = diffusers_model(tmp_path / "model")
    done = builder("inspect", str(model), "--gpu-memory-gb", "80")
    assert done.code == 0, done.out + done.err


@pytest.mark.parametrize("fmt", ["md", "html", "junit", "json"])
def test_a_plain_install_renders_a_report(builder: Builder, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"report.{fmt}"
    done = builder("report", str(REPORT), "--format", fmt, "-o", str(out))
    assert done.code == 0, done.err
    assert out.read_text().strip()


def test_a_plain_install_diffs_and_merges_reports(builder: Builder, tmp_path: Path) -> None:
    diff = builder("report", str(REPORT), "--diff", str(REPORT))
    assert diff.code == 0 and diff.out.strip(), diff.err
    merged = tmp_path / "merged.json"
    done = builder("report", "--merge", str(REPORT), str(REPORT), "-o", str(merged))
    assert done.code == 0, done.err
    assert builder("report", str(merged)).code == 0
