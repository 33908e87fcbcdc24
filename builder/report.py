"""Compatibility reports: report.json (schema version 1) and everything rendered from it.

`builder validate` writes the JSON; this module loads it (validated against
`builder/data/report.schema.json`), renders it as Markdown (pull-request comment, job summary),
one self-contained HTML page (the published report), JUnit XML (CI test views) or normalized
JSON, diffs two runs, and merges the per-cell reports of fan-out jobs.
"""

from __future__ import annotations

import copy
import html
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from builder.errors import CELLS_FAILED, OK, InputError
from builder.files import read_text
from builder.log import Log
from builder.records import MAX_DEPTH, STATUSES, parse_time, schema_problems, summarize
from builder.records import report_schema as report_schema  # tests read it here
from builder.resources import SERVE_PROBE

Report = dict[str, Any]

SCHEMA_VERSION = 1
FAILED = ("fail", "error")
MARKS = {"pass": "✅", "fail": "❌", "error": "💥", "skipped": "⏭️"}
CACHED_MARK = "♻️"
ABSENT_MARK = "—"
MAX_COLUMNS = 10  # Markdown grid columns per table: wider matrices wrap into more tables
MAX_MARKDOWN = 65_000  # GitHub caps comments and job summaries near 65,536 characters
MAX_LINE = 240

_DATA = Path(__file__).resolve().parent
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BUILDKIT_PREFIX = re.compile(r"^#\d+ (?:\d+\.\d+ )?")
_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt)(?::|$)")
_ERROR_LINE = re.compile(r"\b(?:ERROR|FATAL|error|fatal)\b:")
_GENERIC_ERROR = re.compile(r"did not complete successfully|^ERROR: failed to solve")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_PIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


# ---------------------------------------------------------------- loading


def load_report(path: Path) -> Report:
    """Read and validate a report; InputError names the file and the JSON path of a problem."""
    text = read_text(path, "report")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels)") from None
    return parse_report(data, str(path))


def parse_report(data: Any, source: str) -> Report:
    """Check `data` against the schema; return it normalized (summary recomputed)."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version != SCHEMA_VERSION:
        raise InputError(
            f"{source}: $.schema_version: unsupported version {version} "
            f"(this builder reads {SCHEMA_VERSION})",
            hint="upgrade builder to read newer reports",
        )
    problems = schema_problems(data) or _duplicate_ids(data["cells"])
    if problems:
        lines = [f"{source}: {problem}" for problem in problems[:20]]
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise InputError("\n".join(lines) + more, hint="`builder validate` writes valid reports")
    return normalize(data)


def _duplicate_ids(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    """A cell id may appear once per report (`--merge` is where duplicates are resolved)."""
    first: dict[str, int] = {}
    problems = []
    for i, cell in enumerate(cells):
        earlier = first.setdefault(cell["id"], i)
        if earlier != i:
            problems.append(
                f"$.cells[{i}].id: {cell['id']!r} is already the id of $.cells[{earlier}]"
            )
    return problems


def normalize(report: Report) -> Report:
    """A copy with the summary recomputed from the cells (the cells are the truth)."""
    out = copy.deepcopy(report)
    out["summary"] = summarize(out["cells"])
    return out


# ---------------------------------------------------------------- facts every format shows


def evidence_line(text: str) -> str:
    """The one most telling line: the last exception line, else the first specific error
    line, else the last non-empty line (BuildKit step prefixes and colours removed)."""
    lines = [_BUILDKIT_PREFIX.sub("", _ANSI.sub("", line)).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    exceptions = [line for line in lines if _EXCEPTION.match(line)]
    errors = [
        line for line in lines if _ERROR_LINE.search(line) and not _GENERIC_ERROR.search(line)
    ]
    chosen = (exceptions[-1:] or errors[:1] or lines[-1:] or [""])[0]
    return chosen if len(chosen) <= MAX_LINE else chosen[: MAX_LINE - 1] + "…"


def failing_probes(cell: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [p for p in cell["probes"] if p["status"] in FAILED]


def cell_evidence(cell: Mapping[str, Any]) -> str:
    """The line that explains why a cell failed: its first failing probe, build or check."""
    for probe in failing_probes(cell):
        return evidence_line(probe["evidence"]) or probe["reason"]
    build = cell["build"]
    if build and not build["ok"]:
        return evidence_line(build["log_tail"]) or (build["error"] or "")
    check = cell["check"]
    errors = [f for f in (check or {}).get("findings", []) if f["severity"] == "error"]
    return errors[0]["message"] if errors else evidence_line(cell["reason"])


def serve_result(cell: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The cell's serve probe, where it ran."""
    return next((p for p in cell["probes"] if p["probe"] == SERVE_PROBE), None)


