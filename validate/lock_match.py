"""Probe ``lock-match``: the installed distributions are exactly the cell's lock.

Run inside the image as ``python -I validate/lock_match.py OPTIONS_JSON`` (see ``_runner.py``:
options, output, exit codes). Standard library only.

Compares importlib.metadata over this interpreter's sys.path with the lock's ``name==version``
pins, by canonical name, and reports what is missing, extra and at another version.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

PROBE = "lock-match"
DEFAULTS = {"lock": None, "ignore": ["pip", "setuptools", "wheel"]}
# The shared runner (options, output, exit codes), by path: never put validate/ on sys.path.
_RUNNER = importlib.util.spec_from_file_location("_runner", Path(__file__).with_name("_runner.py"))
runner = importlib.util.module_from_spec(_RUNNER)
_RUNNER.loader.exec_module(runner)
result = runner.results_for(PROBE)


def installed() -> tuple[dict[str, str], list[str]]:
    """({canonical name: version} of the first copy on sys.path, names installed twice)."""
    found: dict[str, str] = {}
    twice = []
    for dist in importlib.metadata.distributions():
        name = runner.canonical(dist.metadata["Name"] or "")
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
    ignore = {runner.canonical(name) for name in opts["ignore"]}
    pins = {n: v for n, v in runner.read_lock(opts["lock"]).items() if n not in ignore}
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


if __name__ == "__main__":
    runner.main(PROBE, DEFAULTS, run)
