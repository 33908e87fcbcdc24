"""`--profile-draft`: a model profile (builder/profiles.py's format) that loads as written.

Its name is the repository directory's, lowercased and made a valid profile name; a profile's
file is named after it, so a directory given as the target gets `<name>.yaml`. Every rule has a
source: the requirements file and line that declares it, or the file and line that imports it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from packaging.utils import canonicalize_name

from builder.files import write_atomic
from builder.matrix import MODULE_NAME, PROFILE_NAME
from builder.scan.model import Reach, ScanReport, ThirdParty

_HEADER = (
    "# Draft model profile written by `builder scan` from {path}: review it before use.\n"
    "# Load it from a directory named in a matrix's `profile_paths`, as {name}.yaml.\n"
)


def profile_name(path: Path) -> str:
    """A valid profile name from a directory name: `MultiTalk` -> `multitalk`."""
    name = re.sub(r"[^a-z0-9._-]+", "-", path.name.lower())
    name = re.sub(r"^[^a-z0-9]+", "", name).rstrip("-._")
    return name if PROFILE_NAME.match(name) else "model"


def _where(item: ThirdParty) -> str:
    first = item.locations[0]
    return f"{first.file}:{first.line}"


def _rule(item: ThirdParty, why: str, optional: bool) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "requirement": item.distributions[0],
        "source": f"{_where(item)}: import {item.name} ({why})",
    }
    if len(item.distributions) > 1:
        rule["alternatives"] = list(item.distributions[1:])
    if optional:
        rule["optional"] = True
    return rule


def _requirements(report: ScanReport) -> list[dict[str, Any]]:
    check = report.requirements
    rules = [
        {"requirement": str(d.requirement), "source": f"{_relative(report, d.file)}:{d.line}"}
        for d in (check.declared if check else ())
    ]
    names: set[str] = {
        canonicalize_name(d.requirement.name) for d in (check.declared if check else ())
    }
    via = {t.name: " -> ".join(t.path) for t in (check.transitive if check else ())}
    for item in report.third_party:
        if item.reach is Reach.GUARDED or names.intersection(item.distributions):
            continue
        why = f"arrives via {via[item.name]}" if item.name in via else "not declared"
        if item.guessed:
            why += "; distribution guessed"
        rules.append(_rule(item, why, optional=item.reach is Reach.OPTIONAL))
        names.update(item.distributions)
    return rules


def _relative(report: ScanReport, file: str) -> str:
    root, path = Path(report.path).resolve(), Path(file).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else file


def profile_data(report: ScanReport) -> dict[str, Any]:
    """The draft as data, in the order profiles are written."""
    imports = [t.name for t in report.third_party if MODULE_NAME.match(t.name)]
    reach = {t.name: t.reach for t in report.third_party}
    data: dict[str, Any] = {
        "name": profile_name(Path(report.path).resolve()),
        "source": report.path,
        "requirements": _requirements(report),
        "imports": [n for n in imports if reach[n] in (Reach.MODULE, Reach.LAZY)],
        "optional_imports": [n for n in imports if reach[n] is Reach.OPTIONAL],
    }
    sites = [g for g in report.gpu_at_import if g.reach is Reach.MODULE]
    if sites:
        first = sites[0]
        where = f"{first.file}:{first.line}: {first.call} ({first.context})"
        more = f" and {len(sites) - 1} more" if len(sites) > 1 else ""
        data["gpu_at_import"] = {"value": True, "source": where + more}
    return data


def render_profile_draft(report: ScanReport) -> str:
    data = profile_data(report)
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    return _HEADER.format(path=report.path, name=data["name"]) + body


def draft_path(report: ScanReport, target: Path) -> Path:
    """Where the draft goes: `target`, or `target/<name>.yaml` when it is a directory."""
    return target / f"{profile_data(report)['name']}.yaml" if target.is_dir() else target


def write_profile_draft(report: ScanReport, target: Path) -> Path:
    """Write the draft atomically (an unwritable path is an InputError naming it); return
    where it went."""
    path = draft_path(report, target)
    write_atomic(path, render_profile_draft(report))
    return path
