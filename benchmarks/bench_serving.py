"""Benchmarks for serving images, measured in one run on this machine.

Prints, for the RunPod worker example (examples/runpod-worker):
  (a) on the PyTorch-like base (scripts/make-torch-base-image.sh: CPU torch in the system
      Python), bytes the image adds over the base with `reuse_preinstalled` / without it
      (isolated: the venv gets its own torch)                          target <= 0.6
      and the same ratio for a CUDA torch, from the sizes PyPI gives for the torch CUDA wheel
      and the nvidia-*, triton and cuda-* wheels it pulls (metadata only, nothing downloaded)
  (b) the worker's time to ready (the serve probe: start, build the pipeline, run
      test_input.json) next to the generate probe's seconds
Needs the Docker engine and both test base images (bash scripts/setup.sh), and PyPI.
Usage: python benchmarks/bench_serving.py [--skip-reuse]   (isolated half and (b) only)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from packaging import tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "runpod-worker"
TORCH_BASE = "builder-test-torch-base:bookworm"
CA = "/etc/ssl/certs/ca-certificates.crt"
CPU_WHEEL = "/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
CUDA_TORCH = "torch==2.13.0"  # PyPI's Linux x86_64 torch is the CUDA build
CUDA_ONLY = ("nvidia-", "triton", "cuda-")  # what the CUDA torch pulls and the CPU one does not
BASES = {
    "torch-isolated": {"preinstalled": "auto"},
    "torch-reused": {"preinstalled": "auto", "reuse_preinstalled": True},
}
# cp311 on manylinux_2_28 x86_64, best tag first: which wheel of a release pip would take.
PLATFORMS = [f"manylinux_2_{m}_x86_64" for m in range(28, 4, -1)]
PLATFORMS += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
SUPPORTED = [
    *tags.cpython_tags((3, 11), platforms=PLATFORMS),
    *tags.compatible_tags((3, 11), "cp311", PLATFORMS),
]


def sh(*argv: str, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def builder(*args: str, cwd: Path) -> str:
    return sh(sys.executable, "-m", "builder", *args, cwd=cwd)


def image_size(tag: str) -> int:
    return int(sh("docker", "image", "inspect", tag, "--format", "{{.Size}}"))


def copy_example(work: Path) -> Path:
    project = work / "runpod-worker"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
    return project


# ---------------------------------------------------------------- (a) reuse vs isolated


def torch_base_matrix(project: Path, reuse: bool) -> None:
    """The example on the torch base: an isolated cell, and a reused one unless `reuse` is off."""
    matrix = yaml.safe_load((project / "matrix.yaml").read_text())
    names = list(BASES) if reuse else ["torch-isolated"]
    base = {"image": TORCH_BASE, "python": "3.11", "cuda": None}
    matrix["bases"] = {n: {**base, **(BASES[n] if reuse else {})} for n in names}
    matrix["axes"]["base"] = names
    matrix.pop("probes", None)
    (project / "matrix.yaml").write_text(yaml.safe_dump(matrix, sort_keys=False))
    shutil.rmtree(project / "constraints")


def build_cells(project: Path) -> dict[str, dict[str, Any]]:
    builder("lock", cwd=project)
    out = builder("build", "--format", "json", cwd=project)
    return {c["cell_id"].split(".")[0]: c for c in json.loads(out)["cells"]}


def heavy_bytes(tag: str) -> int:
    """Installed bytes of the image's own torch layer (/opt/layers/heavy: torch alone here)."""
    out = sh("docker", "run", "--rm", "--network", "none", tag, "du", "-sb", "/opt/layers/heavy")
    return int(out.split()[0])


def pypi_files(name: str, version: str, context: ssl.SSLContext) -> list[dict[str, Any]]:
    """A release's files with their sizes, from PyPI's JSON API. Where the per-version URL is
    not served (a proxy here answers 404), the project's page lists every release too."""
    try:
        url = f"https://pypi.org/pypi/{name}/{version}/json"
        with urllib.request.urlopen(url, context=context, timeout=60) as response:
            return list(json.load(response)["urls"])
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
    with urllib.request.urlopen(
        f"https://pypi.org/pypi/{name}/json", context=context, timeout=60
    ) as response:
        releases = json.load(response)["releases"]
    # The release's own spelling may differ from the resolver's (13.0.3 for 13.0.3.0).
    return next(files for key, files in releases.items() if Version(key) == Version(version))


def wheel_size(name: str, version: str, context: ssl.SSLContext) -> int:
    """Bytes of the wheel pip would pick for CPython 3.11 on manylinux_2_28 x86_64."""
    rank = {tag: i for i, tag in enumerate(SUPPORTED)}
    best: tuple[int, int] | None = None
    for file in pypi_files(name, version, context):
        if not file["filename"].endswith(".whl"):
            continue
        score = min(rank.get(t, len(rank)) for t in parse_wheel_filename(file["filename"])[3])
        if score < len(rank) and (best is None or score < best[0]):
            best = (score, int(file["size"]))
    if best is None:
        sys.exit(f"{name}=={version}: no wheel for cp311 manylinux x86_64 on PyPI")
    return best[1]


