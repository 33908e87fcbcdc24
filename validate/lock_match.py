"""Probe ``lock-match``: the installed distributions are exactly the cell's lock.

Run inside the image as ``python -I validate/lock_match.py OPTIONS_JSON`` (``-`` or no argument:
options on stdin). Standalone on purpose: standard library only, no sibling imports.

Compares importlib.metadata over this interpreter's sys.path with the lock's ``name==version``
pins, by canonical name, and reports what is missing, extra and at another version.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
import traceback

PROBE = "lock-match"
DEFAULTS = {"lock": None, "ignore": ["pip", "setuptools", "wheel"]}
EXIT_CODES = {"pass": 0, "skipped": 0, "fail": 1, "error": 2}

LOCK_LINE = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*===?\s*([^\s;\\]+)\s*(?:;\s*([^\\#]+))?"
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def marker_applies(marker: str | None) -> bool:
    """True when a lock line's environment marker holds here (or cannot be judged)."""
    if not marker:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:
        return True
    return Marker(marker).evaluate()


def read_lock(path: str) -> dict[str, str]:
    """{canonical name: version} of the ``name==version`` pins of a pip-compile style lock."""
    pins = {}
    with open(path, encoding="utf-8") as lock:
        for line in lock:
            match = LOCK_LINE.match(line.strip())
            if match and marker_applies(match.group(3)):
                pins[canonical(match.group(1))] = match.group(2)
    return pins


def installed() -> tuple[dict[str, str], list[str]]:
    """({canonical name: version} of the first copy on sys.path, names installed twice)."""
    found: dict[str, str] = {}
    twice = []
    for dist in importlib.metadata.distributions():
        name = canonical(dist.metadata["Name"] or "")
        if name in found:
            twice.append(f"{name} {dist.version} is shadowed by {name} {found[name]}")
        elif name:
            found[name] = dist.version
    return found, twice


def same_version(locked: str, have: str) -> bool:
    """PEP 440 equality; a lock without a local label accepts one (2.13.0 matches 2.13.0+cpu)."""
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:
        locked, have = locked.lower(), have.lower()
        return have == locked or ("+" not in locked and have.split("+")[0] == locked)
    try:
        want, got = Version(locked), Version(have)
    except InvalidVersion:
        return locked == have
    return got == want or (not want.local and Version(got.public) == want)


def compare(pins: dict[str, str], have: dict[str, str]) -> dict[str, list[dict]]:
    return {
        "missing": [{"name": n, "locked": v} for n, v in sorted(pins.items()) if n not in have],
        "extra": [{"name": n, "installed": v} for n, v in sorted(have.items()) if n not in pins],
        "mismatched": [
            {"name": n, "locked": v, "installed": have[n]}
            for n, v in sorted(pins.items())
            if n in have and not same_version(v, have[n])
        ],
    }


def respelled(pins: dict[str, str], have: dict[str, str]) -> list[str]:
    """Pins met only up to spelling or a local label (2.13.0 vs 2.13.0+cpu): worth a warning."""
    return [
        f"{n}: lock {v}, installed {have[n]} (equal under PEP 440)"
        for n, v in sorted(pins.items())
        if n in have and v != have[n] and same_version(v, have[n])
    ]


def run(opts: dict) -> dict:
    if not opts["lock"]:
        return result("error", "option 'lock' (path of the cell's lock file) is required")
    ignore = {canonical(name) for name in opts["ignore"]}
    pins = {n: v for n, v in read_lock(opts["lock"]).items() if n not in ignore}
    found, twice = installed()
    have = {n: v for n, v in found.items() if n not in ignore}
    details = {"locked": len(pins), "installed": len(have), **compare(pins, have)}
    warnings = twice + respelled(pins, have)
    problems = [f"{len(details[k])} {k}" for k in ("missing", "extra", "mismatched") if details[k]]
    if problems:
        reason = f"installed set differs from the lock: {', '.join(problems)}"
        return result("fail", reason, details, "", warnings)
    reason = f"all {len(pins)} locked distributions installed as locked"
    return result("pass", reason, details, "", warnings)


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
