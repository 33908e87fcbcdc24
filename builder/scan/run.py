"""The scan: walk -> declared requirements -> their resolution -> import names mapped -> report."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.errors import InputError
from builder.matrix import Indexes
from builder.platforms import PLATFORMS
from builder.scan.draft import draft_path, write_profile_draft
from builder.scan.model import (
    Declared,
    Location,
    Note,
    RequirementsCheck,
    ScanReport,
    ThirdParty,
    Transitive,
)
from builder.scan.names import distributions_for, provided
from builder.scan.parse import Target
from builder.scan.requirements import read_declared, read_indexes
from builder.scan.resolve import Resolved, Resolver, UvResolver, unresolved
from builder.scan.text import render_text
from builder.scan.walk import Walked, walk
from builder.scan.wheels import ModuleIndex, wheel_index
from builder.settings import Settings

DEFAULT_PLATFORM = "linux/amd64"


@dataclass(frozen=True)
class Environment:
    """The standard-library names the scan knows, and the Python they come from."""

    version: str  # "3.11"
    stdlib: frozenset[str]


def current_environment() -> Environment:
    """The running interpreter's standard-library names (its installed packages play no part)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return Environment(version, frozenset(sys.stdlib_module_names))


@dataclass(frozen=True, kw_only=True)
class ScanOptions:
    path: Path
    entries: tuple[Path, ...] = ()  # default: every .py at the top of path
    requirements: tuple[Path, ...] = ()
    python: str | None = None  # target "X.Y"; default: the environment's version
    platform: str = DEFAULT_PLATFORM


class _Nothing:
    """No resolver and no wheel index: nothing arrives transitively, every mapping is guessed."""

    def resolve(
        self,
        requirements: Sequence[str],
        python: str,
        platform: str,
        indexes: Indexes | None = None,
    ) -> Resolved:
        return unresolved(python, platform, "no resolver given")

    def modules(self, pins: Mapping[str, str]) -> dict[str, tuple[str, ...] | None]:
        return {}


@dataclass(frozen=True)
class Sources:
    """Where the scan learns what the requirements bring, and what each distribution provides."""

    resolver: Resolver = field(default_factory=_Nothing)
    modules: ModuleIndex = field(default_factory=_Nothing)


def uv_sources(settings: Settings, *, offline: bool = False) -> Sources:
    """The real sources: uv and the index's wheels, through builder's metadata cache."""
    cache = settings.metadata_cache
    return Sources(
        UvResolver(settings, offline=offline),
        wheel_index(cache / "modules", settings.ca_for(None), offline),
    )


# --- inputs ------------------------------------------------------------------------------------


def _root(path: Path) -> Path:
    if not path.is_dir():
        raise InputError(f"{path}: no such directory", "pass the repository to scan")
    return path.resolve()


def _entries(root: Path, given: Sequence[Path]) -> list[Path]:
    """The entry files; found ones are not resolved, so a link to outside is seen as one."""
    if not given:
        found = sorted(root.glob("*.py"))
        if not found:
            raise InputError(
                f"{root}: no .py files at the top", "name the entry files with --entry"
            )
        return found
    return [_entry(root, path) for path in given]


def _entry(root: Path, given: Path) -> Path:
    path = next((p for p in (root / given, given) if p.is_file()), None)
    if path is None:
        raise InputError(f"{given}: entry file not found", f"give a .py file inside {root}")
    if not path.resolve().is_relative_to(root):
        raise InputError(f"{given}: entry file outside {root}", "give a .py file inside it")
    return path.resolve()


def _target_python(given: str | None, env: Environment) -> str:
    if given is None:
        return env.version
    try:
        version = Version(given)
    except InvalidVersion:
        version = None
    if version is None or len(version.release) != 2:
        raise InputError(f"--python {given}: not a X.Y version", "for example --python 3.11")
    return given


def _platform(given: str) -> str:
    if given not in PLATFORMS:
        raise InputError(f"--platform {given}: unknown platform", f"one of {', '.join(PLATFORMS)}")
    return given


# --- requirements ------------------------------------------------------------------------------


def _third_party(
    sites: Mapping[str, set[Location]], providers: Mapping[str, tuple[str, ...]]
) -> tuple[ThirdParty, ...]:
    grouped: dict[tuple[str, str, tuple[str, ...]], set[Location]] = {}
    for module, locations in sites.items():
        mapped = distributions_for(module, providers)
        key = (mapped.name, mapped.source, mapped.distributions)
        grouped.setdefault(key, set()).update(locations)
    items = [
        ThirdParty(name, dists, source, tuple(sorted(locs, key=_location_key)))
        for (name, source, dists), locs in grouped.items()
    ]
    return tuple(sorted(items, key=lambda item: item.name.lower()))


def _location_key(location: Location) -> tuple[str, int, int]:
    return location.file, location.line, -location.reach.strength


