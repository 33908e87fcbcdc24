"""Fan-out: the GitHub Actions strategy matrix and the docker-bake.json, checked structurally."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from builder.errors import InputError
from builder.fanout import (
    MAX_GITHUB_JOBS,
    bake_file,
    bake_target_name,
    github_matrix,
    render_fanout,
)
from builder.matrix import Matrix, parse_matrix
from builder.settings import Settings
from tests.conftest import FIXTURES, run_cli

BAKE_SCHEMA = json.loads((FIXTURES / "bake.schema.json").read_text())

MATRIX = """\
version: 1
bases:
  cu124-py311:
    image: runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04
    python: "3.11"
    cuda: "12.4"
  cpu-py311:
    image: python:3.11-slim
    python: "3.11"
    cuda: null
    platform: linux/arm64
axes:
  base: [cu124-py311, cpu-py311]
  torch: ["2.4.1"]
  transformers: ["4.47.0", ">=4.49,<=4.51.3"]
indexes:
  ca_bundle: corp-ca.pem
gpu: {gpu}
registry: ghcr.io/acme/serving
runners: {{cpu: ubuntu-24.04, gpu: gpu-a10}}
"""


def matrix(tmp_path: Path, gpu: str = "optional") -> Matrix:
    (tmp_path / "corp-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    path = tmp_path / "matrix.yaml"
    path.write_text(MATRIX.format(gpu=gpu))
    return parse_matrix(path.read_text(), path)


def runners(m: Matrix) -> dict[str, str]:
    return {row["cell"]: row["runner"] for row in github_matrix(m, m.cells)["include"]}


def test_github_matrix_has_one_job_per_cell_with_its_runner_base_and_gpu_mode(
    tmp_path: Path,
) -> None:
    m = matrix(tmp_path)
    include = github_matrix(m, m.cells)["include"]
    assert [row["cell"] for row in include] == [c.id for c in m.cells]
    assert include[0] == {
        "cell": "cu124-py311.torch-2.4.1.transformers-4.47.0",
        "runner": "gpu-a10",
        "base": "cu124-py311",
        "gpu": "optional",
    }
    assert {row["base"]: row["runner"] for row in include} == {
        "cu124-py311": "gpu-a10",
        "cpu-py311": "ubuntu-24.04",
    }


@pytest.mark.parametrize(
    ("gpu", "cuda_runner", "cpu_runner"),
    [("required", "gpu-a10", "gpu-a10"), ("none", "ubuntu-24.04", "ubuntu-24.04")],
)
def test_the_gpu_mode_decides_the_runner(
    tmp_path: Path, gpu: str, cuda_runner: str, cpu_runner: str
) -> None:
    chosen = runners(matrix(tmp_path, gpu))
    assert {v for k, v in chosen.items() if k.startswith("cu124")} == {cuda_runner}
    assert {v for k, v in chosen.items() if k.startswith("cpu")} == {cpu_runner}


def test_the_github_output_is_one_line_of_json(tmp_path: Path) -> None:
    m = matrix(tmp_path)
    text = render_fanout(m, m.cells, "github", Settings())
    assert "\n" not in text
    assert json.loads(text) == github_matrix(m, m.cells)


def test_the_bake_file_is_valid_against_the_documented_format(tmp_path: Path) -> None:
    m = matrix(tmp_path)
    bake = bake_file(m, m.cells, Settings())
    jsonschema.Draft202012Validator.check_schema(BAKE_SCHEMA)
    jsonschema.Draft202012Validator(BAKE_SCHEMA).validate(bake)


def test_bake_has_a_target_per_cell_with_context_tag_labels_and_platform(tmp_path: Path) -> None:
    m = matrix(tmp_path)
    targets = bake_file(m, m.cells, Settings())["target"]
    assert list(targets) == [bake_target_name(c.id) for c in m.cells]
    cell = m.cells[-1]
    target = targets[bake_target_name(cell.id)]
    assert target["context"] == f"build/{cell.id}"
    assert target["dockerfile"] == "Dockerfile"
    assert target["tags"] == [f"ghcr.io/acme/serving:{cell.id}"]
    assert target["platforms"] == ["linux/arm64"]
    assert target["labels"]["io.github.builder.cell"] == cell.id
    assert target["labels"]["io.github.builder.lock-sha256"] == "none"  # not locked yet


def test_bake_target_names_keep_only_letters_digits_dash_and_underscore() -> None:
    name = bake_target_name("cu124-py311.torch-2.4.1.transformers-ge4.49-le4.51.3")
    assert name == "cu124-py311_torch-2_4_1_transformers-ge4_49-le4_51_3"
    assert re.fullmatch(r"[A-Za-z0-9_-]+", name)


def test_bake_groups_the_targets_by_base_and_all_of_them_by_default(tmp_path: Path) -> None:
    m = matrix(tmp_path)
    bake = bake_file(m, m.cells, Settings())
    groups: dict[str, Any] = bake["group"]
    assert set(groups) == {"cu124-py311", "cpu-py311", "default"}
    assert groups["default"]["targets"] == list(bake["target"])
    assert all(t.startswith("cpu-py311_") for t in groups["cpu-py311"]["targets"])
    assert len(groups["cu124-py311"]["targets"]) == 2


def test_bake_secrets_are_the_template_s_files_by_path_never_their_contents(
    tmp_path: Path,
) -> None:
    m = matrix(tmp_path)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine pypi.corp login u password SECRET-MARKER\n")
    settings = Settings(netrc=netrc, hf_token="hf_SECRET")
    text = render_fanout(m, m.cells, "bake", settings)
    target = json.loads(text)["target"][bake_target_name(m.cells[0].id)]
    assert target["secret"] == [
        f"type=file,id=cacert,src={tmp_path / 'corp-ca.pem'}",
        f"type=file,id=netrc,src={netrc}",
    ]
    assert "SECRET" not in text  # the HF token is not used by the Dockerfile; no contents


def test_a_secret_that_is_not_configured_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "matrix.yaml"
    path.write_text(MATRIX.format(gpu="none").replace("indexes:\n  ca_bundle: corp-ca.pem\n", ""))
    m = parse_matrix(path.read_text(), path)
    bake = bake_file(m, m.cells, Settings())
    assert all(t["secret"] == [] for t in bake["target"].values())


def test_the_matrix_command_prints_each_format(tmp_path: Path) -> None:
    m = matrix(tmp_path)
    for fmt in ("json", "github", "bake"):
        done = run_cli("matrix", "-m", str(m.path), "--format", fmt)
        assert done.code == 0, done.err
        assert json.loads(done.out)
    done = run_cli("matrix", "-m", str(m.path), "--format", "github", "--cell", "cpu-*")
    assert [row["cell"] for row in json.loads(done.out)["include"]] == [
        c.id for c in m.cells if c.id.startswith("cpu-")
    ]


def wide_matrix(tmp_path: Path, torches: int) -> Path:
    """One base and `torches` torch versions: that many cells."""
    versions = ", ".join(f'"2.{i}.0"' for i in range(torches))
    path = tmp_path / "matrix.yaml"
    path.write_text(
        "version: 1\nbases:\n  cpu: {image: python, python: '3.11'}\n"
        f"axes:\n  base: [cpu]\n  torch: [{versions}]\n"
    )
    return path


def test_a_github_matrix_past_256_jobs_is_refused_naming_the_count_and_the_limit(
    tmp_path: Path,
) -> None:
    path = wide_matrix(tmp_path, MAX_GITHUB_JOBS + 1)
    m = parse_matrix(path.read_text(), path)
    with pytest.raises(InputError) as caught:
        github_matrix(m, m.cells)
    assert "257 cells" in caught.value.message and "256" in caught.value.message
    assert "--cell" in (caught.value.hint or "")
    assert len(github_matrix(m, m.cells[:MAX_GITHUB_JOBS])["include"]) == MAX_GITHUB_JOBS


def test_the_matrix_command_exits_2_for_too_many_github_jobs_and_a_glob_splits_them(
    tmp_path: Path,
) -> None:
    path = wide_matrix(tmp_path, 300)
    done = run_cli("matrix", "-m", str(path), "--format", "github")
    assert (done.code, done.out) == (2, "")
    assert "300 cells" in done.err and "--cell" in done.err and "Traceback" not in done.err
    done = run_cli("matrix", "-m", str(path), "--format", "github", "--cell", "cpu.torch-2.1*")
    assert done.code == 0, done.err
    assert len(json.loads(done.out)["include"]) == 111  # 2.1.0 and 2.10.0 to 2.199.0
