"""`--repo PATH --entry FILE`: requirements and a model profile drafted from `builder scan`.

Only scan's exported API is used: `scan` (nothing resolved, import names mapped by scan's own
table), its documented JSON (`ScanReport.to_json()`) and its profile draft
(`render_profile_draft`). Each third-party import reached at module level or lazily that no
requirement covers becomes a requirement (an ambiguous one takes the first distribution and
says which others would do); a distribution the base preinstalls is pinned to that version.
The profile is scan's draft, renamed when its name is a shipped profile's (a profile of the
same name would replace the shipped one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from builder.init.model import Fact, Notice, Req, Source
from builder.scan import ScanOptions, current_environment, render_profile_draft, scan

HEADER = (
    "# Drafted by `builder init --repo {path}` from the imports `builder scan` found: review it.\n"
)


@dataclass(frozen=True)
class ScanDraft:
    requirements: tuple[Req, ...]
    profile_name: str
    profile_text: str
    warnings: tuple[Notice, ...]


def draft_from_scan(
    repo: Path,
    entries: Sequence[Path],
    python: str,
    declared: set[str],
    preinstalled: Mapping[str, str],
    shipped: Sequence[str],
) -> ScanDraft:
    """What the scan of `repo` adds to the matrix; `declared` are the canonical names the
    matrix already requires."""
    options = ScanOptions(path=repo, entries=tuple(entries), python=python)
    report = scan(options, current_environment())
    data = report.to_json()
    reqs = []
    for item in data["third_party"]:
        dists = item["distributions"]
        if item["reach"] not in ("module", "lazy") or set(dists) & declared:
            continue
        dist = dists[0]
        text = f"{dist}=={preinstalled[dist]}" if dist in preinstalled else dist
        note = f"imports {item['import']}" + (f" (or {' | '.join(dists[1:])})" if dists[1:] else "")
        reqs.append(Req(Fact(text, (_where(repo, item),), note=note), dist))
        declared = declared | {dist}
    warnings = tuple(
        Notice(
            f"{m['module']} is imported but missing from {repo} ({m['reason']})",
            Source(f"{repo}/{m['file']}", m["line"]),
        )
        for m in data["missing_local"]
        if m["reach"] in ("module", "lazy")
    )
    name, text = _profile(render_profile_draft(report), repo, shipped)
    return ScanDraft(tuple(reqs), name, text, warnings)


def _where(repo: Path, item: Mapping[str, Any]) -> Source:
    location = item["locations"][0]
    return Source(f"{repo}/{location['file']}", location["line"])


def _profile(draft: str, repo: Path, shipped: Sequence[str]) -> tuple[str, str]:
    data = yaml.safe_load(draft)
    name = str(data["name"])
    if name in shipped:
        name = data["name"] = f"{name}-scan"
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    return name, HEADER.format(path=repo) + body
