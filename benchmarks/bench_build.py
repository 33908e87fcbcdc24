"""Benchmarks for lock, build and validate, measured in one run on this machine.

Prints, for the realistic Wan CPU cell (torch 2.13.0+cpu from a wheelhouse, numpy<2,
transformers, diffusers, decord, imageio-ffmpeg, peft, accelerate, sentencepiece):
  (1) uv lock time / pip-tools lock time                        target <= 0.02
  (2) rebuild after a transformers bump / cold build            target <= 0.25
  (3) final image size / naive single-stage image size          target <= 0.8
  (4) second validate of an unchanged matrix / first validate    target <= 0.05
  (5) warm `builder check` / first validate (build + probes) of the same cell
Needs the Docker engine and the test base image (bash scripts/setup.sh).
Usage: python benchmarks/bench_build.py [--skip-pip-tools]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = "builder-test-base:bookworm"
TRANSFORMERS = ("4.51.3", "4.50.3")  # the cell's pin, then the bump
MATRIX = f"""version: 1
bases:
  bookworm: {{image: {BASE}, python: "3.11"}}
axes:
  base: [bookworm]
  torch: ["2.13.0+cpu"]
  transformers: ["{{transformers}}"]
requirements: ["numpy>=1.23.5,<2", "diffusers==0.35.1", decord, imageio, imageio-ffmpeg, peft, accelerate, sentencepiece]
indexes: {{wheelhouse: [/opt/wheels], ca_bundle: /etc/ssl/certs/ca-certificates.crt}}
probes: [imports, numpy, pip-check, lock-match, cuda, media, generate]
"""
NAIVE = f"""FROM {BASE}
RUN apt-get update && apt-get install -y --no-install-recommends build-essential python3-dev git
COPY requirements.txt /tmp/requirements.txt
COPY wheels/ /wheels/
RUN --mount=type=secret,id=cacert PIP_CERT=/run/secrets/cacert pip install --break-system-packages \\
    --no-cache-dir --find-links /wheels -r /tmp/requirements.txt
"""


def sh(*argv: str, cwd: Path | None = None) -> float:
    start = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.monotonic() - start


def builder(*args: str, cwd: Path) -> float:
    return sh(sys.executable, "-m", "builder", *args, cwd=cwd)


def image_size(tag: str) -> int:
    out = subprocess.run(
        ["docker", "image", "inspect", tag, "--format", "{{.Size}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out)


def median(times: list[float]) -> tuple[float, str]:
    """The median of the runs, and their spread as text."""
    times = sorted(times)
    return times[len(times) // 2], f"median of {len(times)}, {times[0]:.2f}-{times[-1]:.2f}s"


def lock_ratio(work: Path, skip: bool) -> None:
    builder("lock", "--upgrade", cwd=work)  # warm uv's cache: the target is for a warm re-lock
    uv, uv_spread = median([builder("lock", "--upgrade", cwd=work) for _ in range(5)])
    if skip:
        print(f"(1) uv lock {uv:.2f}s ({uv_spread}); pip-tools skipped")
        return
    # pip-compile's time swings with the network (42-103 s seen here): take 3 runs.
    runs = [builder("lock", "--upgrade", "--resolver", "pip-tools", cwd=work) for _ in range(3)]
    pip_tools, pt_spread = median(runs)
    builder("lock", "--upgrade", cwd=work)  # back to the uv lock for the builds
    print(
        f"(1) lock: uv {uv:.2f}s ({uv_spread}) / pip-tools {pip_tools:.1f}s ({pt_spread}) = "
        f"{uv / pip_tools:.3f}  (target <= 0.02)"
    )


def build_ratio(work: Path) -> str:
    subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True, check=False)
    cold = builder("build", cwd=work)
    matrix = work / "matrix.yaml"
    matrix.write_text(matrix.read_text().replace(*TRANSFORMERS))
    builder("lock", cwd=work)
    bump = builder("build", cwd=work)
    print(
        f"(2) rebuild after transformers bump {bump:.1f}s / cold build {cold:.1f}s = "
        f"{bump / cold:.3f}  (target <= 0.25)"
    )
    return f"builder/cells:bookworm.torch-2.13.0_cpu.transformers-{TRANSFORMERS[1]}"


def size_ratio(work: Path, tag: str) -> None:
    naive = work / "naive"
    naive.mkdir()
    (naive / "Dockerfile").write_text(NAIVE)
    lock = next((work / "constraints").glob("*.txt")).read_text()
    pins = [
        line.split(" ")[0]
        for line in lock.splitlines()
        if "==" in line and not line.startswith(("#", " "))
    ]
    (naive / "requirements.txt").write_text("\n".join(pins) + "\n")
    shutil.copytree("/opt/wheels", naive / "wheels")
    sh(
        "env",
        "DOCKER_BUILDKIT=1",
        "/usr/bin/docker",
        "build",
        "-t",
        "builder-bench/naive",
        "--secret",
        "id=cacert,src=/etc/ssl/certs/ca-certificates.crt",
        str(naive),
    )
    ours, theirs = image_size(tag), image_size("builder-bench/naive")
    print(
        f"(3) image size: builder {ours / 1e6:.0f} MB / naive single-stage {theirs / 1e6:.0f} MB = "
        f"{ours / theirs:.3f}  (target <= 0.8)"
    )


def validate_ratio(work: Path) -> None:
    shutil.rmtree(work / "cache", ignore_errors=True)  # images stay built: probes dominate `first`
    first = builder("validate", "-o", "reports", "--cache-dir", "cache", cwd=work)
    second = builder("validate", "-o", "reports", "--cache-dir", "cache", cwd=work)
    report = json.loads((work / "reports" / "report.json").read_text())
    assert all(c["cache"]["hit"] for c in report["cells"])
    print(
        f"(4) validate: second (unchanged) {second:.2f}s / first {first:.1f}s = "
        f"{second / first:.3f}  (target <= 0.05)"
    )
    builder("check", cwd=work)  # fill the metadata cache
    check = builder("check", cwd=work)
    print(f"(5) warm check {check:.2f}s / first validate {first:.1f}s = {check / first:.3f}")


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-pip-tools", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="builder-bench-") as tmp:
        work = Path(tmp)
        (work / "matrix.yaml").write_text(MATRIX.replace("{transformers}", TRANSFORMERS[0]))
        try:
            lock_ratio(work, args.skip_pip_tools)
            tag = build_ratio(work)
            size_ratio(work, tag)
            validate_ratio(work)
        finally:  # the images it built; BuildKit's cache stays
            cells = [
                "builder/cells:bookworm.torch-2.13.0_cpu.transformers-" + v for v in TRANSFORMERS
            ]
            subprocess.run(
                ["docker", "rmi", "-f", "builder-bench/naive", *cells],
                capture_output=True,
                check=False,
            )


if __name__ == "__main__":
    main()
