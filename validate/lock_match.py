"""Probe ``lock-match``: the installed distributions are exactly the cell's lock.

Run inside the image as ``python -I validate/lock_match.py OPTIONS_JSON`` (see ``_runner.py``:
options, output, exit codes). Standard library only.

Compares importlib.metadata over this interpreter's sys.path with the lock's ``name==version``
pins, by canonical name, and reports what is missing, extra and at another version. With
``reused`` (the base's packages are reused), the pins marked ``# from base`` and every package in
``preinstalled`` must be what the base carries (a base tag that moved is drift, named), and what
only the base has is no extra.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import site
import sys
from pathlib import Path

PROBE = "lock-match"
DEFAULTS = {
    "lock": None,
    "ignore": ["pip", "setuptools", "wheel"],
    "reused": False,
    "preinstalled": {},
}
FROM_BASE = "# from base"
# The shared runner (options, output, exit codes), by path: never put validate/ on sys.path.
_RUNNER = importlib.util.spec_from_file_location("_runner", Path(__file__).with_name("_runner.py"))
runner = importlib.util.module_from_spec(_RUNNER)
_RUNNER.loader.exec_module(runner)
result = runner.results_for(PROBE)


def installed() -> tuple[dict[str, str], list[str], set[str]]:
    """({canonical name: version} of the first copy on sys.path, names installed twice,
    names whose first copy is the base's: in a site directory outside this venv)."""
    found: dict[str, str] = {}
    twice = []
    base_dirs = [Path(d) for d in site.getsitepackages() if not _inside(Path(d), sys.prefix)]
    in_base = set()
    for dist in importlib.metadata.distributions():
        name = runner.canonical(dist.metadata["Name"] or "")
        if name in found:
            twice.append(f"{name} {dist.version} is shadowed by {name} {found[name]}")
        elif name:
            found[name] = dist.version
            where = Path(str(dist.locate_file("")))
            if any(_inside(where, str(d)) for d in base_dirs):
                in_base.add(name)
    return found, twice, in_base


def _inside(path: Path, directory: str) -> bool:
    try:
        return path.resolve().is_relative_to(Path(directory).resolve())
    except OSError:
        return False


def from_base(path: str) -> set[str]:
    """The lock's pins noted ``# from base``: the reused base provides them."""
    names, current = set(), None
    with open(path, encoding="utf-8") as lock:
        for line in lock:
            match = runner.LOCK_LINE.match(line.strip())
            if match:
                current = runner.canonical(match.group(1))
            elif current and line.strip().startswith(FROM_BASE):
                names.add(current)
    return names


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


def named_drift(entry: dict, base: set[str]) -> str:
    """One mismatched or missing pin in words, saying when the base should have carried it."""
    name, locked = entry["name"], entry["locked"]
    if "installed" not in entry:
        return f"{name}: lock {locked}" + (", the base does not carry it" if name in base else "")
    where = "the base carries" if name in base else "installed"
    return f"{name}: lock {locked}, {where} {entry['installed']}"


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
    found, twice, in_base = installed()
    # every package the reused base is declared to carry is held to it, locked or not
    declared = {runner.canonical(n): v for n, v in opts["preinstalled"].items()}
    pins.update({n: v for n, v in declared.items() if n not in ignore and n not in pins})
    base = from_base(opts["lock"]) | declared.keys() if opts["reused"] else set()
    only_base = in_base - pins.keys() - ignore if opts["reused"] else set()
    have = {n: v for n, v in found.items() if n not in ignore and n not in only_base}
    details = {"locked": len(pins), "installed": len(have), **compare(pins, have)}
    if opts["reused"]:
        details.update(from_base=len(base), base_only=len(only_base))
    warnings = twice + respelled(pins, have)
    problems = [f"{len(details[k])} {k}" for k in ("missing", "extra", "mismatched") if details[k]]
    if problems:
        named = [named_drift(d, base) for d in details["mismatched"] + details["missing"]]
        reason = f"installed set differs from the lock: {', '.join(problems)}"
        reason += f" ({'; '.join(named[:3])})" if named else ""
        return result("fail", reason, details, "\n".join(named), warnings)
    reason = f"all {len(pins)} locked distributions installed as locked"
    return result("pass", reason, details, "", warnings)


if __name__ == "__main__":
    runner.main(PROBE, DEFAULTS, run)