def cuda_wheels() -> dict[str, tuple[str, int]]:
    """The CUDA torch and the CUDA-only packages it pulls, resolved by uv from PyPI for
    CPython 3.11 on manylinux_2_28 x86_64: name -> (version, wheel bytes)."""
    from uv import find_uv_bin

    argv = [find_uv_bin(), "pip", "compile", "-", "--python-version", "3.11"]
    argv += ["--python-platform", "x86_64-manylinux_2_28", "--index-url", "https://pypi.org/simple"]
    argv += ["--no-header", "--no-annotate", "--quiet"]
    env = {**os.environ, "SSL_CERT_FILE": CA}
    done = subprocess.run(
        argv, input=CUDA_TORCH, capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        sys.exit(f"uv could not resolve {CUDA_TORCH}:\n{done.stderr[-2000:]}")
    pins = dict(line.split("==") for line in done.stdout.split() if "==" in line)
    context = ssl.create_default_context(cafile=CA)
    wanted = {canonicalize_name(n): v for n, v in pins.items()}
    wanted = {n: v for n, v in wanted.items() if n == "torch" or n.startswith(CUDA_ONLY)}
    return {n: (v, wheel_size(n, v, context)) for n, v in sorted(wanted.items())}


def size_ratio(work: Path, reuse: bool) -> None:
    project = copy_example(work)
    torch_base_matrix(project, reuse)
    cells = build_cells(project)
    base = image_size(TORCH_BASE)
    isolated = cells["torch-isolated"]["size"] - base
    torch_cpu = heavy_bytes(cells["torch-isolated"]["tag"])
    wheels = cuda_wheels()
    cuda = sum(size for _, size in wheels.values())
    # A wheel is a zip: counting its size as installed bytes undercounts the CUDA image, so
    # the CUDA ratio below is an upper bound.
    isolated_cuda = isolated - torch_cpu + cuda
    print(
        f"(a) on {TORCH_BASE} ({base / 1e6:.0f} MB): the isolated image adds "
        f"{isolated / 1e6:.0f} MB, {torch_cpu / 1e6:.0f} MB of it its own CPU torch "
        f"(from a {Path(CPU_WHEEL).stat().st_size / 1e6:.0f} MB wheel)"
    )
    print(
        f"    a CUDA {CUDA_TORCH} from PyPI is {len(wheels)} wheels, {cuda / 1e6:.0f} MB as "
        f"wheels ({', '.join(f'{n} {s / 1e6:.0f}' for n, (_, s) in wheels.items())}): "
        f"the isolated image would add >= {isolated_cuda / 1e6:.0f} MB"
    )
    if not reuse:
        print("    reuse skipped (--skip-reuse)")
        return
    reused = cells["torch-reused"]["size"] - base
    print(
        f"    reuse adds {reused / 1e6:.0f} MB / isolated {isolated / 1e6:.0f} MB = "
        f"{reused / isolated:.3f}  (target <= 0.6); with a CUDA torch "
        f"{reused / 1e6:.0f} / >= {isolated_cuda / 1e6:.0f} MB = <= {reused / isolated_cuda:.3f}"
    )


# ---------------------------------------------------------------- (b) time to ready


def ready_times(work: Path) -> str:
    """Validate the example as shipped (a fresh result cache, so every probe runs)."""
    project = copy_example(work)
    builder("validate", "-o", "reports", "--cache-dir", "cache", cwd=project)
    (cell,) = json.loads((project / "reports" / "report.json").read_text())["cells"]
    probes = {p["probe"]: p for p in cell["probes"]}
    serve, generate = probes["serve"], probes["generate"]
    call = generate["details"]["variants"]["wan2.1"]["seconds"]
    print(
        f"(b) worker time to ready {serve['details']['time_to_ready_s']:.2f}s (serve probe: "
        f"start, build the pipeline, one job) / generate probe {generate['seconds']:.2f}s "
        f"(its wan2.1 pipeline call {call:.2f}s) = "
        f"{serve['details']['time_to_ready_s'] / generate['seconds']:.2f}"
    )
    return str(cell["build"]["tag"])


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-reuse", action="store_true", help="no reuse_preinstalled cell")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="builder-bench-serving-") as tmp:
        work = Path(tmp)
        (work / "a").mkdir()
        (work / "b").mkdir()
        try:
            size_ratio(work / "a", reuse=not args.skip_reuse)
            ready_times(work / "b")
        finally:  # the torch-base cells it built; the example's image is the main job's too
            out = subprocess.run(
                ["docker", "images", "builder/cells", "--format", "{{.Repository}}:{{.Tag}}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            mine = [t for t in out if t.split(":", 1)[1].startswith(tuple(BASES))]
            subprocess.run(["docker", "rmi", "-f", *mine], capture_output=True, check=False)


if __name__ == "__main__":
    main()
