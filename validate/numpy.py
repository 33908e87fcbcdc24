"""Probe: the installed NumPy matches the cell's specifier, and torch <-> NumPy interop works.

Run inside the image as ``python -I validate/numpy.py OPTIONS_JSON`` (see ``_runner.py``:
options, output, exit codes). Standard library only. The file is named after what it probes;
``-I`` keeps its own directory off sys.path, so it never shadows the real numpy.

The interop check runs in a child interpreter so that the "compiled using NumPy 1.x cannot be
run in NumPy 2" banner, which torch prints to stderr instead of raising, can be captured.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

PROBE = "numpy"
DEFAULTS = {"numpy_spec": None, "timeout": 300}
# The shared runner (options, output, exit codes), by path: never put validate/ on sys.path.
_RUNNER = importlib.util.spec_from_file_location("_runner", Path(__file__).with_name("_runner.py"))
runner = importlib.util.module_from_spec(_RUNNER)
_RUNNER.loader.exec_module(runner)
result = runner.results_for(PROBE)

ABI_TROUBLE = re.compile(
    r"compiled using NumPy 1\.x cannot be run in\s+NumPy 2|_ARRAY_API not found"
    r"|Numpy is not available|Failed to initialize NumPy"
)

CHILD = """
import json, sys
import numpy
report = {"numpy": numpy.__version__}
if sys.argv[1] == "torch":
    import torch
    array = numpy.arange(12, dtype=numpy.float32).reshape(3, 4)
    tensor = torch.from_numpy(array)
    array[0, 0] = 42.0  # from_numpy shares memory: the tensor must see this write
    back = (tensor * 2).numpy()
    report["torch"] = torch.__version__
    report["shared_memory"] = bool(tensor[0, 0].item() == 42.0)
    report["round_trip"] = bool((back == array * 2).all() and back.dtype == numpy.float32)
print(json.dumps(report))
"""


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def interop(with_torch: bool, timeout: float) -> tuple[dict, str]:
    """(facts the child reported plus any problem found, the child's stderr tail)."""
    argv = [sys.executable, "-I", "-c", CHILD, "torch" if with_torch else "numpy"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"problem": f"importing numpy/torch did not finish in {timeout} s"}, ""
    lines = proc.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if proc.returncode == 0 and lines else {}
    banner = ABI_TROUBLE.search(proc.stderr)
    if proc.returncode != 0:
        report["problem"] = runner.last_line(proc.stderr) or f"child exited {proc.returncode}"
    elif banner:
        report["problem"] = f"NumPy ABI trouble reported on stderr: {banner.group(0)}"
    elif with_torch and not (report.get("shared_memory") and report.get("round_trip")):
        report["problem"] = "torch.from_numpy / Tensor.numpy() round trip gave wrong values"
    return report, proc.stderr[-2000:]


def run(opts: dict) -> dict:
    version, spec = installed("numpy"), opts["numpy_spec"]
    if version is None:
        status = "fail" if spec else "skipped"
        return result(status, "numpy is not installed", {"numpy_spec": spec})
    details = {"numpy": version, "numpy_spec": spec, "torch": installed("torch")}
    if spec:
        details["spec_ok"], details["spec_checked_by"] = runner.satisfies(version, spec)
    report, stderr = interop(details["torch"] is not None, float(opts["timeout"]))
    details["interop"] = report
    if spec and not details["spec_ok"]:
        return result("fail", f"numpy {version} does not satisfy {spec}", details, stderr)
    if "problem" in report:
        return result("fail", report["problem"], details, stderr)
    what = "torch interop works" if details["torch"] else "imports (torch not installed)"
    return result("pass", f"numpy {version} {what}", details)


if __name__ == "__main__":
    runner.main(PROBE, DEFAULTS, run)
