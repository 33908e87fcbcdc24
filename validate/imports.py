"""Probe: every module of every locked distribution, plus the app's own modules, imports.

Run inside the image as ``python -I validate/imports.py OPTIONS_JSON`` (see ``_runner.py``:
options, output, exit codes). Standard library only.

Each module is imported in a fresh ``python -I`` child so that one segfaulting or ABI-broken
extension cannot take the others down, and each failure is classified by ``classify``.
"""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

PROBE = "imports"
DEFAULTS = {
    "lock": None,
    "imports": [],
    "optional_imports": [],
    "app_path": None,
    "entry_modules": [],
    "module_timeout": 120,
    "jobs": 4,
}
# The shared runner (options, output, exit codes), by path: never put validate/ on sys.path.
_RUNNER = importlib.util.spec_from_file_location("_runner", Path(__file__).with_name("_runner.py"))
runner = importlib.util.module_from_spec(_RUNNER)
_RUNNER.loader.exec_module(runner)
result = runner.results_for(PROBE)

# Ordered: the first rule that matches wins. GPU and NumPy-ABI errors often surface as an
# ImportError further down the traceback, so they are tested before the generic classes.
CLASS_RULES = (
    (
        "gpu-at-import",
        r"Found no NVIDIA driver|Torch not compiled with CUDA enabled|No CUDA GPUs are available"
        r"|CUDA driver initialization failed|no CUDA-capable device is detected"
        r"|CUDA driver version is insufficient|NVML Shared Library Not Found"
        r"|lib(cuda|nvidia-ml)\.so[.\d]*: cannot open shared object file",
    ),
    (
        "numpy-abi",
        r"compiled using NumPy 1\.x cannot be run in\s+NumPy 2|_ARRAY_API not found"
        r"|numpy\.core\.(multiarray|_multiarray_umath) failed to import"
        r"|numpy\.dtype size changed|module compiled against (ABI|API) version",
    ),
    (
        "system-library",
        r"lib[\w.+-]*\.so[\w.]*: cannot open shared object file|cannot load library"
        r"|sndfile library not found|error while loading shared libraries",
    ),
    (
        "version-gate",
        r"is required\b.{0,300}?\bbut found|requires? [\w.-]+ ?(>=|<=|==|~=|!=|<|>) ?\d"
        r"|VersionConflict|cannot import name '[^']+' from '",
    ),
    ("missing-module", r"No module named |requires the \S+ library but it was not found"),
)

# The child imports one module; app paths come as extra argv because -I ignores PYTHONPATH.
CHILD = (
    "import importlib, sys; sys.path[:0] = [p for p in sys.argv[2:] if p]; "
    "importlib.import_module(sys.argv[1])"
)


def classify(error_text: str) -> str:
    """Failure class of an import error text (traceback or message); "other" when none fits."""
    for name, pattern in CLASS_RULES:
        if re.search(pattern, error_text):
            return name
    return "other"


def record_modules(files: list[str]) -> set[str]:
    """Importable names in a RECORD: modules, packages, extensions, namespace subpackages."""
    paths, names = set(files), set()
    for path in files:
        head, _, rest = path.partition("/")
        if head in ("..", "__pycache__") or head.endswith((".dist-info", ".data", ".egg-info")):
            continue
        if not rest and head.endswith(".py") and not head.startswith("__editable__"):
            names.add(head[:-3])
        elif not rest and head.endswith((".so", ".pyd")):
            names.add(head.split(".")[0])
        elif f"{head}/__init__.py" in paths:
            names.add(head)
        elif f"{head}/{rest.partition('/')[0]}/__init__.py" in paths:
            names.add(f"{head}.{rest.partition('/')[0]}")
    return names


def dist_modules(dist: importlib.metadata.Distribution) -> list[str]:
    """Modules a distribution installs, from top_level.txt checked against RECORD; never guessed."""
    top = dist.read_text("top_level.txt") or ""
    wanted = {line.strip().split("/")[0] for line in top.splitlines() if line.strip()}
    files = [str(f) for f in dist.files or []]
    if not files:
        return sorted(wanted)
    found = record_modules(files)
    return sorted(m for m in found if not wanted or m.split(".")[0] in wanted)


