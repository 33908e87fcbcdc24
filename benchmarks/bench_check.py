"""Benchmark `builder check`: a cold run (empty metadata cache) against warm runs of the same
matrix, each as a user runs it (`python -m builder check`, start-up included), for the
repository's root matrix.yaml and for a generated 100-cell matrix, in one run.

The 100 cells are the root matrix's four bases (and its requirements and per-CUDA indexes)
across five transformers and five diffusers releases. Each matrix gets its own empty cache, so
neither warms the other. Cold means builder's own cache (index metadata and resolutions) is
empty; uv keeps its own HTTP cache unless --cold-uv gives it an empty one too (that downloads
every wheel's metadata again). Needs uv and the index (an unreachable per-CUDA index is probed
and left out, as `check` does). Prints the numbers, the warm/cold ratio and the targets.
Usage: python benchmarks/bench_check.py [-m MATRIX ...] [--repeat N] [--cold-uv] [-j N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TRANSFORMERS = ["4.47.0", "4.48.3", "4.49.0", "4.50.3", "4.51.3"]
DIFFUSERS = ["0.31.0", "0.32.2", "0.33.1", "0.34.0", "0.35.1"]
TARGETS = {"matrix.yaml": 5.0, "100 cells": 10.0}  # warm seconds, on the development machine


def hundred_cells(directory: Path) -> Path:
    """The root matrix with 5 x 5 transformers and diffusers releases: 4 x 25 = 100 cells."""
    data = yaml.safe_load((ROOT / "matrix.yaml").read_text())
    data["axes"] = {**data["axes"], "transformers": TRANSFORMERS, "diffusers": DIFFUSERS}
    path = directory / "matrix.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def check(matrices: list[Path], env: dict[str, str], jobs: list[str]) -> float:
    """Seconds for one `builder check` of each matrix, in turn."""
    start = time.monotonic()
    for matrix in matrices:
        argv = [sys.executable, "-m", "builder", "-q", "check", "-m", str(matrix), *jobs]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode not in (0, 1):  # 1: a cell has errors, as the seed cells do
            sys.exit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-3000:]}")
    return time.monotonic() - start


def measure(
    name: str, matrices: list[Path], tmp: Path, args: argparse.Namespace
) -> tuple[float, float]:
    """(cold, median warm) seconds for the matrices, from a cache of their own."""
    env = {**os.environ, "BUILDER_CACHE_DIR": str(tmp / name / "builder")}
    if args.cold_uv:
        env["UV_CACHE_DIR"] = str(tmp / name / "uv")
    jobs = ["-j", str(args.jobs)] if args.jobs else []
    cold = check(matrices, env, jobs)
    warm = statistics.median(check(matrices, env, jobs) for _ in range(args.repeat))
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-m", "--matrix", action="append", type=Path, dest="matrices", help="instead of the two"
    )
    parser.add_argument("--repeat", type=int, default=3, help="warm runs (the median counts)")
    parser.add_argument("--cold-uv", action="store_true", help="an empty uv cache for the cold run")
    parser.add_argument("-j", "--jobs", type=int, help="check's -j (default: check's own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        cases = (
            {", ".join(map(str, args.matrices)): args.matrices}
            if args.matrices
            else {"matrix.yaml": [ROOT / "matrix.yaml"], "100 cells": [hundred_cells(Path(tmp))]}
        )
        results = {
            name: measure(f"case{i}", matrices, Path(tmp), args)
            for i, (name, matrices) in enumerate(cases.items())
        }
    uv = ", empty uv cache" if args.cold_uv else ""
    for name, (cold, warm) in results.items():
        target = f" (target <= {TARGETS[name]:g}s)" if name in TARGETS else ""
        print(f"builder check of {name}")
        print(f"  cold (empty builder cache{uv}): {cold:.2f}s")
        print(f"  warm (median of {args.repeat}): {warm:.2f}s{target}")
        print(f"  warm / cold: {warm / cold:.3f}")


if __name__ == "__main__":
    main()
