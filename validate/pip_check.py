"""Probe ``pip-check``: every installed distribution's requirements are met by what is installed.

Run inside the image as ``python -I validate/pip_check.py OPTIONS_JSON`` (see ``_runner.py``:
options, output, exit codes). Standard library only.

Uses ``pip check`` when pip is importable; final images often drop pip, so the same check is
also implemented on importlib.metadata (option ``method``: "auto", "pip" or "metadata").
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

PROBE = "pip-check"
DEFAULTS = {"method": "auto", "timeout": 300}
# The shared runner (options, output, exit codes), by path: never put validate/ on sys.path.
_RUNNER = importlib.util.spec_from_file_location("_runner", Path(__file__).with_name("_runner.py"))
runner = importlib.util.module_from_spec(_RUNNER)
_RUNNER.loader.exec_module(runner)
result = runner.results_for(PROBE)

PIP_LINE = re.compile(
    r"^(?P<distribution>\S+) (?P<version>\S+) (?:requires (?P<missing>\S+), which is not installed"
    r"|has requirement (?P<requirement>.+), but you have (?P<have>.+))\.$"
)
REQUIREMENT = re.compile(
    r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*\(?([^;@]*?)\)?\s*(?:;(.*))?$"
)


def installed_versions() -> dict[str, str]:
    """{canonical name: version}; the first distribution on sys.path wins, as for imports."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(runner.canonical(name), dist.version)
    return found


def parse_requirement(text: str) -> tuple[str, str] | None:
    """(name, specifier) of a Requires-Dist value, or None when its marker is false here.

    Markers are evaluated as pip check does: for the base install, no extras requested.
    """
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return parse_requirement_stdlib(text)
    req = Requirement(text)
    if req.marker and not req.marker.evaluate({"extra": ""}):
        return None
    return req.name, str(req.specifier)


def parse_requirement_stdlib(text: str) -> tuple[str, str] | None:
    """Without packaging: drop ``extra`` requirements; other markers raise LookupError."""
    match = REQUIREMENT.match(text)
    if not match or (match.group(3) and "extra" in match.group(3)):
        return None
    if match.group(3):
        raise LookupError(text)
    return match.group(1), match.group(2).strip()


def requirement_problem(req_text: str, have: dict[str, str]) -> dict | None:
    parsed = parse_requirement(req_text)
    if parsed is None:
        return None
    name, spec = parsed
    version = have.get(runner.canonical(name))
    if version is None:
        return {"requirement": req_text, "problem": "not installed"}
    if spec and not runner.satisfies(version, spec)[0]:
        return {"requirement": req_text, "problem": f"{name} {version} is installed"}
    return None


def metadata_check() -> tuple[list[dict], list[str]]:
    """(conflicts, warnings) computed from importlib.metadata alone."""
    have, conflicts, unchecked, seen = installed_versions(), [], [], set()
    for dist in importlib.metadata.distributions():
        name = runner.canonical(dist.metadata["Name"] or "")
        if name and name not in seen:
            seen.add(name)
            for req_text in dist.requires or []:
                try:
                    problem = requirement_problem(req_text, have)
                except (LookupError, ValueError):
                    unchecked.append(f"{name}: {req_text}")
                    continue
                if problem:
                    conflicts.append({"distribution": name, "version": dist.version, **problem})
    if not unchecked:
        return conflicts, []
    return conflicts, [
        f"{len(unchecked)} requirements not checked (markers need packaging, "
        f"or unparseable): {'; '.join(unchecked[:5])}"
    ]


def pip_conflict(line: str) -> dict:
    """A ``pip check`` line in the same shape as the metadata check's conflicts."""
    match = PIP_LINE.match(line)
    if not match:
        return {"text": line}
    found = match.groupdict()
    problem = f"{found['have']} is installed" if found["have"] else "not installed"
    requirement = found["requirement"] or found["missing"]
    return {
        "distribution": runner.canonical(found["distribution"]),
        "version": found["version"],
        "requirement": requirement,
        "problem": problem,
        "text": line,
    }


def pip_check(timeout: float) -> tuple[list[dict], list[str], str]:
    """(conflicts, warnings, raw output) from ``python -m pip check``."""
    argv = [sys.executable, "-I", "-m", "pip", "check", "--disable-pip-version-check"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    conflicts, warnings = [], []
    for line in proc.stdout.splitlines():
        if line.strip() and not line.startswith("No broken requirements"):
            conflicts.append(pip_conflict(line.strip()))
    if proc.returncode != 0 and not conflicts:
        warnings.append(f"pip check exited {proc.returncode} without conflict lines")
    return conflicts, warnings, (proc.stdout + proc.stderr)[-2000:]


def run(opts: dict) -> dict:
    method = opts["method"]
    if method == "auto":
        method = "pip" if importlib.util.find_spec("pip") else "metadata"
    if method == "pip" and not importlib.util.find_spec("pip"):
        return result("error", "method 'pip' asked for, but pip is not importable here")
    if method == "pip":
        conflicts, warnings, raw = pip_check(float(opts["timeout"]))
    elif method == "metadata":
        (conflicts, warnings), raw = metadata_check(), ""
    else:
        return result("error", f"unknown method {method!r}: use auto, pip or metadata")
    conflicts.sort(key=lambda c: (c.get("distribution", ""), c.get("requirement", c.get("text"))))
    details = {"method": method, "conflicts": conflicts, "count": len(conflicts)}
    if not conflicts:
        return result("pass", f"no broken requirements ({method})", details, "", warnings)
    first = (
        conflicts[0].get("text") or f"{conflicts[0]['distribution']} {conflicts[0]['requirement']}"
    )
    reason = f"{len(conflicts)} broken requirements ({method}), first: {first}"
    return result("fail", reason, details, raw, warnings)


if __name__ == "__main__":
    runner.main(PROBE, DEFAULTS, run)
