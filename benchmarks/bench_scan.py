"""Benchmark `builder scan` against deptry on the repositories with a known truth
(tests/fixtures/scan/<case>/truth.json), then time scan on a synthetic 2,000-file repository.

Both tools get the same inputs, each run as a user runs it, from the repository's root: the
repository and its requirements.txt (scan also gets the truth's entry files, Python and
platform). "Undeclared" is what the truth calls undeclared: imported by the code the entries
reach, at module level or lazily, not declared, and not arriving through a declared
requirement. scan's set is its `required` and `lazy` undeclared imports; deptry's is its DEP001
("missing") modules. Names are compared as top-level import names. deptry maps imports to
distributions with the environment it runs in (here builder's own venv), as it does for users.

By default scan resolves live (uv and PyPI) into an empty temporary cache; --recorded fills
that cache from each case's recordings instead and runs scan --offline (no network).
Needs deptry (`pip install -e '.[bench]'`); without it only scan's columns are printed.
Usage: python benchmarks/bench_scan.py [--recorded] [--files N] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "fixtures" / "scan"
DEPTRY = shutil.which(
    "deptry", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
)


@dataclass(frozen=True)
class Score:
    found: frozenset[str]
    truth: frozenset[str]
    seconds: float

    @property
    def tp(self) -> int:
        return len(self.found & self.truth)

    @property
    def fp(self) -> int:
        return len(self.found - self.truth)

    @property
    def fn(self) -> int:
        return len(self.truth - self.found)


def ratio(hits: int, total: int) -> str:
    return f"{hits / total:.2f}" if total else "  - "


def top(name: str) -> str:
    return name.split(".")[0]


# --- the two tools ------------------------------------------------------------------------------


def scan_args(case: Path, truth: dict[str, Any]) -> list[str]:
    entries = [arg for entry in truth["entries"] for arg in ("--entry", str(entry))]
    return [
        str(case),
        *entries,
        "-r",
        str(case / str(truth["requirements"])),
        "--python",
        str(truth["python"]),
        "--platform",
        str(truth["platform"]),
    ]


def run_scan(args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float]:
    argv = [sys.executable, "-m", "builder", "-q", "scan", *args, "--format", "json"]
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    if done.returncode not in (0, 1):
        sys.exit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report, seconds


def scan_undeclared(report: dict[str, Any]) -> frozenset[str]:
    groups = report["requirements"]["undeclared"]
    return frozenset(top(i["import"]) for key in ("required", "lazy") for i in groups[key])


def run_deptry(repo: Path, requirements: str) -> tuple[frozenset[str], float]:
    assert DEPTRY is not None
    with tempfile.TemporaryDirectory(prefix="bench-deptry-") as tmp:
        out = Path(tmp) / "deptry.json"
        argv = [DEPTRY, ".", "--requirements-files", requirements, "--json-output", str(out)]
        start = time.monotonic()
        subprocess.run(argv, cwd=repo, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - start
        issues = json.loads(out.read_text()) if out.is_file() else []
    return frozenset(top(i["module"]) for i in issues if i["error"]["code"] == "DEP001"), seconds


# --- recorded mode: the cache a live run would leave ------------------------------------------


def fill_cache(case: Path, truth: dict[str, Any], cache: Path) -> None:
    from builder.lock import inputs_digest
    from builder.scan import parse_resolution, read_declared, read_indexes
    from builder.scan.resolve import scan_cell

    python, platform = str(truth["python"]), str(truth["platform"])
    requirements = case / str(truth["requirements"])
    declared = read_declared(requirements, python)
    lines = [str(d.requirement) for d in declared]
    cell = scan_cell(lines, python, platform, read_indexes([requirements]))
    body = (case / "recorded" / "uv.txt").read_text()
    entry = {"ok": True, "body": body, "error": None, "dropped": []}
    path = cache / "metadata" / "resolutions" / f"{inputs_digest(cell, 'uv')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry))
    modules = json.loads((case / "recorded" / "modules.json").read_text())
    for dist, version in parse_resolution(body).pins.items():
        where = cache / "metadata" / "modules" / dist / f"{version}.json"
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(json.dumps({"modules": modules.get(dist), "reason": "no wheel"}))


# --- accuracy -----------------------------------------------------------------------------------


def accuracy(recorded: bool, env: dict[str, str], cache: Path) -> None:
    rows: list[tuple[str, Score, Score | None]] = []
    required_right = 0
    for case in sorted(p for p in CASES.iterdir() if (p / "truth.json").is_file()):
        truth = json.loads((case / "truth.json").read_text())
        want = frozenset(top(n) for key in ("required", "lazy") for n in truth["undeclared"][key])
        args = scan_args(case, truth)
        if recorded:
            fill_cache(case, truth, cache)
            args.append("--offline")
        report, seconds = run_scan(args, env)
        required = report["requirements"]["undeclared"]["required"]
        required_right += sorted(top(i["import"]) for i in required) == sorted(
            truth["undeclared"]["required"]
        )
        scan_score = Score(scan_undeclared(report), want, seconds)
        deptry_score = None
        if DEPTRY:
            found, took = run_deptry(case, str(truth["requirements"]))
            deptry_score = Score(found, want, took)
        rows.append((case.name, scan_score, deptry_score))
    print_table(rows)
    print(
        f"  scan's `required` group (what fails the scan) equals the truth's in "
        f"{required_right} of {len(rows)} cases"
    )


def print_table(rows: list[tuple[str, Score, Score | None]]) -> None:
    header = f"  {'case':<18} {'truth':>5} | {'scan: found':>11} {'P':>5} {'R':>5} {'s':>5}"
    header += f" | {'deptry: found':>13} {'P':>5} {'R':>5} {'s':>5}" if rows[0][2] else ""
    print("undeclared imports (required + lazy), precision P and recall R against the truth")
    print(header)
    print("  " + "-" * (len(header) - 2))
    totals: dict[str, list[int]] = {"scan": [0, 0, 0], "deptry": [0, 0, 0]}
    for name, scan_score, deptry_score in rows:
        line = f"  {name:<18} {len(scan_score.truth):>5} | " + cells(scan_score, 11)
        add(totals["scan"], scan_score)
        if deptry_score is not None:
            line += " | " + cells(deptry_score, 13)
            add(totals["deptry"], deptry_score)
        print(line)
    truth = sum(len(s.truth) for _, s, _ in rows)
    line = f"  {'overall (micro)':<18} {truth:>5} | " + total_cells(totals["scan"], 11)
    if rows[0][2] is not None:
        line += " | " + total_cells(totals["deptry"], 13)
    print(line)


def cells(score: Score, width: int) -> str:
    precision = ratio(score.tp, score.tp + score.fp)
    recall = ratio(score.tp, score.tp + score.fn)
    return f"{len(score.found):>{width}} {precision:>5} {recall:>5} {score.seconds:>5.2f}"


def add(total: list[int], score: Score) -> None:
    total[0] += score.tp
    total[1] += score.fp
    total[2] += score.fn


def total_cells(total: list[int], width: int) -> str:
    tp, fp, fn = total
    return f"{tp + fp:>{width}} {ratio(tp, tp + fp):>5} {ratio(tp, tp + fn):>5} {'':>5}"


# --- speed --------------------------------------------------------------------------------------


MODULE = '''"""Synthetic module {index}."""

import json
import os
from typing import Any

import numpy as np

from . import {sibling}

try:
    import requests
except ImportError:
    requests = None


class Layer{index}:
    scale = {index}

    def __init__(self, width: int = 8, name: str = "layer{index}") -> None:
        self.width = width
        self.name = name

    def forward(self, x: Any) -> Any:
        from {other} import Layer{other_index}

        return np.asarray(x) * self.scale, Layer{other_index}, {sibling}


def load(path: str = os.sep) -> Any:
    import torch

    with open(os.path.join(path, "config.json")) as f:
        return json.load(f), torch.cuda.is_available()
'''


def synthetic(root: Path, files: int) -> Path:
    """A repository of exactly `files` Python files: `main.py` and packages of about 50 modules,
    each module importing a sibling at module level, a module of another package lazily,
    numpy, requests (optional) and torch (lazily)."""
    rng = random.Random(0)
    packages = max(1, -(-(files - 1) // 50))
    slots = files - 1 - packages
    names = [(n % packages, n // packages) for n in range(slots)]
    sizes = [sum(1 for p, _ in names if p == package) for package in range(packages)]
    for p in range(packages):
        package = root / f"pkg{p:03}"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(
            "".join(f"from . import mod{m:02}\n" for m in range(sizes[p]))
        )
    for index, (p, m) in enumerate(names):
        op, om = rng.choice(names)
        text = MODULE.format(
            index=index,
            sibling=f"mod{(m + 1) % sizes[p]:02}",
            other=f"pkg{op:03}.mod{om:02}",
            other_index=names.index((op, om)),
        )
        (root / f"pkg{p:03}" / f"mod{m:02}.py").write_text(text)
    (root / "main.py").write_text("".join(f"import pkg{p:03}\n" for p in range(packages)))
    (root / "requirements.txt").write_text("numpy<2\nrequests\n")
    return root


def speed(files: int, repeat: int, recorded: bool, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-scan-repo-") as tmp:
        repo = synthetic(Path(tmp) / "repo", files)
        count = sum(1 for _ in repo.rglob("*.py"))
        args = [str(repo), "--entry", "main.py", "-r", str(repo / "requirements.txt")]
        args += ["--offline"] if recorded else []
        report, cold = run_scan(args, env)
        warm = statistics.median(run_scan(args, env)[1] for _ in range(repeat))
        reached = len(report["files"])
        print(f"builder scan of a synthetic repository: {count} .py files, {reached} reached")
        print(f"  cold (empty builder cache{', offline' if recorded else ''}): {cold:.2f}s")
        print(f"  warm (median of {repeat}): {warm:.2f}s  (target: under 10 s)")
        if DEPTRY:
            _, took = run_deptry(repo, "requirements.txt")
            print(f"  deptry on the same repository: {took:.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recorded", action="store_true", help="recorded resolutions, offline")
    parser.add_argument("--files", type=int, default=2000, help="files in the synthetic repo")
    parser.add_argument("--repeat", type=int, default=3, help="warm runs (the median counts)")
    args = parser.parse_args()
    if DEPTRY is None:
        print("deptry not found: pip install -e '.[bench]' to compare with it", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        cache = Path(tmp) / "builder"
        env = {**os.environ, "BUILDER_CACHE_DIR": str(cache)}
        accuracy(args.recorded, env, cache)
        print()
        speed(args.files, args.repeat, args.recorded, env)


if __name__ == "__main__":
    main()
