"""Lock and build for real: uv against PyPI, BuildKit on the Docker engine, the image inspected."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from builder.lock import LockFile, body_digest
from tests.conftest import SYSTEM_CA, WHEELS, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

SMALL = """version: 1
bases:
  bookworm: {{image: "{base}", python: "3.11"}}
axes:
  base: [bookworm]
  six: ["1.16.0"]
requirements: ["numpy<2", "attrs"]
indexes:
  ca_bundle: {ca}
"""

REALISTIC = """version: 1
bases:
  bookworm: {{image: "{base}", python: "3.11"}}
axes:
  base: [bookworm]
  torch: ["2.13.0+cpu"]
  transformers: ["4.51.3", "4.50.3"]
requirements: ["numpy<2", "diffusers==0.35.1", decord, imageio-ffmpeg, peft, accelerate, sentencepiece]
indexes:
  wheelhouse: [{wheels}]
  ca_bundle: {ca}
"""


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def write_matrix(project: Path, template: str, base: str, ca: Path = SYSTEM_CA) -> Path:
    path = project / "matrix.yaml"
    path.write_text(template.format(base=base, ca=ca, wheels=WHEELS))
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Path:
    project = tmp_path_factory.mktemp("small")
    write_matrix(project, SMALL, base_image)
    assert run_cli("lock", cwd=project).code == 0
    result = run_cli("build", "--format", "json", cwd=project)
    assert result.code == 0, result.err
    return project


def test_the_built_image_holds_exactly_the_lock(small: Path) -> None:
    record = json.loads(run_cli("build", "--format", "json", cwd=small).out)["cells"][0]
    listed = json.loads(
        docker(
            "run",
            "--rm",
            "--network",
            "none",
            record["tag"],
            "python",
            "-m",
            "pip",
            "list",
            "--format",
            "json",
        )
    )
    installed = {
        p["name"].lower(): p["version"] for p in listed if p["name"] not in ("pip", "setuptools")
    }
    lock = (small / "constraints" / "bookworm.six-1.16.0.txt").read_text()
    assert installed == dict(re.findall(r"^([a-z0-9-]+)==(\S+) \\", lock, re.M))
    assert installed["numpy"].startswith("1.")


def test_the_image_is_labelled_with_cell_and_lock_hash(small: Path) -> None:
    labels = json.loads(
        docker(
            "image",
            "inspect",
            "builder/cells:bookworm.six-1.16.0",
            "--format",
            "{{json .Config.Labels}}",
        )
    )
    assert labels["io.github.builder.cell"] == "bookworm.six-1.16.0"
    assert re.fullmatch(r"[0-9a-f]{64}", labels["io.github.builder.lock-sha256"])


def test_an_unchanged_rebuild_is_fully_cached(small: Path) -> None:
    record = json.loads(run_cli("build", "--format", "json", cwd=small).out)["cells"][0]
    assert record["ok"] and record["total_steps"] > 0
    assert record["cached_steps"] == record["total_steps"]


def resealed(text: str) -> str:
    """A lock edited by hand whose body-sha256 was forged to match: builder's own digest check
    passes, so what stops it is pip's --require-hashes inside the build (defence in depth)."""
    lock = LockFile(
        text, "".join(line for line in text.splitlines(True) if line.startswith("#")), None
    )
    return re.sub(
        r"(?m)^# body-sha256: [0-9a-f]{64}$", f"# body-sha256: {body_digest(lock.body)}", text
    )


def test_a_hand_edited_lock_is_refused_before_the_build(small: Path) -> None:
    lock = small / "constraints" / "bookworm.six-1.16.0.txt"
    text = lock.read_text()
    lock.write_text(
        re.sub(r"--hash=sha256:[0-9a-f]{64}", "--hash=sha256:" + "0" * 64, text, count=1)
    )
    try:
        result = run_cli("build", cwd=small)
        assert result.code == 2 and "edited by hand" in result.err, result.err
    finally:
        lock.write_text(text)


def test_a_tampered_hash_fails_the_build_with_pips_hash_message(small: Path) -> None:
    lock = small / "constraints" / "bookworm.six-1.16.0.txt"
    text = lock.read_text()
    head, block = text.split("six==1.16.0", 1)
    body, rest = block.split("# via", 1)
    tampered = head + "six==1.16.0" + re.sub(r"[0-9a-f]{64}", "0" * 64, body) + "# via" + rest
    lock.write_text(resealed(tampered))
    try:
        result = run_cli("build", cwd=small)
        assert result.code == 1
        assert "DO NOT MATCH THE HASHES" in result.out
    finally:
        lock.write_text(text)


def test_a_lock_missing_hashes_fails_the_build(small: Path) -> None:
    lock = small / "constraints" / "bookworm.six-1.16.0.txt"
    text = lock.read_text()
    lock.write_text(
        resealed(re.sub(r"(six==1\.16\.0) \\\n(?:\s+--hash=\S+(?: \\)?\n)+", r"\1\n", text))
    )
    try:
        result = run_cli("build", cwd=small)
        assert result.code == 1
        assert "Hashes are required in --require-hashes mode" in result.out
    finally:
        lock.write_text(text)


