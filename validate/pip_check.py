"""Probe ``pip-check``: every installed distribution's requirements are met by what is installed.

Run inside the image as ``python -I validate/pip_check.py OPTIONS_JSON`` (``-`` or no argument:
options on stdin). Standalone on purpose: standard library only, no sibling imports.

Uses ``pip check`` when pip is importable; final images often drop pip, so the same check is
also implemented on importlib.metadata (option ``method``: "auto", "pip" or "metadata").
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import traceback

PROBE = "pip-check"
DEFAULTS = {"method": "auto", "timeout": 300}
EXIT_CODES = {"pass": 0, "skipped": 0, "fail": 1, "error": 2}

PIP_LINE = re.compile(
    r"^(?P<distribution>\S+) (?P<version>\S+) (?:requires (?P<missing>\S+), which is not installed"
    r"|has requirement (?P<requirement>.+), but you have (?P<have>.+))\.$"
)
REQUIREMENT = re.compile(
    r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*\(?([^;@]*?)\)?\s*(?:;(.*))?$"
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


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


def installed_versions() -> dict[str, str]:
    """{canonical name: version}; the first distribution on sys.path wins, as for imports."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
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


def satisfied(version: str, spec: str) -> bool:
    if not spec:
        return True
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:
        return spec_ok(version, spec)
    return SpecifierSet(spec).contains(version, prereleases=True)


def requirement_problem(req_text: str, have: dict[str, str]) -> dict | None:
    parsed = parse_requirement(req_text)
    if parsed is None:
        return None
    name, spec = parsed
    version = have.get(canonical(name))
    if version is None:
        return {"requirement": req_text, "problem": "not installed"}
    if not satisfied(version, spec):
        return {"requirement": req_text, "problem": f"{name} {version} is installed"}
    return None


def metadata_check() -> tuple[list[dict], list[str]]:
    """(conflicts, warnings) computed from importlib.metadata alone."""
    have, conflicts, unchecked, seen = installed_versions(), [], [], set()
    for dist in importlib.metadata.distributions():
        name = canonical(dist.metadata["Name"] or "")
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
        "distribution": canonical(found["distribution"]),
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