def check_requirements(
    files: Sequence[Path],
    declared: Sequence[Declared],
    third_party: Sequence[ThirdParty],
    resolved: Resolved,
) -> RequirementsCheck:
    """Each import is declared, arrives through a declared requirement (the resolution's path
    says how), or is undeclared; declared ones no import needs are listed too."""
    names = sorted(dict.fromkeys(canonicalize_name(d.requirement.name) for d in declared))
    graph = resolved.graph
    undeclared: list[ThirdParty] = []
    transitive: list[Transitive] = []
    for item in third_party:
        if set(names).intersection(item.distributions):
            continue
        arriving = [dist for dist in item.distributions if dist in graph.pins]
        if arriving:
            path = graph.path(names, arriving[0]) or (arriving[0],)
            transitive.append(Transitive(item.name, arriving[0], path))
        else:
            undeclared.append(item)
    imported = {dist for item in third_party for dist in item.distributions}
    return RequirementsCheck(
        files=tuple(str(path) for path in files),
        declared=tuple(declared),
        resolution=resolved.info,
        undeclared=tuple(undeclared),
        transitive=tuple(transitive),
        unused=tuple(sorted(set(names) - imported)),
    )


def _resolution_notes(resolved: Resolved) -> list[Note]:
    info = resolved.info
    notes = [
        Note("warning", f"resolved without {line}: uv could not take it ({why})")
        for line, why in info.dropped
    ]
    if not info.ok:
        why = (info.error or "unknown").splitlines()[0] if info.error else "unknown"
        notes.append(
            Note(
                "warning",
                f"the requirements were not resolved for python {info.python} on "
                f"{info.platform} ({why}): imports that arrive through a declared requirement "
                "are reported as undeclared",
            )
        )
    return notes


# --- the scan ----------------------------------------------------------------------------------


def _notes(
    walked: Walked, python: str, env: Environment, extra: Sequence[Note]
) -> tuple[Note, ...]:
    notes = []
    if python != env.version:
        text = f"standard-library names are from Python {env.version}; the target is {python}"
        notes.append(Note("info", text))
    for directory in walked.namespaces:
        text = (
            f"{directory}/ has no __init__.py: an implicit namespace package, importable only "
            "when the repository root is on sys.path"
        )
        notes.append(Note("info", text))
    return (*notes, *extra, *walked.warnings)


def scan(options: ScanOptions, env: Environment, sources: Sources | None = None) -> ScanReport:
    """Scan a repository; raise InputError for bad input. Without `sources` nothing is resolved
    and every import name is mapped by guess."""
    sources = sources or Sources()
    python = _target_python(options.python, env)
    platform = _platform(options.platform)
    root = _root(options.path)
    entries = _entries(root, options.entries)
    major, minor = (int(part) for part in python.split("."))
    walked = walk(root, entries, env.stdlib, Target((major, minor)))
    check, extra = None, []
    providers: dict[str, tuple[str, ...]] = {}
    if options.requirements:
        machine = PLATFORMS[platform].machine
        declared = [d for p in options.requirements for d in read_declared(p, python, machine)]
        lines = [str(d.requirement) for d in declared]
        indexes = read_indexes(options.requirements)
        resolved = sources.resolver.resolve(lines, python, platform, indexes)
        if resolved.info.ok:
            providers = provided(sources.modules.modules(resolved.graph.pins))
        third_party = _third_party(walked.sites, providers)
        check = check_requirements(options.requirements, declared, third_party, resolved)
        extra = _resolution_notes(resolved)
    else:
        third_party = _third_party(walked.sites, providers)
    return ScanReport(
        path=str(options.path),
        python=python,
        platform=platform,
        stdlib_from=env.version,
        entries=tuple(path.relative_to(root).as_posix() for path in entries),
        files=walked.files,
        local=walked.local,
        stdlib=walked.stdlib,
        third_party=third_party,
        missing_local=walked.missing,
        gpu_at_import=walked.gpu,
        syntax_errors=walked.syntax,
        notes=_notes(walked, python, env, extra),
        requirements=check,
    )


def render(report: ScanReport, fmt: str) -> str:
    """The report as JSON or as text; both come from `to_json`."""
    data = report.to_json()
    return json.dumps(data, indent=2) if fmt == "json" else render_text(data)


def run_scan(
    options: ScanOptions,
    fmt: str,
    profile_draft: Path | None,
    sources: Sources | None = None,
) -> tuple[str, int]:
    """What `builder scan` prints and its exit code; writes the profile draft when asked."""
    report = scan(options, current_environment(), sources)
    if profile_draft is not None:
        written = write_profile_draft(report, profile_draft)
        report = _with_draft_note(report, written)
    return render(report, fmt), report.exit_code


def _with_draft_note(report: ScanReport, written: Path) -> ScanReport:
    expected = draft_path(report, written.parent)
    if written.name == expected.name:
        return report
    text = (
        f"profile draft {written}: a profile loads only from a file named after it; "
        f"rename it to {expected.name}"
    )
    return replace(report, notes=(*report.notes, Note("info", text)))
