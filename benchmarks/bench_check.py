"""Benchmark `builder check`: a cold run (empty metadata cache) against warm runs of the same
matrix, each as a user runs it (`python -m builder check`, start-up included).

Cold means builder's own cache (index metadata and resolutions) is empty; uv keeps its own HTTP
cache unless --cold-uv gives it an empty one too (that downloads every wheel's metadata again).
Needs uv and the index. Prints the numbers and the warm/cold ratio.
Usage: python benchmarks/bench_check.py [-m MATRIX ...] [--repeat N] [--cold-uv]
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

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = [ROOT / "tests/fixtures/check/bin-weights/matrix.yaml"]


def check(matrices: list[Path], env: dict[str, str]) -> float:
    """Seconds for one `builder check` of each matrix, in turn."""
    start = time.monotonic()
    for matrix in matrices:
        argv = [sys.executable, "-m", "builder", "-q", "check", "-m", str(matrix)]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode not in (0, 1):  # 1: a cell has errors, as the seed cells do
            sys.exit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-3000:]}")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--matrix", action="append", type=Path, dest="matrices")
    parser.add_argument("--repeat", type=int, default=3, help="warm runs (the median counts)")
    parser.add_argument("--cold-uv", action="store_true", help="an empty uv cache for the cold run")
    args = parser.parse_args()
    matrices = args.matrices or DEFAULT
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        env = {**os.environ, "BUILDER_CACHE_DIR": str(Path(tmp) / "builder")}
        if args.cold_uv:
            env["UV_CACHE_DIR"] = str(Path(tmp) / "uv")
        cold = check(matrices, env)
        warm = statistics.median(check(matrices, env) for _ in range(args.repeat))
    names = ", ".join(str(m.relative_to(ROOT) if m.is_relative_to(ROOT) else m) for m in matrices)
    print(f"builder check of {names}")
    print(f"  cold (empty builder cache{', empty uv cache' if args.cold_uv else ''}): {cold:.2f}s")
    print(f"  warm (median of {args.repeat}): {warm:.2f}s")
    print(f"  warm / cold: {warm / cold:.3f}")


if __name__ == "__main__":
    main()
