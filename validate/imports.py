"""Probe: every module of every locked distribution, plus the app's own modules, imports.

Run inside the image as ``python -I validate/imports.py OPTIONS_JSON`` (see ``_runner.py``:
options, output, exit codes). Standard library only.

All modules are first imported in one ``python -I`` child, in dependency order (a distribution's
requirements before it, the app last), which pays for torch once instead of once per module. A
module whose import fails there, crashes or hangs that child (it is restarted after it), or
comes after a NumPy-ABI or GPU warning (which a shared interpreter prints only once, so it
cannot say which later modules would print it too) is imported again in a fresh ``python -I``
child of its own, and that run is its verdict: its failure class (``classify``) is exactly what
it would be alone. Option ``mode: alone`` imports every module in a fresh child.
"""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import importlib.util
import inspect
import json
import queue
import re
import subprocess
import sys
import threading
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
    "mode": "shared",  # or "alone": every module in a fresh interpreter
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
# Classes a module that still imports can print (a warning), once per interpreter.
WARNING_CLASSES = ("numpy-abi", "gpu-at-import")


def import_all() -> None:
    """The shared child, run as ``python -I -c`` with this function's source: import each module
    that stdin's job names, in order, and report each on the original stdout as JSON lines
    (``start``, then ``done`` with the traceback or None and what the import wrote to stderr).
    What modules print to stdout is discarded, as the fresh child's stdout is never read."""
    import importlib
    import json
    import os
    import sys
    import tempfile
    import time
    import traceback

    job = json.loads(sys.stdin.read())
    sys.path[:0] = [p for p in job["paths"] if p]
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    stderr = os.dup(2)

    def say(**fields) -> None:
        out.write(json.dumps(fields) + "\n")
        out.flush()

    for name in job["modules"]:
        say(start=name)
        with tempfile.TemporaryFile() as capture:
            sys.stderr.flush()
            os.dup2(capture.fileno(), 2)
            start, error = time.monotonic(), None
            try:
                importlib.import_module(name)
            except BaseException:  # SystemExit too: the fresh child decides what it means
                error = traceback.format_exc()
            seconds = round(time.monotonic() - start, 2)
            sys.stderr.flush()
            os.dup2(stderr, 2)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
        say(done=name, error=error, stderr=text[-4000:], seconds=seconds)
    say(end=True)
    os._exit(0)  # no interpreter teardown: some CUDA/ML libraries crash or hang in it


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


def requirement_names(dist: importlib.metadata.Distribution) -> set[str]:
    """Canonical names a distribution requires, leaving out those only an extra asks for."""
    names = set()
    for line in dist.requires or []:
        requirement, _, marker = line.partition(";")
        found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if found and "extra" not in marker:
            names.add(runner.canonical(found.group(1)))
    return names


def dependency_ranks() -> dict[str, int]:
    """{canonical distribution name: rank}, every installed distribution after what it requires
    (a cycle is cut where it is found; ties in name order)."""
    requires: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        name = runner.canonical(dist.metadata["Name"] or "")
        if name and name not in requires:
            requires[name] = requirement_names(dist)
    ranks: dict[str, int] = {}
    for root in sorted(requires):
        stack, entered = [(root, iter(sorted(requires[root])))], {root}
        while stack:
            name, deps = stack[-1]
            dep = next((d for d in deps if d in requires and d not in entered), None)
            if dep is None:
                ranks.setdefault(name, len(ranks))
                stack.pop()
            elif dep not in ranks:
                entered.add(dep)
                stack.append((dep, iter(sorted(requires[dep]))))
    return ranks


def import_order(targets: list[dict]) -> list[dict]:
    """Targets in dependency order: by their distribution's rank (several owners: the highest),
    unknown owners after the locked ones, the app last; then by module name."""
    ranks = dependency_ranks()
    last = len(ranks)

    def key(target: dict) -> tuple[int, str]:
        owners = (target["distribution"] or "").split(",")
        if owners == ["app"]:
            return last + 1, target["module"]
        rank = max(ranks.get(runner.canonical(o), last) for o in owners)
        return rank, target["module"]

    return sorted(targets, key=key)


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def shared_child(targets: list[dict], app_path: str | None, timeout: float) -> list[dict]:
    """Import targets in one fresh interpreter, in order: the ``done`` events of those that
    finished. Fewer events than targets: the child died or hung (killed after ``timeout``
    seconds without an answer) in the module after the last one."""
    source = inspect.getsource(import_all) + "\nimport_all()\n"
    child = subprocess.Popen(
        [sys.executable, "-I", "-c", source],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=app_path,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(child.stdout, lines), daemon=True).start()
    events: list[dict] = []
    try:
        child.stdin.write(
            json.dumps({"modules": [t["module"] for t in targets], "paths": [app_path]})
        )
        child.stdin.close()
        deadline = time.monotonic() + timeout
        while True:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            event = json.loads(line) if line is not None else {"end": False}
            if "end" in event:
                return events
            if "start" in event:
                deadline = time.monotonic() + timeout
            else:
                events.append(event)
    except (queue.Empty, ValueError, OSError):  # hung, or the child broke its own protocol
        return events
    finally:
        child.kill()
        child.wait()


def shared_pass(
    targets: list[dict], app_path: str | None, timeout: float
) -> tuple[list[dict], list[dict]]:
    """(records of the modules whose shared import is their verdict, targets to import alone)."""
    kept, alone, rest, warned = [], [], list(targets), False
    while rest:
        events = shared_child(rest, app_path, timeout)
        for index, event in enumerate(events):
            target = rest[index]
            text = event["stderr"] + (event["error"] or "")
            warned = warned or classify(text) in WARNING_CLASSES
            if event["error"] is None and not warned:
                kept.append(record(target, None, "", event["seconds"], ok=True))
            else:
                alone.append(target)
        rest = rest[len(events) :]
        if rest:  # the module it died or hung in; the others get a new child
            alone.append(rest.pop(0))
    return kept, alone


def import_all_targets(opts: dict, targets: list[dict]) -> tuple[list[dict], int]:
    """(one record per target, how many were imported alone)."""
    timeout, app_path = float(opts["module_timeout"]), opts["app_path"]
    kept, alone = [], targets
    if opts["mode"] != "alone" and targets:
        kept, alone = shared_pass(import_order(targets), app_path, timeout)
    with concurrent.futures.ThreadPoolExecutor(max(1, int(opts["jobs"]))) as pool:
        results = list(pool.map(lambda t: import_in_child(t, app_path, timeout), alone))
    return kept + results, len(alone)


def run(opts: dict) -> dict:
    targets, missing = gather_targets(opts)
    results, alone = import_all_targets(opts, targets)
    modules = missing + sorted(results, key=lambda r: r["module"])
    failed = [m for m in modules if m["status"] == "fail"]
    warnings = [
        f"{m['module']}: {m['class']}: {runner.last_line(m['error'])}"
        for m in modules
        if m["class"] and m["status"] != "fail"
    ]
    details = {"modules": modules, "count": len(modules), "failed": len(failed)}
    details.update(mode=opts["mode"], imported_alone=alone)
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
