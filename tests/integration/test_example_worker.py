"""The shipped RunPod worker example (examples/runpod-worker) validates on the real engine: every
probe passes, the serve probe included, and the image runs the worker as its matrix declares."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

EXAMPLE = ROOT / "examples" / "runpod-worker"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> dict[str, Any]:
    """The example, copied (its lock too), validated once with a cache of its own."""
    project = tmp_path_factory.mktemp("worker") / "runpod-worker"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    result = run_cli("validate", "-o", "reports", "--cache-dir", "cache", cwd=project, timeout=1800)
    report = json.loads((project / "reports" / "report.json").read_text())
    assert result.code == 0, result.err[-3000:]
    (cell,) = report["cells"]
    return cell


def test_every_probe_of_the_worker_passes_the_serve_probe_included(
    validated: dict[str, Any],
) -> None:
    probes = {p["probe"]: p for p in validated["probes"]}
    assert validated["status"] == "pass"
    assert {n for n, p in probes.items() if p["status"] != "pass"} <= {"cuda"}  # no GPU here
    serve = probes["serve"]
    assert serve["status"] == "pass", serve
    assert serve["details"]["mode"] == "runpod"
    assert serve["details"]["time_to_ready_s"] > 0
    assert serve["details"]["response_bytes"] > 1000  # the MP4, base64-encoded


def test_the_image_runs_what_the_example_declares(validated: dict[str, Any]) -> None:
    declared = yaml.safe_load((EXAMPLE / "matrix.yaml").read_text())["image"]
    tag = validated["build"]["tag"]
    config = json.loads(docker("image", "inspect", tag, "--format", "{{json .Config}}").stdout)
    assert config["Cmd"] == declared["cmd"]
    assert config.get("Entrypoint") is None  # a newer client leaves the null out
    assert {f"{k}={v}" for k, v in declared["env"].items()} <= set(config["Env"])
    assert config["User"] == "10001:10001"
    assert config["WorkingDir"] == declared["workdir"]
    assert config["ExposedPorts"] == {f"{p}/tcp": {} for p in declared["expose"]}
    assert config["Healthcheck"]["Test"] == ["CMD", *declared["healthcheck"]["cmd"]]


def test_the_worker_runs_as_the_non_root_user(validated: dict[str, Any]) -> None:
    tag = validated["build"]["tag"]
    ask = "import os, pwd; print(os.getuid(), pwd.getpwuid(os.getuid()).pw_name)"
    out = docker("run", "--rm", "--network", "none", tag, "python", "-c", ask).stdout
    assert out.split() == ["10001", "worker"]


def test_a_bad_job_fails_the_worker_with_the_handlers_error(validated: dict[str, Any]) -> None:
    job = json.dumps({"input": {"prompt": "", "seed": 0}})
    tag = validated["build"]["tag"]
    argv = ["run", "--rm", "--network", "none", tag, "python", "-u", "handler.py"]
    done = docker(*argv, "--test_input", job, check=False)
    assert done.returncode == 1
    assert "failed with error: input.prompt must be a non-empty string" in done.stdout
