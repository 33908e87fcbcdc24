"""Results as data: the status enum, the frozen record of each step of a cell (lock, check,
build, probes, cache), the `CellResult` that gathers them, and the JSON Schema their
serialisation (report.json, cache entries) must meet. Plumbing: it imports no stage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

MAX_DEPTH = 100  # levels of JSON nesting; a report needs about 10
CELL_DEPTH = 2  # a cell sits at $.cells[i]
_SCHEMA = Path(__file__).resolve().parent / "data" / "report.schema.json"


class Status(str, Enum):
    """The verdict of a probe or a cell; a str, so JSON and comparisons see the plain word."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


STATUSES = tuple(s.value for s in Status)


def summarize(cells: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """report.json's summary: how many cells, and how many of each status."""
    statuses = [c["status"] for c in cells]
    return {"total": len(statuses), **{s: statuses.count(s) for s in STATUSES}}


# ---------------------------------------------------------------- the records of one cell


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """One probe's outcome: an entry of a cell's `probes`."""

    probe: str
    status: Status
    reason: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    evidence: str = ""
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "status": Status(self.status).value,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProbeResult:
        return cls(
            **{**data, "status": Status(data["status"]), "warnings": tuple(data["warnings"])}
        )


OPTIONAL_BUILD_KEYS = ("cell_id", "lock_sha256")  # the schema lets a build record leave them out


@dataclass(frozen=True, kw_only=True)
class BuildRecord:
    """What one cell's build (or venv set-up) left: the report's build section."""

    cell_id: str
    tag: str
    ok: bool
    seconds: float
    image_id: str | None = None
    size: int | None = None
    digest: str | None = None
    log: str | None = None
    log_tail: str = ""
    cached_steps: int = 0
    total_steps: int = 0
    lock_sha256: str | None = None
    error: str | None = None
    # optional keys a stored record lacked, so that it reads back exactly as it was written
    omitted: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("omitted", *self.omitted):
            del data[key]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BuildRecord:
        omitted = tuple(k for k in OPTIONAL_BUILD_KEYS if k not in data)
        return cls(**{"cell_id": "", **data, "omitted": omitted})


@dataclass(frozen=True, kw_only=True)
class LockPart:
    """The lock a cell was held to: the report's lock section."""

    path: str
    sha256: str | None
    preinstalled: str
    packages: dict[str, str]
    diff: dict[str, Any] | None = None  # what locking on the fly changed; None when not locked

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckPart:
    """The static check of one cell (its findings as JSON): the report's check section."""

    id: str
    findings: tuple[Mapping[str, Any], ...] = ()

    @property
    def errors(self) -> list[Mapping[str, Any]]:
        return [f for f in self.findings if f["severity"] == "error"]

    def to_json(self) -> dict[str, Any]:
        status = Status.FAIL if self.errors else Status.PASS
        return {"id": self.id, "status": status.value, "findings": [dict(f) for f in self.findings]}


@dataclass(frozen=True, kw_only=True)
class CachePart:
    """The result cache's part: a hit means the verdict was reused, stored at `stored`."""

    hit: bool = False
    key: str = ""
    stored: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """What a cell came to, and the build and probes behind it: what a cache hit brings back."""

    status: Status
    reason: str
    build: BuildRecord | None = None
    probes: tuple[ProbeResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "status": Status(self.status).value,
            "reason": self.reason,
            "build": self.build.to_json() if self.build else None,
            "probes": [p.to_json() for p in self.probes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        build = BuildRecord.from_json(data["build"]) if data["build"] is not None else None
        probes = tuple(ProbeResult.from_json(p) for p in data["probes"])
        return cls(Status(data["status"]), data["reason"], build, probes)


@dataclass(frozen=True, kw_only=True)
class CellResult:
    """Everything found about one cell: its entry in report.json's `cells`."""

    cell: Mapping[str, Any]  # the cell's own facts (id, base, axes, pins...), Cell.to_json()
    lock: LockPart
    verdict: Verdict
    check: CheckPart | None = None
    cache: CachePart = CachePart()
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **self.cell,
            **self.verdict.to_json(),
            "seconds": self.seconds,
            "cache": self.cache.to_json(),
            "lock": self.lock.to_json(),
            "check": self.check.to_json() if self.check else None,
        }


def cell_status(probes: Sequence[ProbeResult]) -> tuple[Status, str]:
    """A cell's status and reason from its probes: any fail, else any error, else pass
    (skipped when every probe skipped)."""
    for status in (Status.FAIL, Status.ERROR):
        bad = [p for p in probes if p.status == status]
        if bad:
            return status, "; ".join(f"{p.probe}: {p.reason}" for p in bad)
    if probes and all(p.status == Status.SKIPPED for p in probes):
        return Status.SKIPPED, "every probe skipped"
    summary = ", ".join(f"{p.probe} {p.status}" for p in probes)
    return Status.PASS, f"{len(probes)} probes: {summary}"


# ---------------------------------------------------------------- the schema of their JSON


def report_schema() -> dict[str, Any]:
    """The JSON Schema of report.json (draft 2020-12)."""
    schema: dict[str, Any] = json.loads(_SCHEMA.read_text())
    return schema


def cell_record_problem(data: object) -> str | None:
    """The first way `data` is not a report cell, as `$.field: message`; None when it is one.
    For cell records that come back from elsewhere (the result cache)."""
    problems = schema_problems(data, "cell", depth=CELL_DEPTH)
    return problems[0] if problems else None


def schema_problems(data: object, definition: str = "", depth: int = 0) -> list[str]:
    """Where `data` breaks the report schema (or its `$defs/<definition>`), in document order,
    as `$.field: message`. `depth` is how deep in a report `data` sits."""
    deep = _too_deep(data, depth)
    if deep is not None:
        return [f"{_short(deep)}: nested too deeply (more than {MAX_DEPTH} levels)"]
    # best_match looks inside oneOf (`lock: object | null`) for the error that names the field.
    errors = [best_match([e]) for e in _validator(definition).iter_errors(data)]
    return [f"{e.json_path}: {_message(e)}" for e in sorted(errors, key=_position)]


def _validator(definition: str) -> jsonschema.Draft202012Validator:
    schema = report_schema()
    if definition:
        schema = {k: schema[k] for k in ("$schema", "$defs")} | {"$ref": f"#/$defs/{definition}"}
    formats = jsonschema.FormatChecker(formats=())
    formats.checks("date-time", raises=ValueError)(_is_date_time)
    return jsonschema.Draft202012Validator(schema, format_checker=formats)


def _is_date_time(value: object) -> bool:
    """The pattern gives the shape; this catches dates that do not exist (month 99)."""
    return not isinstance(value, str) or bool(parse_time(value))


def parse_time(text: str) -> datetime:
    """ISO-8601 as the schema's pattern has it. Python 3.10's fromisoformat takes neither `Z`
    nor fractions of other than 3 or 6 digits, so those are spelled out first."""
    text = re.sub(r"Z$", "+00:00", text)
    text = re.sub(r"\.(\d+)", lambda m: "." + m[1][:6].ljust(6, "0"), text)
    return datetime.fromisoformat(text)


def _too_deep(data: object, depth: int) -> str | None:
    """The JSON path of a value nested over MAX_DEPTH levels, if any. Iterative: copying,
    validating and rendering recurse, so a deeper document must not get that far."""
    stack = [(data, "$", depth)]
    while stack:
        value, where, level = stack.pop()
        if level > MAX_DEPTH:
            return where
        if isinstance(value, dict):
            stack.extend((v, f"{where}.{k}", level + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]", level + 1) for i, v in enumerate(value))
    return None


def _position(error: jsonschema.ValidationError) -> list[str]:
    return [f"{p:08d}" if isinstance(p, int) else p for p in error.absolute_path]


def _message(error: jsonschema.ValidationError) -> str:
    cause = f" ({error.cause})" if error.cause else ""
    return _short(error.message + cause)


def _short(message: str) -> str:
    return message if len(message) <= 200 else message[:197] + "..."