def time_to_ready(cell: Mapping[str, Any]) -> float | None:
    """Seconds from the serve probe's start to its first good answer, where it had one."""
    value = (serve_result(cell) or {}).get("details", {}).get("time_to_ready_s")
    return float(value) if isinstance(value, (int, float)) else None


FLEET_MARKS = {"pass": "✓", "warn": "~", "fail": "✗", "unknown": "?"}
FLEET_CODES = ("fleet-arch", "fleet-ptx-jit", "fleet-driver")


def fleet_of(cell: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The cuda probe's fleet verdict (validate/cuda.py), where the probe ran."""
    probe = next((p for p in cell["probes"] if p["probe"] == "cuda"), None)
    fleet = (probe or {}).get("details", {}).get("fleet")
    return fleet if isinstance(fleet, Mapping) else None


def fleet_grid(fleet: Mapping[str, Any]) -> list[dict[str, str]]:
    """GPU down the side: each fleet GPU's worst verdict over torch and every CUDA extension,
    with the reason of that verdict."""
    rows = []
    for gpu in fleet.get("gpus", []):
        verdicts = [gpu] + [
            g for e in fleet.get("extensions", []) for g in e["gpus"] if g["gpu"] == gpu["gpu"]
        ]
        worst = max(verdicts, key=lambda g: list(FLEET_MARKS).index(g["status"]))
        rows.append(
            {
                "gpu": gpu["gpu"],
                "sm": gpu["sm"],
                "label": gpu.get("label") or gpu["gpu"],
                "status": worst["status"],
                "mark": FLEET_MARKS[worst["status"]],
                "reason": worst["reason"],
            }
        )
    return rows


def fleet_line(cell: Mapping[str, Any]) -> str | None:
    """`fleet: rtx4090 ✓ h100 ✓ rtx5090 ✗ (sm_120 not in torch 2.4.1+cu121)`; for a cell the
    check stopped before its probes, the fleet findings; None for a cell with no fleet."""
    fleet = fleet_of(cell)
    if fleet is None or not (fleet.get("declared") or fleet_grid(fleet)):
        found = [f["code"] for f in (cell["check"] or {}).get("findings", [])]
        codes = [c for c in FLEET_CODES if c in found]
        if not codes:
            return None
        counts = ", ".join(f"{c} ×{found.count(c)}" if found.count(c) > 1 else c for c in codes)
        return f"fleet: see the check findings ({counts})"
    if not fleet.get("applicable"):
        return str(fleet.get("verdict") or "fleet: not applicable (CPU build)")
    parts = [
        f"{r['gpu']} {r['mark']}" + (f" ({r['reason']})" if r["status"] != "pass" else "")
        for r in fleet_grid(fleet)
    ]
    driver = fleet.get("driver")
    if driver and driver["status"] != "pass":
        parts.append(f"driver {FLEET_MARKS[driver['status']]} ({driver['reason']})")
    return "fleet: " + (" ".join(parts) or "no GPUs named")


def mark(cell: Mapping[str, Any]) -> str:
    return MARKS[cell["status"]] + (CACHED_MARK if cell["cache"]["hit"] else "")


def pin_set(cell: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A grid column: the cell's axes minus `base`, in matrix order. JSON objects lose their
    order when keys are sorted, so the order comes from `pins`, which is a list."""
    order = [m[0] for m in map(_PIN_NAME.match, cell["pins"]) if m]
    axes = [(k, v) for k, v in cell["axes"].items() if k != "base"]
    return tuple(sorted(axes, key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def torch_version(cell: Mapping[str, Any]) -> str:
    axes, lock = cell["axes"], cell["lock"]
    return str(axes.get("torch") or (lock or {}).get("packages", {}).get("torch") or "")


@dataclass(frozen=True)
class Grid:
    """Bases down, pin sets across; `cells[(base, pin set)]` is the cell there, if any."""

    bases: tuple[str, ...]
    columns: tuple[tuple[tuple[str, str], ...], ...]
    cells: Mapping[tuple[str, tuple[tuple[str, str], ...]], Mapping[str, Any]]
    axes: tuple[str, ...]

    def at(self, base: str, column: tuple[tuple[str, str], ...]) -> Mapping[str, Any] | None:
        return self.cells.get((base, column))

    def varying(self) -> tuple[str, ...]:
        """The axes whose value differs between columns (all of them for a single column)."""
        values = {axis: {dict(column).get(axis) for column in self.columns} for axis in self.axes}
        varying = tuple(axis for axis in self.axes if len(values[axis]) > 1)
        return varying or self.axes


def grid(report: Report) -> Grid:
    cells = {(c["base"], pin_set(c)): c for c in report["cells"]}
    bases = tuple(dict.fromkeys(base for base, _ in cells))
    columns = tuple(dict.fromkeys(column for _, column in cells))
    axes = tuple(dict.fromkeys(k for column in columns for k, _ in column))
    return Grid(bases, columns, cells, axes)


def human_size(size: int | None) -> str:
    """Bytes in decimal units, the way `docker images` shows them."""
    if size is None:
        return ABSENT_MARK
    units, value, step = ("B", "kB", "MB", "GB", "TB"), float(size), 0
    while value >= 1000 and step < len(units) - 1:
        value, step = value / 1000, step + 1
    return f"{size} B" if step == 0 else f"{value:.1f} {units[step]}"


def human_seconds(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"


def human_ready(seconds: float | None) -> str:
    """A time to ready: to the hundredth under a second (a small server starts in 0.1 s)."""
    if seconds is None:
        return ABSENT_MARK
    return f"{seconds:.2f}s" if seconds < 1 else human_seconds(seconds)


# ---------------------------------------------------------------- secrets

# Build logs and probe output can echo credentials (pip prints index URLs, curl -v prints
# headers); every rendered format masks them. The JSON on disk is left as `validate` wrote it.
_SECRETS = (
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@]+@"), r"\1***@"),  # URL user info
    (re.compile(r"(?im)\b((?:proxy-)?authorization:[ \t]*)[^\r\n]+"), r"\1***"),
    (re.compile(r"(?i)\b(\w*(?:token|password|passwd|secret|api_?key)=)[^\s&\"']+"), r"\1***"),
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}"), "hf_***"),  # Hugging Face access tokens
)


def redact(text: str) -> str:
    """`text` with URL credentials, Authorization headers and `token=...` values masked."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def redacted(value: Any) -> Any:
    """A copy of a report (or any JSON value) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


# ---------------------------------------------------------------- templates


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_DATA / "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=autoescape,
    )
    env.filters.update(
        md=md_text, code=md_code, size=human_size, duration=human_seconds, ready=human_ready
    )
    env.globals.update(marks=MARKS, cached_mark=CACHED_MARK)
    return env


def md_text(value: object) -> str:
    """Plain text that Markdown (GitHub flavour) shows as it is, on one line."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(value: object) -> str:
    """An inline code span that survives any backticks in the text."""
    text = " ".join(str(value).split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# ---------------------------------------------------------------- Markdown


def render_markdown(report: Report) -> str:
    """The pull-request comment and job summary: grid, failures with evidence, lock diffs."""
    report = redacted(report)
    g = grid(report)
    view = {
        "run": report["run"],
        "summary": report["summary"],
        "cached": sum(c["cache"]["hit"] for c in report["cells"]),
        "tables": _grid_tables(g),
        "legend": _legend(g),
        "failures": [_failure(c) for c in report["cells"] if c["status"] in FAILED],
        "serving": [_serving(c, p) for c in report["cells"] if (p := serve_result(c))],
        "fleets": [
            {"id": c["id"], "line": line} for c in report["cells"] if (line := fleet_line(c))
        ],
        "diffs": [_lock_diff(c) for c in report["cells"] if _has_lock_diff(c)],
    }
    text = _environment(autoescape=False).get_template("report.md.j2").render(**view)
    return _cap(text)


def _grid_tables(g: Grid) -> list[dict[str, Any]]:
    """The grid, wrapped every MAX_COLUMNS pin sets so it stays narrow."""
    tables = []
    for start in range(0, len(g.columns), MAX_COLUMNS):
        columns = g.columns[start : start + MAX_COLUMNS]
        rows = [
            {"base": base, "marks": [_grid_mark(g.at(base, column)) for column in columns]}
            for base in g.bases
        ]
        labels = [str(start + i + 1) for i in range(len(columns))]
        tables.append({"labels": labels, "rows": rows})
    return tables


def _grid_mark(cell: Mapping[str, Any] | None) -> str:
    return mark(cell) if cell else ABSENT_MARK


def _legend(g: Grid) -> dict[str, Any]:
    rows = [
        {"label": str(i + 1), "values": [dict(column).get(axis, "") for axis in g.axes]}
        for i, column in enumerate(g.columns)
    ]
    return {"axes": list(g.axes), "rows": rows}


def _failure(cell: Mapping[str, Any]) -> dict[str, str]:
    return {
        "id": cell["id"],
        "mark": mark(cell),
        "reason": cell["reason"] or cell["status"],
        "evidence": cell_evidence(cell),
    }


def _serving(cell: Mapping[str, Any], probe: Mapping[str, Any]) -> dict[str, Any]:
    """A row of the time-to-ready table: the serve probe's status, time and answer size."""
    return {
        "id": cell["id"],
        "mark": MARKS[probe["status"]],
        "mode": probe["details"].get("mode", ""),
        "ready": time_to_ready(cell),
        "bytes": probe["details"].get("response_bytes"),
    }


def _has_lock_diff(cell: Mapping[str, Any]) -> bool:
    diff = (cell["lock"] or {}).get("diff")
    return bool(diff and (diff["added"] or diff["removed"] or diff["changed"]))


def _lock_diff(cell: Mapping[str, Any]) -> dict[str, Any]:
    diff = cell["lock"]["diff"]
    rows = (
        [(d["name"], "", d["version"]) for d in diff["added"]]
        + [(d["name"], d["version"], "") for d in diff["removed"]]
        + [(d["name"], d["old"], d["new"]) for d in diff["changed"]]
    )
    counts = f"+{len(diff['added'])} −{len(diff['removed'])} ~{len(diff['changed'])}"
    return {"id": cell["id"], "counts": counts, "rows": sorted(rows)}


def _cap(text: str) -> str:
    if len(text) <= MAX_MARKDOWN:
        return text
    cut = text.rfind("\n", 0, MAX_MARKDOWN - 200)
    return text[:cut] + "\n\n_… cut to fit GitHub's size limit; the HTML report has everything._\n"


# ---------------------------------------------------------------- HTML


def render_html(report: Report) -> str:
    """One static, self-contained page: no CDN, fonts or scripts from elsewhere."""
    report = redacted(report)
    g = grid(report)
    cells = [_html_cell(c) for c in report["cells"]]
    by_id = {c["id"]: c for c in cells}
    rows = [
        {
            "base": base,
            "cells": [by_id[c["id"]] if (c := g.at(base, col)) else None for col in g.columns],
        }
        for base in g.bases
    ]
    view = {
        "run": report["run"],
        "summary": report["summary"],
        "builder_version": report["builder_version"],
        "columns": [_html_column(column, g.varying()) for column in g.columns],
        "shared": [(k, v) for k, v in (g.columns[0] if g.columns else ()) if k not in g.varying()],
        "rows": rows,
        "cells": cells,
        "filters": {
            "base": list(g.bases),
            "torch": sorted({c["torch"] for c in cells} - {""}),
            "cuda": sorted({c["cuda_label"] for c in cells}),
            "status": list(STATUSES),
        },
    }
    return _environment(autoescape=True).get_template("report.html.j2").render(**view)


def _html_column(column: tuple[tuple[str, str], ...], varying: Sequence[str]) -> dict[str, Any]:
    """A grid header shows the axes that vary; its title (tooltip) has them all."""
    return {
        "pins": [(k, v) for k, v in column if k in varying],
        "title": " · ".join(f"{name} {value}" for name, value in column),
    }


def _html_cell(cell: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **cell,
        "torch": torch_version(cell),
        "cuda_label": cell["cuda"] or "cpu",
        "mark": mark(cell),
        "evidence_line": cell_evidence(cell) if cell["status"] in FAILED else "",
        "time_to_ready": time_to_ready(cell),
        "fleet": fleet_of(cell) if fleet_line(cell) else None,
        "fleet_grid": fleet_grid(fleet_of(cell) or {}),
        "fleet_line": fleet_line(cell),
        "probes": [
            {**p, "details_json": json.dumps(p["details"], indent=2)} for p in cell["probes"]
        ],
    }


# ---------------------------------------------------------------- JUnit XML


def render_junit(report: Report) -> str:
    """One testcase per cell and probe (classname = cell id); a failed build or check is a
    testcase of its own, and a cell with neither probes nor stages gets one named `build`."""
    report = redacted(report)
    suites = ET.Element("testsuites", name="builder", time=f"{report['run']['seconds']:.3f}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for cell in report["cells"]:
        suite = ET.SubElement(suites, "testsuite", name=cell["id"], time=f"{cell['seconds']:.3f}")
        cases = junit_cases(cell)
        for name, status, reason, evidence, seconds in cases:
            case = _testcase(suite, cell["id"], name, status, reason, evidence, seconds)
            if name == SERVE_PROBE:
                _serve_properties(case, cell)
        counts = _junit_counts(case[1] for case in cases)
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        suites.set(key, str(value))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, "unicode") + "\n"


JunitCase = tuple[str, str, str, str, float]  # name, status, reason, evidence, seconds


def junit_cases(cell: Mapping[str, Any]) -> list[JunitCase]:
    cases: list[JunitCase] = []
    check, build = cell["check"], cell["build"]
    if check and check["status"] == "fail":
        errors = [
            f"{f['code']}: {f['message']}" for f in check["findings"] if f["severity"] == "error"
        ]
        cases.append(("check", "fail", "; ".join(errors) or cell["reason"], "\n".join(errors), 0.0))
    if build and not build["ok"]:
        reason = build["error"] or cell["reason"]
        cases.append(("build", cell["status"], reason, build["log_tail"], build["seconds"]))
    for p in cell["probes"]:
        cases.append((p["probe"], p["status"], p["reason"], p["evidence"], p["seconds"]))
    if not cases:
        cases.append(("build", cell["status"], cell["reason"], "", cell["seconds"]))
    return cases


def _testcase(
    suite: ET.Element,
    classname: str,
    name: str,
    status: str,
    reason: str,
    evidence: str,
    seconds: float,
) -> ET.Element:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=f"{seconds:.3f}")
    tag = {"fail": "failure", "error": "error", "skipped": "skipped"}.get(status)
    if tag is None:
        return case
    child = ET.SubElement(case, tag, message=_xml_text(reason))
    if status in FAILED:
        child.set("type", status)
        child.text = _xml_text(evidence)
    return case


def _serve_properties(case: ET.Element, cell: Mapping[str, Any]) -> None:
    """The serve probe's time to ready and answer size, as the testcase's properties (first,
    where pytest puts them), for CI views that chart them."""
    details = (serve_result(cell) or {}).get("details", {})
    properties = ET.Element("properties")
    for key in ("time_to_ready_s", "response_bytes"):
        if details.get(key) is not None:
            ET.SubElement(properties, "property", name=key, value=str(details[key]))
    if len(properties):
        case.insert(0, properties)


def _junit_counts(statuses: Iterable[str]) -> dict[str, int]:
    listed = list(statuses)
    return {
        "tests": len(listed),
        "failures": listed.count("fail"),
        "errors": listed.count("error"),
        "skipped": listed.count("skipped"),
    }


def _xml_text(text: str) -> str:
    """XML 1.0 cannot hold most control characters (ANSI colours in logs): drop them."""
    return _XML_INVALID.sub("", _ANSI.sub("", text))


# ---------------------------------------------------------------- JSON and dispatch


def render_json(report: Report) -> str:
    return json.dumps(redacted(report), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


RENDERERS = {"md": render_markdown, "html": render_html, "junit": render_junit, "json": render_json}


def render(report: Report, fmt: str) -> str:
    """Render a validated report as md, html, junit or json."""
    return RENDERERS[fmt](report)


# ---------------------------------------------------------------- diff of two runs


Change = tuple[str, str | None, str | None]  # name, before, after (None: absent)


@dataclass(frozen=True)
class CellChange:
    """How one cell differs between two runs."""

    id: str
    old: str | None  # status before; None: the cell is new
    new: str | None  # status now; None: the cell was removed
    probes: tuple[Change, ...] = ()
    pins: tuple[Change, ...] = ()
    reason: str = ""
    evidence: str = ""

    @property
    def regressed(self) -> bool:
        """Something that passed now fails: the cell, or one of its probes."""
        pairs = [(self.old, self.new), *((old, new) for _, old, new in self.probes)]
        return any(old == "pass" and new in FAILED for old, new in pairs)

    @property
    def kind(self) -> str:
        if self.regressed:
            return "regressed"
        if self.old is None or self.new is None:
            return "added" if self.old is None else "removed"
        if self.new in FAILED and self.old not in FAILED:
            return "new failure"
        if self.old in FAILED and self.new == "pass":
            return "fixed"
        return "changed" if self.old != self.new else "same status"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "old": self.old,
            "new": self.new,
            "regressed": self.regressed,
            "reason": self.reason,
            "evidence": self.evidence,
            "probes": [{"probe": n, "old": o, "new": v} for n, o, v in self.probes],
            "pins": [{"name": n, "old": o, "new": v} for n, o, v in self.pins],
        }


ORDER = ("regressed", "new failure", "changed", "fixed", "same status", "added", "removed")


@dataclass(frozen=True)
class ReportDiff:
    """Per-cell changes between an old and a new run, new failures first."""

    changes: tuple[CellChange, ...] = field(default_factory=tuple)

    @property
    def regressed(self) -> bool:
        return any(c.regressed for c in self.changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "regressed": self.regressed,
            "counts": {k: sum(c.kind == k for c in self.changes) for k in ORDER},
            "cells": [c.to_json() for c in self.changes],
        }


def diff_reports(old: Report, new: Report) -> ReportDiff:
    """What changed from `old` to `new`: statuses, probes, pins; cells added and removed."""
    before = {c["id"]: c for c in old["cells"]}
    after = {c["id"]: c for c in new["cells"]}
    ids = list(dict.fromkeys([*after, *before]))
    changes = [_cell_change(before.get(i), after.get(i)) for i in ids]
    kept = [c for c in changes if c.old != c.new or c.probes or c.pins]
    return ReportDiff(tuple(sorted(kept, key=lambda c: ORDER.index(c.kind))))


def _cell_change(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> CellChange:
    current = new or old
    assert current is not None
    failing = new is not None and new["status"] in FAILED
    return CellChange(
        id=current["id"],
        old=old["status"] if old else None,
        new=new["status"] if new else None,
        probes=_probe_changes(old, new) if old and new else (),
        pins=_pin_changes(old, new) if new else (),
        reason=new["reason"] if new else "",
        evidence=cell_evidence(new) if new and failing else "",
    )


def _probe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[Change, ...]:
    before = {p["probe"]: p["status"] for p in old["probes"]}
    after = {p["probe"]: p["status"] for p in new["probes"]}
    names = dict.fromkeys([*after, *before])
    return tuple((n, before.get(n), after.get(n)) for n in names if before.get(n) != after.get(n))


def _pin_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> tuple[Change, ...]:
    """From the two runs' lock packages; else from the new run's lock diff."""
    old_lock, new_lock = (old or {}).get("lock"), new["lock"]
    if old_lock and new_lock:
        a, b = old_lock["packages"], new_lock["packages"]
        return tuple(
            (n, a.get(n), b.get(n)) for n in sorted(a.keys() | b.keys()) if a.get(n) != b.get(n)
        )
    diff = (new_lock or {}).get("diff")
    if not diff or old is None:
        return ()
    changes = (
        [(d["name"], None, d["version"]) for d in diff["added"]]
        + [(d["name"], d["version"], None) for d in diff["removed"]]
        + [(d["name"], d["old"], d["new"]) for d in diff["changed"]]
    )
    return tuple(sorted(changes, key=lambda c: c[0]))


def render_diff(diff: ReportDiff, fmt: str) -> str:
    """The diff as Markdown (`md`) or JSON (`json`)."""
    if fmt == "json":
        return json.dumps(redacted(diff.to_json()), indent=2, sort_keys=True) + "\n"
    rows = [redacted(_diff_row(c)) for c in diff.changes]
    template = _environment(autoescape=False).get_template("diff.md.j2")
    return _cap(template.render(rows=rows, regressed=diff.regressed))


def _diff_row(change: CellChange) -> dict[str, Any]:
    def status(value: str | None) -> str:
        return f"{MARKS[value]} {value}" if value else ABSENT_MARK

    return {
        "id": change.id,
        "kind": change.kind,
        "old": status(change.old),
        "new": status(change.new),
        "probes": [f"{n}: {_short_status(o)} → {_short_status(v)}" for n, o, v in change.probes],
        "pins": [f"{n} {o or '∅'} → {v or '∅'}" for n, o, v in change.pins],
        "evidence": change.evidence,
    }


def _short_status(value: str | None) -> str:
    return MARKS[value] if value else ABSENT_MARK


# ---------------------------------------------------------------- merging fan-out parts


def merge_reports(parts: Sequence[tuple[str, Report]], log: Log) -> Report:
    """Concatenate the cells of per-cell reports; a later duplicate wins (with a warning).
    The run spans the parts: earliest start, latest finish; the rest comes from the first."""
    if not parts:
        raise InputError("--merge needs at least one report")
    cells: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    for source, report in parts:
        for cell in report["cells"]:
            if cell["id"] in cells:
                log.warn(f"{cell['id']}: in {origin[cell['id']]} and {source}; keeping {source}")
            cells[cell["id"]] = cell
            origin[cell["id"]] = source
    merged = copy.deepcopy(parts[0][1])
    merged["cells"] = copy.deepcopy(list(cells.values()))
    merged["run"] = _merged_run([r["run"] for _, r in parts])
    return normalize(merged)


def _merged_run(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    started = min((r["started"] for r in runs), key=parse_time)
    finished = max((r["finished"] for r in runs), key=parse_time)
    seconds = max(0.0, (parse_time(finished) - parse_time(started)).total_seconds())
    return {**runs[0], "started": started, "finished": finished, "seconds": round(seconds, 3)}


# ---------------------------------------------------------------- entry points


def append_step_summary(report: Report, target: Path | None) -> bool:
    """Append the Markdown to the job summary file ($GITHUB_STEP_SUMMARY, read into the
    settings), when there is one; say whether there was."""
    if target is None:
        return False
    text = render_markdown(report) + "\n"
    try:  # appended, not replaced: earlier steps of the job wrote theirs to the same file
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise InputError(
            f"{target}: cannot append the job summary: {exc.strerror or exc}",
            hint="GITHUB_STEP_SUMMARY must name a writable file",
        ) from None
    return True


def run_report(
    paths: Sequence[Path], *, fmt: str | None, merge: bool, old: Path | None, log: Log
) -> tuple[str, int]:
    """`builder report`: load (merging if asked), then render or diff. Returns (text, exit code)."""
    fmt = fmt or ("json" if merge else "md")
    if not merge and len(paths) != 1:
        raise InputError(
            f"expected one report, got {len(paths)}", hint="pass --merge to combine several"
        )
    if old is not None and fmt not in ("md", "json"):
        raise InputError(f"--diff prints md or json, not {fmt}")
    parts = [(str(p), load_report(p)) for p in paths]
    report = merge_reports(parts, log) if merge else parts[0][1]
    if old is None:
        return render(report, fmt), OK
    diff = diff_reports(load_report(old), report)
    return render_diff(diff, fmt), CELLS_FAILED if diff.regressed else OK
