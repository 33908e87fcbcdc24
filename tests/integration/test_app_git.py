"""`app.git` for real: one small image built from a local file:// repository at a pinned commit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SYSTEM_CA, run_cli
from tests.unit.test_app_git import commit, git

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

MATRIX = """version: 1
bases:
  bookworm: {{image: "{base}", python: "3.11"}}
axes:
  base: [bookworm]
  six: ["1.16.0"]
indexes:
  ca_bundle: {ca}
app:
  git: {{url: "{url}", rev: "{rev}"}}
  files: [handler.py]
"""


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def test_the_image_holds_the_pinned_commit_and_is_labelled_with_it(
    tmp_path: Path, base_image: str
) -> None:
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch", "main")
    pinned = commit(repo, "VERSION = 1\n")
    commit(repo, "VERSION = 2\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "handler.py").write_text("import model\nprint(model.VERSION)\n")
    matrix = MATRIX.format(base=base_image, ca=SYSTEM_CA, url=repo.as_uri(), rev=pinned)
    (project / "matrix.yaml").write_text(matrix)
    env = {"BUILDER_GIT_CACHE": str(tmp_path / "git-cache")}

    assert run_cli("lock", cwd=project, env=env).code == 0
    result = run_cli("build", "--format", "json", cwd=project, env=env)
    assert result.code == 0, result.err
    tag = json.loads(result.out)["cells"][0]["tag"]
    try:
        labels = json.loads(docker("image", "inspect", tag))[0]["Config"]["Labels"]
        assert labels["org.opencontainers.image.revision"] == pinned
        assert labels["org.opencontainers.image.source"] == repo.as_uri()
        ran = docker("run", "--rm", "--network", "none", tag, "python", "/app/handler.py")
        assert ran.strip() == "1"  # the pinned commit's model.py, not the later one
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, check=False)

    (project / "matrix.yaml").write_text(matrix.replace(pinned, "main"))
    refused = run_cli("build", cwd=project, env=env)
    assert refused.code == 2 and "app.git.rev: 'main' is a branch" in refused.err
