"""`image:` and `steps:` on the real engine: the image runs as declared, a failing step fails
only its own cell and is named."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SYSTEM_CA, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

# Two cells; the after-deps step fails only where six is 1.16.0.
MATRIX = """version: 1
bases:
  serving-test: {{image: "{base}", python: "3.11"}}
axes:
  base: [serving-test]
  six: ["1.16.0", "1.17.0"]
indexes:
  ca_bundle: {ca}
app:
  path: app
image:
  env: {{HF_HOME: /data/hf, QUOTED: 'say "hi" $HOME'}}
  workdir: /srv/worker
  entrypoint: ["/usr/bin/env", "--"]
  cmd: ["python", "-u", "handler.py"]
  expose: [8000]
  user: worker
  healthcheck: {{cmd: ["python", "-c", "import handler"], interval: 30s, timeout: 10s, retries: 3}}
steps:
  - {{name: mark-apt, at: after-apt, run: "echo apt > /etc/builder-step-apt"}}
  - {{name: refuse-old-six, at: after-deps, run: "test \\"$(python -c 'import six; print(six.__version__)')\\" != 1.16.0", secrets: [cacert]}}
  - {{name: patch-app, at: after-app, run: "echo 'PATCHED = True' >> /app/handler.py"}}
"""
GOOD = "serving-test.six-1.17.0"
BAD = "serving-test.six-1.16.0"


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> dict[str, Any]:
    project = tmp_path_factory.mktemp("serving")
    (project / "app").mkdir()
    (project / "app" / "handler.py").write_text("print('ready')\n")
    (project / "matrix.yaml").write_text(MATRIX.format(base=base_image, ca=SYSTEM_CA))
    assert run_cli("lock", cwd=project).code == 0
    result = run_cli("build", "--format", "json", cwd=project)
    assert result.code != 0, "the failing step must fail the build"
    return {c["cell_id"]: c for c in json.loads(result.out)["cells"]}


def test_the_image_runs_what_the_matrix_declares(built: dict[str, Any]) -> None:
    assert built[GOOD]["ok"], built[GOOD]
    config = json.loads(
        docker("image", "inspect", built[GOOD]["tag"], "--format", "{{json .Config}}")
    )
    assert config["Cmd"] == ["python", "-u", "handler.py"]
    assert config["Entrypoint"] == ["/usr/bin/env", "--"]
    assert "HF_HOME=/data/hf" in config["Env"] and 'QUOTED=say "hi" $HOME' in config["Env"]
    assert config["User"] == "10001:10001"
    assert config["WorkingDir"] == "/srv/worker"
    assert config["ExposedPorts"] == {"8000/tcp": {}}
    assert config["Healthcheck"] == {
        "Test": ["CMD", "python", "-c", "import handler"],
        "Interval": 30_000_000_000,
        "Timeout": 10_000_000_000,
        "Retries": 3,
    }


def test_the_worker_runs_as_the_declared_non_root_user_who_owns_the_workdir(
    built: dict[str, Any],
) -> None:
    tag = built[GOOD]["tag"]
    assert docker("run", "--rm", "--network", "none", tag, "id", "-un").strip() == "worker"
    owner = docker("run", "--rm", "--network", "none", tag, "stat", "-c", "%U", "/srv/worker")
    assert owner.strip() == "worker"
    # a home of its own, where libraries cache (numba, torch hub, triton)
    home = docker(
        "run", "--rm", "--network", "none", tag, "sh", "-c", 'touch "$HOME/x" && echo $HOME'
    )
    assert home.strip() == "/home/worker"


def test_the_steps_ran_at_their_points(built: dict[str, Any]) -> None:
    tag = built[GOOD]["tag"]
    assert (
        docker("run", "--rm", "--network", "none", tag, "cat", "/etc/builder-step-apt") == "apt\n"
    )
    out = docker(
        "run",
        "--rm",
        "--network",
        "none",
        tag,
        "python",
        "-c",
        "import handler as h; print(h.PATCHED)",
    )
    assert out.splitlines()[-1] == "True"


def test_a_failing_step_fails_only_its_cell_and_is_named(built: dict[str, Any]) -> None:
    bad = built[BAD]
    assert not bad["ok"]
    assert bad["error"] == "docker build failed at step 'refuse-old-six'"
    assert "step=refuse-old-six" in bad["log_tail"]
    assert built[GOOD]["ok"]


CACHE = """version: 1
bases:
  serving-cache: {{image: "{base}", python: "3.11"}}
axes:
  base: [serving-cache]
  six: ["1.16.0", "1.17.0"]
indexes:
  ca_bundle: {ca}
app:
  path: app
steps:
  - {{name: early, at: after-apt, run: "echo {nonce} > /etc/early"}}
  - {{name: late, at: after-deps, run: "echo {nonce} > /etc/late"}}
  - {{name: patched, at: after-app, run: "cat /app/model.py > /etc/patched"}}
"""


def step_cached(log: str, name: str) -> bool:
    """Whether BuildKit's plain log reports the step's RUN as `#N CACHED`."""
    found = re.search(rf"^#(\d+) \[[^\]]+\] RUN .*: step={name};", log, re.M)
    assert found, f"step {name} not in the log"
    return f"\n#{found.group(1)} CACHED" in log


def test_a_pin_bump_reuses_the_after_apt_step_and_an_app_change_reruns_after_app(
    tmp_path: Path, base_image: str
) -> None:
    # A nonce of this run: BuildKit's cache may hold these steps from an earlier run, which
    # would make the later steps look reused.
    nonce = uuid.uuid4().hex
    (tmp_path / "matrix.yaml").write_text(CACHE.format(base=base_image, ca=SYSTEM_CA, nonce=nonce))
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "model.py").write_text(f"VERSION = {nonce!r}\n")
    assert run_cli("lock", cwd=tmp_path).code == 0

    def build(cell: str) -> str:
        result = run_cli("build", "--cell", cell, "-o", "out", cwd=tmp_path)
        assert result.code == 0, result.err
        return (tmp_path / "out" / f"{cell}.build.log").read_text()

    build("serving-cache.six-1.16.0")
    log = build("serving-cache.six-1.17.0")  # the pin bump
    assert step_cached(log, "early")
    assert not step_cached(log, "late")
    assert step_cached(build("serving-cache.six-1.17.0"), "patched")  # nothing changed
    (tmp_path / "app" / "model.py").write_text("VERSION = 'changed'\n")
    log = build("serving-cache.six-1.17.0")  # the app changed
    assert not step_cached(log, "patched")
    assert step_cached(log, "early") and step_cached(log, "late")
