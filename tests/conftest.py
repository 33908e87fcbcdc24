"""Shared test plumbing: the real Docker engine, the registry-free base image, and CLI runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BASE_IMAGE = os.environ.get("BUILDER_TEST_BASE", "builder-test-base:bookworm")
TORCH_BASE_IMAGE = "builder-test-torch-base:bookworm"  # scripts/make-torch-base-image.sh
WHEELS = Path(os.environ.get("BUILDER_TEST_WHEELS", "/opt/wheels"))
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")
VALIDATE = ROOT / "validate"
PROBE_EXIT_CODES = {"pass": 0, "skipped": 0, "fail": 1, "error": 2}
NVIDIA = (
    "Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and "
    "installed a driver from http://www.nvidia.com/Download/index.aspx"
)


@dataclass
class Run:
    code: int
    out: str
    err: str


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    unprivileged: bool = False,
) -> Run:
    """Run `python -m builder` as a user would, in a subprocess (killed after `timeout`).
    `unprivileged` drops root's capabilities, so permissions hold as for any user."""
    drop = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"] if unprivileged else []
    done = subprocess.run(
        [*drop, sys.executable, "-m", "builder", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=timeout,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def run_probe_script(
    python: Path, name: str, options: dict[str, Any] | None, workdir: Path, stdin: str = ""
) -> dict[str, Any]:
    """Run one probe as builder's runner does (options file, else stdin); check that its last
    stdout line is its JSON result and that the exit code matches the status."""
    from builder.resources import PROBES

    argv = [str(python), "-I", str(VALIDATE / PROBES[name])]
    if options is not None:
        path = workdir / f"{PROBES[name]}.json"
        path.write_text(json.dumps(options))
        argv.append(str(path))
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=600)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["probe"] == name
    assert proc.returncode == PROBE_EXIT_CODES[result["status"]], proc.stderr[-2000:]
    return result


def _engine_error() -> str | None:
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        return f"no Docker engine: {exc}"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[object]:
    """A reachable engine. In CI a missing engine fails the test instead of skipping it."""
    problem = _engine_error()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"{problem} (CI is set: the Docker tier must run)")
        pytest.skip(problem)
    import docker

    client = docker.from_env()
    before = {image.id for image in client.images.list(all=True)}
    yield client
    # Images the tests built go; BuildKit's cache stays, so the next run is as fast.
    for image in client.images.list(all=True):
        if image.id not in before and not {BASE_IMAGE, TORCH_BASE_IMAGE} & set(image.tags):
            with contextlib.suppress(docker.errors.APIError):  # gone with a child already
                client.images.remove(image.id, force=True)


@pytest.fixture(scope="session")
def base_image(docker_engine: object) -> str:
    """A Debian bookworm image with python3, made without a registry, once per machine."""
    import docker

    client = docker.from_env()
    try:
        client.images.get(BASE_IMAGE)
        return BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    return _make_image("make-base-image.sh", BASE_IMAGE)


@pytest.fixture(scope="session")
def torch_base_image(base_image: str) -> str:
    """A PyTorch-like base: the test base with the CPU torch wheel in its system Python."""
    return _make_image("make-torch-base-image.sh", TORCH_BASE_IMAGE)


def _make_image(script: str, tag: str) -> str:
    """`tag`, made by scripts/<script> when missing (the script returns at once otherwise)."""
    # Debian's 20.10 client has BuildKit built in; a newer one on PATH may lack buildx.
    client = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / script), tag],
        capture_output=True,
        text=True,
        check=False,
        env={"DOCKER": client, **os.environ},
    )
    if done.returncode != 0:
        pytest.fail(f"could not make {tag}:\n{done.stderr[-2000:]}")
    return tag


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project directory for a test's matrix."""
    return tmp_path


def copy_fixture(name: str, dest: Path) -> Path:
    shutil.copytree(FIXTURES / name, dest, dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(FIXTURES / "registry" / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    return "docker-compose"  # Debian's Compose v1: bookworm packages no Compose v2 plugin


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return ["up -d"]  # pytest-docker's default adds --wait, which only Compose v2 knows


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def registry(base_image: str, request: pytest.FixtureRequest) -> str:
    """A real image registry on loopback, started by pytest-docker from a compose file:
    Debian's docker-registry (distribution 2.8) in the test base image."""
    missing = [tool for tool in ("docker-compose", "docker-registry") if not shutil.which(tool)]
    if missing:
        message = f"{' and '.join(missing)} not installed (bash scripts/setup.sh)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set: the push tests must run")
        pytest.skip(message)
    services = request.getfixturevalue("docker_services")
    address = f"{request.getfixturevalue('docker_ip')}:{services.port_for('registry', 5000)}"
    services.wait_until_responsive(
        check=lambda: _answers(f"http://{address}/v2/"), timeout=30.0, pause=0.1
    )
    return address


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium; in CI its absence fails the browser tests."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    problem = "chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{problem}; CI is set: the browser tests must run")
    pytest.skip(problem)


@pytest.fixture(scope="module")
def pypi() -> None:
    """PyPI answers; in CI its absence fails the tier instead of skipping it."""
    try:
        urllib.request.urlopen(
            "https://pypi.org/simple/pip/", timeout=20, context=ssl.create_default_context()
        ).close()
    except OSError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PyPI unreachable: {exc} (CI is set: the network tier must run)")
        pytest.skip(f"PyPI unreachable: {exc}")
