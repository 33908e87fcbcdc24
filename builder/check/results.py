"""What `check` finds: findings, a report per cell, and the text and JSON renderings of them."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from builder.profiles import SEVERITIES  # the levels a known_bad row may name, most severe first

__all__ = [
    "SEVERITIES",
    "CellReport",
    "Change",
    "Finding",
    "Fix",
    "error",
    "render_json",
    "render_text",
]


@dataclass(frozen=True, kw_only=True)
class Change:
    """One requirement a fix sets: `package` with `specifier` (`==4.51.3`, `>=4.49.0,<4.52`,
    or "" for any version), replacing the cell's line or axis pin for it, or added."""

    package: str
    specifier: str
    extras: tuple[str, ...] = ()  # kept from the profile rule that asks for them

    @property
    def line(self) -> str:
        """The line to paste into the requirements (or, as its specifier, the axis)."""
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        return f"{self.package}{extras}{self.specifier}"

    def to_json(self) -> dict[str, object]:
        extras = {"extras": list(self.extras)} if self.extras else {}
        return {"package": self.package, "specifier": self.specifier, **extras}


Fix = tuple[Change, ...]  # the changes of one fix, applied together


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One thing `check` found about a cell. `candidates` are the fixes its rule suggests,
    untried; `fix` is the one `check` offers, after re-checking the cell with it applied
    (builder/check/fixes.py)."""

    severity: str  # error | warning | info
    code: str  # stable: see the table in builder/data/profiles/README.md
    package: str | None
    message: str
    hint: str
    source: str  # the rule's source: a profile rule, known_issues.yaml, or matrix.yaml:LINE
    fix: Fix | None = None
    candidates: tuple[Fix, ...] = ()  # never serialised: only re-checked fixes are offered

    def to_json(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "code": self.code,
            "package": self.package,
            "message": self.message,
            "hint": self.hint,
            "source": self.source,
            "fix": _fix_json(self.fix),
        }


def _fix_json(fix: Fix | None) -> object:
    """null, one `{package, specifier}`, or a list of them for a joint fix."""
    if not fix:
        return None
    return fix[0].to_json() if len(fix) == 1 else [c.to_json() for c in fix]


def error(
    code: str,
    package: str | None,
    message: str,
    hint: str,
    source: str,
    candidates: tuple[Fix, ...] = (),
) -> Finding:
    return Finding(
        severity="error",
        code=code,
        package=package,
        message=message,
        hint=hint,
        source=source,
        candidates=candidates,
    )


@dataclass(frozen=True, kw_only=True)
class CellReport:
    """The findings of one cell; it fails when any is an error."""

    id: str
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "status": "pass" if self.ok else "fail",
            "findings": [f.to_json() for f in self.findings],
        }


def render_json(reports: Sequence[CellReport]) -> str:
    return json.dumps({"cells": [r.to_json() for r in reports]}, indent=2)


def render_text(reports: Sequence[CellReport]) -> str:
    """For people: a line per cell, then each finding with its hint and source."""
    lines: list[str] = []
    for report in reports:
        counts = Counter(f.severity for f in report.findings)
        tally = ", ".join(
            f"{counts[s]} {s}{'s' * (counts[s] > 1)}" for s in SEVERITIES if counts[s]
        )
        lines.append(
            f"{'ok  ' if report.ok else 'FAIL'} {report.id}" + (f"  ({tally})" if tally else "")
        )
        for f in report.findings:
            lines.append(f"  {f.severity:<7} {f.code}: {f.message}")
            lines += [f"          hint: {f.hint}"] if f.hint else []
            lines += _fix_lines(f.fix)
            lines.append(f"          source: {f.source}")
    failed = sum(not r.ok for r in reports)
    lines.append(f"{len(reports)} cell(s) checked: {failed} failed, {len(reports) - failed} passed")
    return "\n".join(lines)


def _fix_lines(fix: Fix | None) -> list[str]:
    """`fix: LINE`, one requirement line each, ready to paste (a joint fix has several)."""
    return [f"          {'fix:' if i == 0 else '    '} {c.line}" for i, c in enumerate(fix or ())]
