"""The text report, rendered from the JSON one: lines of at most 100 characters, at most three
locations per import, local files grouped by package, guessed mappings marked."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

WIDTH = 100
MAX_LOCATIONS = 3
_INDENT = "  "
_CONTINUED = " " * 6


def render_text(data: Mapping[str, Any]) -> str:
    python = data["python"]
    lines = [
        *_wrapped(f"scan of {data['path']} (python {python['target']}, {python['platform']})"),
        *_listed("entries", data["entries"], count=False),
        *_listed("local packages", [_package(p) for p in data["local"]]),
        *_files(data["files"]),
        *_listed("standard library", data["stdlib"]),
    ]
    lines += _third_party(data["third_party"])
    lines += _section("missing local modules", [_missing(m) for m in data["missing_local"]])
    gpu = data["gpu_at_import"]
    lines += _section(f"needs a GPU at import (gpu-at-import, {len(gpu)})", [_gpu(g) for g in gpu])
    lines += _section(
        "syntax errors", [f"{s['file']}:{s['line']}: {s['message']}" for s in data["syntax_errors"]]
    )
    lines += _section("notes", [f"{n['level']}: {n['message']}" for n in data["notes"]])
    if data["requirements"] is not None:
        lines += _requirements(data["requirements"])
    lines += ["", *_wrapped(f"result: {summary(data)}")]
    return "\n".join(lines)


def _wrapped(text: str, indent: str = "", more: str = _CONTINUED) -> list[str]:
    """One logical line as lines of at most WIDTH characters."""
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent,
        subsequent_indent=indent + more,
        break_on_hyphens=False,
        drop_whitespace=True,
    ) or [indent.rstrip()]


def _listed(title: str, items: Sequence[str], *, count: bool = True) -> list[str]:
    head = f"{title} ({len(items)})" if count else title
    return _wrapped(f"{head}: {', '.join(items) or '-'}")


def _package(item: Mapping[str, Any]) -> str:
    kind = " (namespace)" if item["namespace"] else ""
    return f"{item['name']}{kind}"


def _files(files: Sequence[str]) -> list[str]:
    """`local files (N):`, then the top-level ones, then one line per package directory."""
    groups: dict[str, list[str]] = {}
    for rel in files:
        top, _, rest = rel.partition("/")
        groups.setdefault(f"{top}/" if rest else "", []).append(rest or top)
    lines = [f"local files ({len(files)}):"]
    for group in sorted(groups):
        names = groups[group]
        head = f"{group} ({len(names)}): " if group else ""
        lines += _wrapped(head + ", ".join(names), _INDENT)
    return lines if files else ["local files (0): -"]


def _section(title: str, items: Sequence[str]) -> list[str]:
    if not items:
        return []
    return ["", f"{title}:", *(line for item in items for line in _wrapped(item, _INDENT))]


def _where(locations: Sequence[Mapping[str, Any]]) -> str:
    shown = [f"{loc['file']}:{loc['line']}" for loc in locations[:MAX_LOCATIONS]]
    more = len(locations) - MAX_LOCATIONS
    return ", ".join(shown + ([f"+{more} more"] if more > 0 else []))


def _distributions(item: Mapping[str, Any]) -> str:
    marks = [m for m, on in (("ambiguous", item["ambiguous"]), ("guessed", item["guessed"])) if on]
    return " | ".join(item["distributions"]) + (f" ({', '.join(marks)})" if marks else "")


def _third_party(items: Sequence[Mapping[str, Any]]) -> list[str]:
    dists = [_distributions(item) for item in items]
    # Columns as wide as their values, but one very long value does not widen them all.
    width = max((n for item in items if (n := len(item["import"])) <= 24), default=0)
    dist_width = max((n for dist in dists if (n := len(dist)) <= 40), default=0)
    lines = ["", f"third-party imports ({len(items)}):"] if items else []
    for item, dist in zip(items, dists, strict=True):
        row = f"{_INDENT}{item['import']:<{width}}  {item['reach']:<8}  {dist:<{dist_width}}"
        where = _where(item["locations"])
        if len(row) + 2 + len(where) <= WIDTH:
            lines.append(f"{row}  {where}")
        else:  # the locations on a line of their own
            lines += _wrapped(row.rstrip())
            lines += _wrapped(where, _CONTINUED)
    if any(item["guessed"] for item in items):
        legend = (
            "guessed: no resolved wheel provides the import; the distribution comes from "
            "builder's table of known names, or is the import's own name"
        )
        lines += _wrapped(legend, _INDENT)
    return lines


def _missing(item: Mapping[str, Any]) -> str:
    reach = "" if item["reach"] == "module" else f" ({item['reach']})"
    return f"{item['file']}:{item['line']}: {item['module']}: {item['reason']}{reach}"


def _gpu(item: Mapping[str, Any]) -> str:
    context = "at module level" if item["context"] == "module level" else f"in a {item['context']}"
    how = {"lazy": "lazily", "optional": "under an import guard", "guarded": "never at run time"}
    reach = "" if item["reach"] == "module" else f" (its file is reached {how[item['reach']]})"
    return f"{item['file']}:{item['line']}: {item['call']} {context}{reach}"


def _requirements(check: Mapping[str, Any]) -> list[str]:
    resolution = check["resolution"]
    how = (
        f"resolved with uv for python {resolution['python']} on {resolution['platform']}: "
        f"{resolution['packages']} packages ({resolution['origin']})"
        if resolution["ok"]
        else "not resolved: nothing is known to arrive transitively (see notes)"
    )
    rows = [how] + [
        f"undeclared ({kind}): {_names(items)}" for kind, items in check["undeclared"].items()
    ]
    lines = _section(f"requirements ({', '.join(check['files'])})", rows)
    transitive = check["transitive"]
    lines += _wrapped(
        f"declared only transitively ({len(transitive)}):" + ("" if transitive else " -"), _INDENT
    )
    for item in transitive:
        lines += _wrapped(f"{item['import']}: {' -> '.join(item['path'])}", _INDENT * 2)
    lines += _wrapped(f"declared but never imported: {', '.join(check['unused']) or '-'}", _INDENT)
    return lines


def _names(items: Sequence[Mapping[str, Any]]) -> str:
    names = [
        " | ".join(item["distributions"]) + (" (guessed)" if item["guessed"] else "")
        for item in items
    ]
    return ", ".join(names) or "-"


def summary(data: Mapping[str, Any]) -> str:
    """The result line: what fails the scan, then what to look at."""
    check = data["requirements"]
    soft = ("optional", "guarded")
    optional = sum(1 for m in data["missing_local"] if m["reach"] in soft)
    gpu_files = {g["file"] for g in data["gpu_at_import"] if g["reach"] == "module"}
    counts = [
        (len(data["missing_local"]) - optional, "missing local module(s)"),
        (optional, "missing optional local module(s)"),
        (len(check["undeclared"]["required"]) if check else 0, "undeclared required import(s)"),
        (len(data["syntax_errors"]), "file(s) with syntax errors"),
        (sum(n["level"] == "warning" for n in data["notes"]), "warning(s)"),
        (len(gpu_files), "file(s) that need a GPU at import"),
    ]
    problems = [f"{count} {what}" for count, what in counts if count]
    return ", ".join(problems) if problems else "ok"
