"""What every probe in validate/ shares: options, the result record, output and exit codes.

Standard library only. A probe loads this file by path, next to its own, never through sys.path
(there validate/numpy.py would shadow the real numpy), and keeps only PROBE, DEFAULTS and
`run(options)`. Run inside an image as

    python -I validate/<probe>.py OPTIONS_JSON      # "-" or no argument: options on stdin

a probe prints exactly one JSON line on stdout (what the probed libraries print goes to stderr):
{"probe", "status": "pass" | "fail" | "error" | "skipped", "reason", "details", "evidence",
"warnings"}, and exits 0 for pass and skipped, 1 for fail, 2 for error. Below the runner are the
parsers that more than one probe needs: lock pins and a PEP 440 subset for images without
packaging.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback

EXIT_CODES = {"pass": 0, "skipped": 0, "fail": 1, "error": 2}


def results_for(probe: str):
    """The probe's `result(status, reason, details, evidence, warnings)`: its answer record."""

    def result(status, reason, details=None, evidence="", warnings=()) -> dict:
        return {
            "probe": probe,
            "status": status,
            "reason": reason.splitlines()[0][:300] if reason else "",
            "details": details or {},
            "evidence": evidence[-2000:],
            "warnings": list(warnings),
        }

    return result


def load_options(argv: list[str], defaults: dict) -> dict:
    """Options from the JSON file named by argv[1]; stdin when it is absent or "-"."""
    source = argv[1] if len(argv) > 1 else "-"
    if source != "-":
        with open(source, encoding="utf-8") as f:
            text = f.read()
    else:
        text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    return {**defaults, **json.loads(text or "{}")}


def answer(probe: str, defaults: dict, run, argv: list[str]) -> dict:
    """The probe's result for argv's options; a crash, SystemExit too, is an `error`."""
    try:
        return run(load_options(argv, defaults))
    except (Exception, SystemExit) as exc:
        why = f"probe raised {type(exc).__name__}: {exc}"
        return results_for(probe)("error", why, None, traceback.format_exc())


def json_line(probe: str, res: dict) -> str:
    """The result as one line of strict JSON, or an `error` saying why it cannot be."""
    try:
        return json.dumps(res, allow_nan=False)
    except (TypeError, ValueError) as exc:  # NaN, Infinity or an object: not JSON
        return json.dumps(results_for(probe)("error", f"the result is not JSON: {exc}"))


def main(probe: str, defaults: dict, run) -> None:
    """Run a probe as a script: one JSON line on the real stdout, then exit at once."""
    here = os.path.dirname(os.path.abspath(__file__))
    # Without -I the script's folder leads sys.path, and validate/numpy.py would shadow numpy.
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever the probed libraries print to fd 1 goes to stderr
    line = json_line(probe, answer(probe, defaults, run, sys.argv))
    out.write(line + "\n")
    out.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: some CUDA/ML libraries crash or hang in it.
    os._exit(EXIT_CODES.get(json.loads(line)["status"], 2))


# --- parsers more than one probe needs ---------------------------------------------------------

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
    """(does version satisfy spec, which implementation judged it: packaging, else stdlib)."""
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:
        return spec_ok(version, spec), "stdlib"
    return SpecifierSet(spec).contains(version, prereleases=True), "packaging"


def last_line(text: str) -> str:
    """The last non-blank line of a text (an error's message), cut to 200 characters."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else ""