def test_a_stale_lock_is_refused_before_any_build(small: Path, tmp_path: Path) -> None:
    matrix = small / "matrix.yaml"
    original = matrix.read_text()
    matrix.write_text(original.replace('"attrs"', '"attrs<26"'))
    try:
        result = run_cli("build", cwd=small)
        assert result.code == 2 and "is stale" in result.err
    finally:
        matrix.write_text(original)


def test_planted_secrets_never_reach_the_image_history_or_logs(
    base_image: str, tmp_path: Path
) -> None:
    marker_ca, marker_token = "BUILDERSECRETCA7f3a9c", "hf_BUILDERSECRETTOKEN55e1"
    ca = tmp_path / "ca.pem"
    ca.write_text(SYSTEM_CA.read_text() + f"\n# {marker_ca}\n")
    project = tmp_path / "p"
    project.mkdir()
    write_matrix(project, SMALL.replace('six: ["1.16.0"]', 'six: ["1.17.0"]'), base_image, ca)
    assert run_cli("lock", cwd=project).code == 0
    result = run_cli("-v", "build", "--format", "json", cwd=project, env={"HF_TOKEN": marker_token})
    assert result.code == 0, result.err
    tag = json.loads(result.out)["cells"][0]["tag"]
    saved = subprocess.run(["docker", "save", tag], capture_output=True, check=True).stdout
    history = docker("history", "--no-trunc", tag)
    written = b"".join(p.read_bytes() for p in project.rglob("*") if p.is_file())
    for marker in (marker_ca, marker_token):
        for name, blob in (
            ("image", saved),
            ("history", history.encode()),
            ("files", written),
            ("output", (result.out + result.err).encode()),
        ):
            assert marker.encode() not in blob, f"{marker} leaked into {name}"


@pytest.mark.skipif(
    not any(WHEELS.glob("torch-2.13.0*.whl")), reason="CPU torch wheelhouse missing"
)
def test_a_transformers_bump_reuses_the_torch_layer(base_image: str, tmp_path: Path) -> None:
    write_matrix(tmp_path, REALISTIC, base_image)
    assert run_cli("lock", cwd=tmp_path).code == 0
    first = run_cli("build", "--cell", "*4.51.3", cwd=tmp_path)
    assert first.code == 0, first.out + first.err
    second = run_cli("build", "--cell", "*4.50.3", "--format", "json", cwd=tmp_path)
    assert second.code == 0, second.out
    contexts = sorted((tmp_path / "build").glob("bookworm.torch-*"))
    heavy = {(c / "requirements" / "heavy.txt").read_bytes() for c in contexts if c.is_dir()}
    assert len(heavy) == 1, "the torch layer's input differs between the two cells"
    log = Path(json.loads(second.out)["cells"][0]["log"]).read_text()
    for pattern in (r"\[heavy \d+/\d+\] RUN .*heavy\.txt", r"\[final \d+/\d+\] COPY --from=heavy"):
        step = re.search(rf"^#(\d+) {pattern}", log, re.M)
        assert step, f"no step {pattern} in the log"
        assert re.search(rf"^#{step[1]} CACHED", log, re.M), (
            f"the torch layer was redone: {pattern}"
        )


def test_push_sends_the_image_to_the_registry_and_records_its_digest(
    small: Path, registry: str
) -> None:
    repository = f"{registry}/builder-test"
    result = run_cli("build", "--push", "--registry", repository, "--format", "json", cwd=small)
    assert result.code == 0, result.err
    record = json.loads(result.out)["cells"][0]
    assert record["tag"] == f"{repository}:bookworm.six-1.16.0"
    assert re.fullmatch(rf"{re.escape(repository)}@sha256:[0-9a-f]{{64}}", record["digest"])
    with urllib.request.urlopen(
        f"http://{registry}/v2/builder-test/tags/list", timeout=10
    ) as answer:
        assert json.load(answer)["tags"] == ["bookworm.six-1.16.0"]
    docker("image", "rm", record["tag"])
    docker("pull", record["digest"])


def test_push_without_a_registry_is_a_usage_error(small: Path) -> None:
    result = run_cli("build", "--push", cwd=small)
    assert result.code == 2 and "--push needs a registry" in result.err


def test_ctrl_c_stops_the_build_cleanly_and_leaves_no_containers(
    base_image: str, tmp_path: Path
) -> None:
    write_matrix(tmp_path, SMALL.replace('"attrs"', '"attrs==21.4.0"'), base_image)
    assert run_cli("lock", cwd=tmp_path).code == 0
    before = docker("ps", "-aq")
    process = subprocess.Popen(
        [sys.executable, "-m", "builder", "build", "--no-cache"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    log = tmp_path / "build" / "bookworm.six-1.16.0.build.log"
    deadline = time.monotonic() + 120
    installing = re.compile(r"\[rest \d+/\d+\] RUN")  # the rest layer's pip install started
    while not (log.exists() and installing.search(log.read_text())):  # poll
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in err
    assert docker("ps", "-aq") == before
    left = subprocess.run(["pgrep", "-f", "builder/cells:bookworm.six-1.16.0"], capture_output=True)
    assert left.stdout == b""
