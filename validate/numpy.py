"""Probe: the installed NumPy matches the cell's specifier, and torch <-> NumPy interop works.

Run inside the image as ``python -I validate/numpy.py OPTIONS_JSON`` (``-`` or no argument:
options on stdin). Standalone on purpose: standard library only, no sibling imports. The file
is named after what it probes; ``-I`` keeps its own directory off sys.path, so it never
shadows the real numpy.

The interop check runs in a child interpreter so that the "compiled using NumPy 1.x cannot be
run in NumPy 2" banner, which torch prints to stderr instead of raising, can be captured.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import traceback

PROBE = "numpy"
DEFAULTS = {"numpy_spec": None, "timeout": 300}
EXIT_CODES = {"pass": 0, "skipped": 0, "fail": 1, "error": 2}

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


def release(version: str) -> tuple[int, ...]:
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def clause_ok(version: tuple[int, ...], op: str, target: str) -> bool:
    if target.endswith(".*"):
        prefix = release(target[:-2])
        return (version[: len(prefix)] == prefix) == (op == "==")
    wanted = release(target)
    width = max(len(version), len(wanted))
    have, want = version + (0,) * (width - len(version)), wanted + (0,) * (width - len(wanted))
    if op == "~=":
        return have >= want and have[: len(wanted) - 1] == wanted[:-1]
    compare = {"==": have == want, "===": have == want, "!=": have != want}
    compare.update({"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want})
    return compare[op]


def spec_ok(version: str, spec: str) -> bool:
    """PEP 440 subset for images without packaging: <, <=, >, >=, ==, !=, ~= and .* on releases."""
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        match = re.match(r"(~=|===|==|!=|<=|>=|<|>)\s*(\S+)$", clause)
        if not match:
            raise ValueError(f"unsupported specifier clause {clause!r}")
        if not clause_ok(release(version), *match.groups()):
            return False
    return True


def satisfies(version: str, spec: str) -> tuple[bool, str]:
    """(does version satisfy spec, which implementation judged it)."""
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:
        return spec_ok(version, spec), "stdlib"
    return SpecifierSet(spec).contains(version, prereleases=True), "packaging"


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
        report["problem"] = last_line(proc.stderr) or f"child exited {proc.returncode}"
    elif banner:
        report["problem"] = f"NumPy ABI trouble reported on stderr: {banner.group(0)}"
    elif with_torch and not (report.get("shared_memory") and report.get("round_trip")):
        report["problem"] = "torch.from_numpy / Tensor.numpy() round trip gave wrong values"
    return report, proc.stderr[-2000:]


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else ""


def run(opts: dict) -> dict:
    version, spec = installed("numpy"), opts["numpy_spec"]
    if version is None:
        status = "fail" if spec else "skipped"
        return result(status, "numpy is not installed", {"numpy_spec": spec})
    details = {"numpy": version, "numpy_spec": spec, "torch": installed("torch")}
    if spec:
        details["spec_ok"], details["spec_checked_by"] = satisfies(version, spec)
    report, stderr = interop(details["torch"] is not None, float(opts["timeout"]))
    details["interop"] = report
    if spec and not details["spec_ok"]:
        return result("fail", f"numpy {version} does not satisfy {spec}", details, stderr)
    if "problem" in report:
        return result("fail", report["problem"], details, stderr)
    what = "torch interop works" if details["torch"] else "imports (torch not installed)"
    return result("pass", f"numpy {version} {what}", details)


# --- boilerplate shared (by copy) by every probe ------------------------------------------


def result(status, reason, details=None, evidence="", warnings=()) -> dict:
    return {
        "probe": PROBE,
        "status": status,
        "reason": reason.splitlines()[0][:300] if reason else "",
        "details": details or {},
        "evidence": evidence[-2000:],
        "warnings": list(warnings),
    }


def load_options(argv: list[str]) -> dict:
    """Options from the JSON file named by argv[1]; stdin when it is absent or "-"."""
    source = argv[1] if len(argv) > 1 else "-"
    if source != "-":
        with open(source, encoding="utf-8") as f:
            text = f.read()
    else:
        text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    return {**DEFAULTS, **json.loads(text or "{}")}


def main(argv: list[str]) -> int:
    # Whatever the probed libraries write to fd 1 goes to stderr; the JSON line keeps stdout.
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    try:
        res = run(load_options(argv))
    except (Exception, SystemExit) as exc:
        res = result(
            "error", f"probe raised {type(exc).__name__}: {exc}", None, traceback.format_exc()
        )
    out.write(json.dumps(res) + "\n")
    out.flush()
    return EXIT_CODES[res["status"]]


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: some CUDA/ML libraries crash or hang in it