def lock_targets(lock_path: str) -> tuple[list[dict], list[dict]]:
    """(modules to import, failures for locked distributions that are not installed)."""
    targets, missing = [], []
    for name in sorted(runner.read_lock(lock_path)):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            error = f"distribution {name} is in the lock but not installed"
            missing.append(record(to_import(name, name), "missing-module", error))
            continue
        targets += [to_import(m, name) for m in dist_modules(dist)]
    return targets, missing


def to_import(module: str, distribution: str | None, required: bool = True) -> dict:
    return {"module": module, "distribution": distribution, "required": required}


def record(target: dict, klass: str | None, error: str, seconds: float = 0.0, ok=False) -> dict:
    """One module's line in details; a failed optional import is a warning."""
    status = "pass" if ok else ("fail" if target["required"] else "warn")
    return {**target, "status": status, "class": klass, "error": error, "seconds": seconds}


def import_in_child(target: dict, app_path: str | None, timeout: float) -> dict:
    """Import one module in a fresh interpreter (cwd: the app, as it runs) and describe it."""
    argv = [sys.executable, "-I", "-c", CHILD, target["module"], app_path or ""]
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=app_path)
    except subprocess.TimeoutExpired:
        return record(target, "timeout", f"import did not finish in {timeout} s", timeout)
    seconds, klass = round(time.monotonic() - start, 2), classify(proc.stderr)
    if proc.returncode == 0:
        # NumPy and CUDA trouble can be printed as a warning by a module that still imports.
        klass = klass if klass in ("numpy-abi", "gpu-at-import") else None
        return record(target, klass, proc.stderr[-600:] if klass else "", seconds, ok=True)
    if proc.returncode < 0:
        error = f"killed by signal {-proc.returncode}\n{proc.stderr[-600:]}"
        return record(target, "crash" if klass == "other" else klass, error, seconds)
    return record(target, klass, proc.stderr[-600:], seconds)


def owner(owners: dict[str, list[str]], module: str) -> str | None:
    """The installed distribution(s) providing a module's top-level package, if any."""
    return ",".join(sorted(set(owners.get(module.split(".")[0], [])))) or None


def gather_targets(opts: dict) -> tuple[list[dict], list[dict]]:
    """Modules to import, deduplicated, with optional ones overriding required ones."""
    targets, missing = lock_targets(opts["lock"]) if opts["lock"] else ([], [])
    owners = importlib.metadata.packages_distributions()
    targets += [to_import(m, owner(owners, m)) for m in opts["imports"]]
    targets += [to_import(m, "app") for m in opts["entry_modules"]]
    optional = [to_import(m, owner(owners, m), False) for m in opts["optional_imports"]]
    unique = {t["module"]: t for t in targets}
    unique.update({t["module"]: t for t in optional})
    return list(unique.values()), missing


def run(opts: dict) -> dict:
    targets, missing = gather_targets(opts)
    timeout, app_path = float(opts["module_timeout"]), opts["app_path"]
    with concurrent.futures.ThreadPoolExecutor(max(1, int(opts["jobs"]))) as pool:
        results = list(pool.map(lambda t: import_in_child(t, app_path, timeout), targets))
    modules = missing + sorted(results, key=lambda r: r["module"])
    failed = [m for m in modules if m["status"] == "fail"]
    warnings = [
        f"{m['module']}: {m['class']}: {runner.last_line(m['error'])}"
        for m in modules
        if m["class"] and m["status"] != "fail"
    ]
    details = {"modules": modules, "count": len(modules), "failed": len(failed)}
    evidence = "\n".join(f"--- {m['module']}\n{m['error'][-400:]}" for m in failed)[-2000:]
    if not failed:
        optional = [m["module"] for m in modules if m["status"] == "warn"]
        reason = f"all {len(modules) - len(optional)} required modules imported"
        reason += f"; optional not importable: {', '.join(optional)}" if optional else ""
        return result("pass", reason, details, "", warnings)
    names = ", ".join(f"{m['module']} ({m['class']})" for m in failed[:5])
    reason = f"{len(failed)} of {len(modules)} modules failed to import: {names}"
    return result("fail", reason, details, evidence, warnings)


if __name__ == "__main__":
    runner.main(PROBE, DEFAULTS, run)
