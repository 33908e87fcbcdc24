"""`builder check`: what is wrong with each cell, found before anything is built.

No container engine is involved. Per cell: its profiles (builder/profiles.py) -> its resolution
(the cell's fresh lock, else `uv pip compile` for its Python and platform, cached) -> package
metadata from its indexes (builder/metadata.py, cached) -> `RULES`, each a small function from a
`Context` to findings. The curated facts the rules apply are data, each row with its source:
builder/data/known_issues.yaml and the profiles' `known_bad`.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeGuard

import yaml
from packaging import tags
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder import proc
from builder.errors import InputError
from builder.files import write_atomic
from builder.lock import (
    Resolution,
    inputs_digest,
    lock_path,
    parse_lock,
    read_lock,
    resolve_uv,
    stale_reason,
)
from builder.log import Log
from builder.matrix import Cell, Matrix
from builder.metadata import (
    DEFAULT_MAX_AGE,
    Fetch,
    File,
    IndexPool,
    Metadata,
    prefetch,
    urllib_fetch,
)
from builder.profiles import (
    KnownBad,
    Profile,
    Rule,
    load_profiles,
    profiles_for,
    read_known_bad,
    written_range,
)
from builder.settings import Settings

KNOWN_ISSUES = Path(__file__).resolve().parent / "data" / "known_issues.yaml"
SEVERITIES = ("error", "warning", "info")
GLIBC_MINOR = 28  # manylinux_2_28, the platform `builder lock` resolves for (lock._PLATFORM_TAGS)
_ARCH = {
    "linux/amd64": "x86_64",
    "linux/arm64": "aarch64",
    "linux/arm64/v8": "aarch64",
    "linux/ppc64le": "ppc64le",
    "linux/s390x": "s390x",
}
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_NO_WHEELS = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?) has no wheels with a matching "
    r"platform tag"
)
_CUDA_LABEL = re.compile(r"^cu(\d{2,3})$")
_CUDA_RUNTIME = re.compile(r"^nvidia-cuda-runtime(?:-cu\d+)?$")

Resolver = Callable[[Cell, Settings, bool], Resolution]  # (cell, settings, offline)


def uv_resolver(cell: Cell, settings: Settings, offline: bool) -> Resolution:
    """The real resolution: `uv pip compile` for the cell's Python and platform, no hashes."""
    return resolve_uv(cell, settings, hashes=False, offline=offline)


# ---------------------------------------------------------------- results


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One thing `check` found about a cell."""

    severity: str  # error | warning | info
    code: str  # stable: see the table in builder/data/profiles/README.md
    package: str | None
    message: str
    hint: str
    source: str  # the rule's source: a profile rule, known_issues.yaml, or matrix.yaml:LINE

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "package": self.package,
            "message": self.message,
            "hint": self.hint,
            "source": self.source,
        }


@dataclass(frozen=True, kw_only=True)
class CellReport:
    """The findings of one cell; it fails when any is an error."""

    id: str
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
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
            lines.append(f"          source: {f.source}")
    failed = sum(not r.ok for r in reports)
    lines.append(f"{len(reports)} cell(s) checked: {failed} failed, {len(reports) - failed} passed")
    return "\n".join(lines)


# ---------------------------------------------------------------- the curated table


@dataclass(frozen=True, kw_only=True)
class KnownIssues:
    """builder/data/known_issues.yaml, read once per run."""

    known_bad: tuple[KnownBad, ...]
    companions: Mapping[str, Mapping[str, str]]  # package -> torch minor -> its minor
    companions_source: str
    torch_cuda: Mapping[str, str]  # torch minor -> CUDA of PyPI's default Linux wheel
    torch_cuda_source: str
    needs_build: Mapping[str, Mapping[str, str]]  # package -> reason, hint, source
    no_wheel: Mapping[str, Mapping[str, str]]  # package -> hint, source


def load_known_issues(path: Path = KNOWN_ISSUES) -> KnownIssues:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    companions = dict(data["companions"])
    source = " ".join(str(companions.pop("source")).split())
    return KnownIssues(
        known_bad=read_known_bad(path),
        companions={canonicalize_name(k): v for k, v in companions.items()},
        companions_source=source,
        torch_cuda=data["torch_cuda"]["versions"],
        torch_cuda_source=" ".join(str(data["torch_cuda"]["source"]).split()),
        needs_build={canonicalize_name(k): _text(v) for k, v in data["needs_build"].items()},
        no_wheel={canonicalize_name(k): _text(v) for k, v in data["no_wheel"].items()},
    )


def _text(row: Mapping[str, Any]) -> dict[str, str]:
    return {k: " ".join(str(v).split()) for k, v in row.items()}


# ---------------------------------------------------------------- what the rules see


@dataclass(frozen=True, kw_only=True)
class Context:
    """Everything the rules read about one cell."""

    cell: Cell
    where: str  # matrix.yaml:LINE of the cell
    profiles: tuple[Profile, ...]
    versions: Mapping[str, Version]  # canonical name -> version: resolved, or the exact pins
    resolved: bool  # False: the cell did not resolve, so `versions` holds only its exact pins
    pinned: Mapping[str, Version]  # the cell's own exact pins
    metadata: Metadata
    issues: KnownIssues

    @property
    def python(self) -> str:
        return self.cell.base.python

    @property
    def platform(self) -> str:
        return f"{self.cell.base.platform}, CPython {self.python}"

    @property
    def supported(self) -> frozenset[tags.Tag]:
        return supported_tags(self.python, self.cell.base.platform)

    def markers(self) -> dict[str, str]:
        """The PEP 508 marker environment of the cell's interpreter."""
        return {
            "python_version": self.python,
            "python_full_version": f"{self.python}.0",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "os_name": "posix",
            "platform_machine": _ARCH[self.cell.base.platform],
            "extra": "",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
        }

    def highest(self, name: str, specifier: SpecifierSet) -> Version | None:
        project = self.metadata.project(name)
        return project.highest(specifier, self.python) if project else None


def supported_tags(python: str, platform: str) -> frozenset[tags.Tag]:
    """The wheel tags an installer accepts for CPython `python` on a manylinux_2_28 `platform`."""
    version = tuple(int(part) for part in python.split("."))
    arch = _ARCH[platform]
    platforms = [f"manylinux_2_{m}_{arch}" for m in range(GLIBC_MINOR, 4, -1)]
    platforms += [
        f"{legacy}_{arch}"
        for m, legacy in _LEGACY_MANYLINUX.items()
        if arch in ("x86_64", "i686") or legacy == "manylinux2014"
    ]
    platforms.append(f"linux_{arch}")
    return frozenset(
        (
            *tags.cpython_tags(version, platforms=platforms),
            *tags.compatible_tags(version, f"cp{version[0]}{version[1]}", platforms),
        )
    )


def _error(code: str, package: str | None, message: str, hint: str, source: str) -> Finding:
    return Finding(
        severity="error", code=code, package=package, message=message, hint=hint, source=source
    )


# ---------------------------------------------------------------- the rules


def rule_python(ctx: Context) -> Iterator[Finding]:
    """python-unsupported: the base's Python against the profiles and every Requires-Python."""
    for p in ctx.profiles:
        if not p.python.contains(ctx.python, prereleases=True):
            yield _error(
                "python-unsupported",
                None,
                f"{p.name} needs Python {p.python}; base {ctx.cell.base.name} has {ctx.python}",
                f"use a base with Python {p.python}",
                p.source_of("python"),
            )
    for name, version in sorted(ctx.versions.items()):
        project = ctx.metadata.project(name)
        files = project.files_for(version) if project else ()
        if files and not any(f.supports_python(ctx.python) for f in files):
            best = ctx.highest(name, SpecifierSet())
            yield _error(
                "python-unsupported",
                name,
                f"{name} {version} requires Python {files[0].requires_python}; base "
                f"{ctx.cell.base.name} has {ctx.python}",
                f"use {name}=={best} (the newest release for Python {ctx.python})"
                if best
                else "use a base with a newer Python",
                f"index metadata: Requires-Python of {name} {version}",
            )


def rule_gpu(ctx: Context) -> Iterator[Finding]:
    """gpu-at-import: a model whose code needs a GPU to import, in a cell that has none."""
    for p in ctx.profiles:
        if p.gpu_at_import and (ctx.cell.gpu == "none" or ctx.cell.base.cuda is None):
            why = (
                "probes run without one (gpu: none)"
                if ctx.cell.gpu == "none"
                else f"base {ctx.cell.base.name} has no CUDA"
            )
            yield _error(
                "gpu-at-import",
                None,
                f"importing {p.name}'s code needs a GPU, but {why}",
                "use a CUDA base and `gpu: required` or `optional` for this model",
                p.source_of("gpu_at_import"),
            )


def rule_profiles(ctx: Context) -> Iterator[Finding]:
    """profile-range, profile-missing-package: every profile requirement against the cell."""
    for profile in ctx.profiles:
        for rule in profile.requirements:
            marker = rule.requirement.marker
            if marker is None or marker.evaluate(ctx.markers()):
                yield from _profile_rule(ctx, profile, rule)


def _profile_rule(ctx: Context, profile: Profile, rule: Rule) -> Iterator[Finding]:
    present = next((n for n in rule.names if n in ctx.versions), None)
    source = f"profile {rule.profile}: {rule.source}"
    if present is None:
        if ctx.resolved and not rule.optional:
            yield _error(
                "profile-missing-package",
                rule.name,
                f"{profile.name} needs {rule.text}, and the cell does not install {rule.name}",
                f"add `{rule.text}` to the matrix `requirements`",
                source,
            )
        elif not ctx.resolved:
            yield from _pin_outside(ctx, profile, rule, source)
        return
    version = ctx.versions[present]
    if rule.requirement.specifier.contains(version, prereleases=True):
        return
    best = ctx.highest(present, rule.requirement.specifier)
    yield Finding(
        severity="warning" if rule.optional else "error",
        code="profile-range",
        package=present,
        message=f"{present} {version} is outside {_whose(profile, rule)} range {rule.range}",
        hint=_range_hint(ctx, present, rule.range, best),
        source=source,
    )


def _whose(profile: Profile, rule: Rule) -> str:
    """`wan2.2's`, or `wan2.2-s2v's (from wan2.2)` for an inherited rule."""
    return f"{profile.name}'s" + (f" (from {rule.profile})" if rule.profile != profile.name else "")


def _range_hint(ctx: Context, name: str, range_: str, best: Version | None) -> str:
    if best is None:
        return f"no release of {name} inside {range_} supports Python {ctx.python}"
    fix = f"{name}=={best} (the highest release inside {range_})"
    if ctx.cell.pin(name):
        return f"pin {fix} in the matrix ({ctx.where})"
    return f"add {fix} to the matrix `requirements`"


def _pin_outside(ctx: Context, profile: Profile, rule: Rule, source: str) -> Iterator[Finding]:
    """An unresolved cell's range pin that leaves no release inside the profile's range."""
    pin = ctx.cell.pin(rule.name)
    project = ctx.metadata.project(rule.name)
    if pin is None or project is None:
        return
    wanted = SpecifierSet(pin.specifier)
    if not any(v in wanted and v in rule.requirement.specifier for v in project.releases):
        best = ctx.highest(rule.name, rule.requirement.specifier)
        yield _error(
            "profile-range",
            rule.name,
            f"the pin {pin.requirement} leaves no release inside "
            f"{_whose(profile, rule)} range {rule.range}",
            _range_hint(ctx, rule.name, rule.range, best),
            source,
        )


def rule_wheels(ctx: Context) -> Iterator[Finding]:
    """no-wheel, needs-build, sdist-only: a usable file of every package for the platform."""
    supported = ctx.supported
    for name, version in sorted(ctx.versions.items()):
        project = ctx.metadata.project(name)
        files = project.files_for(version) if project else ()
        if files and not any(f.is_wheel and f.tags & supported for f in files):
            yield _no_wheel(ctx, name, version, files)


def _no_wheel(ctx: Context, name: str, version: Version, files: Sequence[File]) -> Finding:
    source = f"index metadata: files of {name} {version}"
    platforms = sorted({t.platform for f in files for t in f.tags})
    if not any(not f.is_wheel for f in files):
        known = ctx.issues.no_wheel.get(name, {})
        return _error(
            "no-wheel",
            name,
            f"no distribution of {name} {version} for this platform ({ctx.platform}): "
            f"wheels only for {', '.join(platforms) or 'none'}, and no sdist",
            known.get("hint")
            or f"pick a {name} release with a wheel for this "
            "platform, or a base with another platform or Python",
            known.get("source") or source,
        )
    build = ctx.issues.needs_build.get(name)
    if build or any(f.is_wheel and not f.is_pure for f in files):
        reason = (build or {}).get("reason") or (
            "it has compiled code, so the image build needs a compiler and its build dependencies"
        )
        return _error(
            "needs-build",
            name,
            f"{name} {version} has no wheel for this platform ({ctx.platform}), only "
            f"an sdist: {reason}",
            (build or {}).get("hint")
            or f"pick a {name} release with a wheel for "
            "this platform and Python, or provide one in indexes.wheelhouse",
            (build or {}).get("source") or source,
        )
    return Finding(
        severity="info",
        code="sdist-only",
        package=name,
        message=f"{name} {version} installs from its sdist (built during the image build)",
        hint="pure-Python sdists build without extra tools",
        source=source,
    )


def rule_known_bad(ctx: Context) -> Iterator[Finding]:
    """known-bad: curated combinations (known_issues.yaml and the profiles' known_bad)."""
    rows = (*ctx.issues.known_bad, *(row for p in ctx.profiles for row in p.known_bad))
    for row in dict.fromkeys(rows):
        if _matches(ctx, row):
            have = ", ".join(f"{n} {ctx.versions[n]}" for n, _ in row.when)
            yield Finding(
                severity=row.severity,
                code="known-bad",
                package=row.when[0][0],  # the first package named is the one to change
                message=f"{row.reason} (the cell has {have})",
                hint=row.hint,
                source=row.source,
            )


def _matches(ctx: Context, row: KnownBad) -> bool:
    if not all(
        n in ctx.versions and spec.contains(ctx.versions[n], prereleases=True)
        for n, spec in row.when
    ):
        return False
    return not row.profile or any(
        all(getattr(p, fact) in values for fact, values in row.profile) for p in ctx.profiles
    )


def rule_companions(ctx: Context) -> Iterator[Finding]:
    """companion-mismatch: torchvision and torchaudio built for another torch minor."""
    torch = ctx.versions.get("torch")
    if torch is None:
        return
    for name, table in ctx.issues.companions.items():
        have, want = ctx.versions.get(name), table.get(f"{torch.major}.{torch.minor}")
        if have is None or want is None or f"{have.major}.{have.minor}" == want:
            continue
        best = ctx.highest(name, SpecifierSet(f"=={want}.*"))
        yield _error(
            "companion-mismatch",
            name,
            f"{name} {have} is built for another torch; torch {torch} pairs with {name} {want}.*",
            f"use {name}=={best or want + '.*'}",
            ctx.issues.companions_source,
        )


def rule_cuda(ctx: Context) -> Iterator[Finding]:
    """cuda-mismatch: the torch wheel's CUDA must run on the base's (same major, minor <=)."""
    torch, base = ctx.versions.get("torch"), ctx.cell.base
    if torch is None or base.cuda is None:
        return
    found = torch_cuda(ctx, torch)
    if found is None:
        return
    wheel, how = found
    have = _major_minor(base.cuda)
    if wheel == (0, 0):
        if ctx.cell.gpu == "required":
            yield _error(
                "cuda-mismatch",
                "torch",
                f"torch {torch} is the CPU-only build, but the cell requires a GPU",
                "use a +cuXYZ build of torch",
                how,
            )
        return
    if wheel[0] != have[0] or wheel[1] > have[1]:
        label = f"cu{have[0]}{have[1]}"
        yield _error(
            "cuda-mismatch",
            "torch",
            f"torch {torch} is built for CUDA {wheel[0]}.{wheel[1]}; base {base.name} "
            f"has CUDA {base.cuda}",
            f"use a torch build for CUDA {have[0]}.x up to {base.cuda} (e.g. from "
            f"https://download.pytorch.org/whl/{label}), or a base with CUDA "
            f"{wheel[0]}.{wheel[1]}",
            f"{how}; base at {ctx.where}",
        )


def torch_cuda(ctx: Context, torch: Version) -> tuple[tuple[int, int], str] | None:
    """The CUDA a torch wheel is built for ((0, 0) for CPU-only), and how that is known."""
    label = str(torch.local or "")
    if label == "cpu":
        return (0, 0), f"torch {torch}: local version label"
    if match := _CUDA_LABEL.match(label):
        digits = match[1]
        return (int(digits[:-1]), int(digits[-1])), f"torch {torch}: local version label"
    if label or _ARCH[ctx.cell.base.platform] != "x86_64":
        return None
    for text in ctx.metadata.requires_dist("torch", torch) or ():
        req = _requirement(text)
        if req and _CUDA_RUNTIME.match(canonicalize_name(req.name)) and _applies(ctx, req):
            pins = [s.version for s in req.specifier if s.operator == "=="]
            if pins:
                return _major_minor(pins[0]), f"torch {torch} Requires-Dist {text}"
    table = ctx.issues.torch_cuda.get(f"{torch.major}.{torch.minor}")
    return (_major_minor(table), ctx.issues.torch_cuda_source) if table else None


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def rule_preinstalled(ctx: Context) -> Iterator[Finding]:
    """preinstalled-replaced: the base ships a package the cell installs at another version."""
    for name, version in ctx.cell.base.preinstalled:
        have = ctx.versions.get(name)
        if have is not None and have != Version(version):
            yield Finding(
                severity="warning",
                code="preinstalled-replaced",
                package=name,
                message=f"base {ctx.cell.base.name} ships {name} {version}; the cell installs "
                f"{name} {have} into its venv, a second copy (several GB for torch)",
                hint=f"pin {name}=={version} to use what the base was built for, or pick a base "
                f"without {name}",
                source=f"{ctx.where} (bases.{ctx.cell.base.name}.preinstalled)",
            )


def rule_dependencies(ctx: Context) -> Iterator[Finding]:
    """dependency-range: a pinned package's Requires-Dist against the other versions (e.g.
    tokenizers outside the range transformers declares)."""
    parents = sorted((set(ctx.pinned) | {"transformers"}) & set(ctx.versions))
    for parent in parents:
        version = ctx.versions[parent]
        for text in ctx.metadata.requires_dist(parent, version) or ():
            req = _requirement(text)
            dep = canonicalize_name(req.name) if req else ""
            if req is None or dep not in ctx.versions or dep == parent or not _applies(ctx, req):
                continue
            if not req.specifier.contains(ctx.versions[dep], prereleases=True):
                best = ctx.highest(dep, req.specifier)
                yield _error(
                    "dependency-range",
                    dep,
                    f"{dep} {ctx.versions[dep]} is outside the range {parent} {version} "
                    f"declares ({written_range(text)})",
                    f"use {dep}=={best}" if best else f"change {parent} or {dep}",
                    f"index metadata: Requires-Dist of {parent} {version}",
                )


def _requirement(text: str) -> Requirement | None:
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None


def _applies(ctx: Context, req: Requirement) -> bool:
    return req.marker is None or req.marker.evaluate(ctx.markers())


def rule_metadata(ctx: Context) -> Iterator[Finding]:
    """metadata-missing: packages the other rules could not look at."""
    missing = sorted(n for n in ctx.versions if ctx.metadata.project(n) is None)
    if missing:
        yield Finding(
            severity="info",
            code="metadata-missing",
            package=None,
            message=f"no index metadata for {len(missing)} package(s), so their wheels "
            f"and Python support are unchecked: {', '.join(missing[:8])}"
            + (" ..." if len(missing) > 8 else ""),
            hint="run `builder check` online once to fill the cache"
            + "".join(f" (last error: {e})" for e in _errors(ctx.metadata)[-1:]),
            source="index metadata",
        )


def _errors(metadata: Metadata) -> list[str]:
    return list(getattr(metadata, "errors", ()))


RULES: tuple[Callable[[Context], Iterable[Finding]], ...] = (
    rule_python,
    rule_gpu,
    rule_profiles,
    rule_wheels,
    rule_known_bad,
    rule_companions,
    rule_cuda,
    rule_preinstalled,
    rule_dependencies,
    rule_metadata,
)


# ---------------------------------------------------------------- resolution


@dataclass(frozen=True, kw_only=True)
class Options:
    """How `check` runs; everything from the environment comes in `settings`."""

    settings: Settings
    offline: bool = False
    resolver: Resolver = uv_resolver
    fetch: Fetch | None = None  # None: urllib with the CA bundle (ignored when offline)
    max_age: float = DEFAULT_MAX_AGE
    jobs: int = 4

    @property
    def cache_dir(self) -> Path:
        return self.settings.metadata_cache


@dataclass(frozen=True)
class Resolved:
    versions: dict[str, Version]
    resolved: bool
    findings: tuple[Finding, ...] = ()
    origin: str = "uv"


def resolve(matrix: Matrix, cell: Cell, options: Options) -> Resolved:
    """The cell's versions: from its fresh lock, else from the (cached) resolver. A lock
    edited by hand is an error finding (build and validate refuse it), not a source."""
    if stale_reason(matrix, cell) is None:
        lock = read_lock(lock_path(matrix, cell))
        assert lock is not None
        return Resolved(_versions(lock.text), True, origin="lock")
    result, origin = _cached_resolution(cell, options)
    resolved = (
        Resolved(_versions(result.body), True, origin=origin)
        if result.ok
        else _unresolved(cell, result.error or "", f"{matrix.path.name}:{cell.line}")
    )
    return replace(resolved, findings=(*_edited_lock(matrix, cell), *resolved.findings))


def _edited_lock(matrix: Matrix, cell: Cell) -> tuple[Finding, ...]:
    path = lock_path(matrix, cell)
    lock = read_lock(path)
    if lock is None or lock.inputs_sha256 is None or not lock.edited:
        return ()
    finding = _error(
        "lock-edited",
        None,
        f"{path} was edited by hand: its body does not match the body-sha256 in its header "
        "(these findings are for a fresh resolution instead)",
        f"run `builder lock --cell {cell.id}`; build and validate refuse this lock",
        str(path),
    )
    return (finding,)


def _versions(body: str) -> dict[str, Version]:
    out = {}
    for locked in parse_lock(body):
        try:
            out[locked.name] = Version(locked.version)
        except InvalidVersion:
            continue  # a direct URL or odd pin: nothing version-based to check
    return out


def _cached_resolution(cell: Cell, options: Options) -> tuple[Resolution, str]:
    """Resolutions are cached by the lock's inputs digest; offline, any age will do."""
    path = options.cache_dir / "resolutions" / f"{inputs_digest(cell, 'uv')}.json"
    try:
        fresh = options.offline or time.time() - path.stat().st_mtime < options.max_age
        data = json.loads(path.read_text(encoding="utf-8")) if fresh else None
    except (OSError, ValueError):
        data = None
    if _valid_resolution(data):
        return Resolution(ok=data["ok"], body=data["body"], error=data["error"]), "cache"
    result = options.resolver(cell, options.settings, options.offline)
    if result.ok or _genuine_conflict(result.error or ""):  # never a network or cache miss
        with contextlib.suppress(InputError):  # an unwritable cache costs a resolution later
            write_atomic(
                path, json.dumps({"ok": result.ok, "body": result.body, "error": result.error})
            )
    return result, "uv"


def _valid_resolution(data: Any) -> TypeGuard[dict[str, Any]]:
    """A cache entry as `_cached_resolution` writes it; anything else is a miss."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("ok"), bool)
        and isinstance(data.get("body"), str)
        and isinstance(data.get("error"), (str, type(None)))
    )


def exact_pins(cell: Cell) -> dict[str, Version]:
    """The `name==version` lines among the cell's requirements and pins."""
    out: dict[str, Version] = {}
    for line in cell.requirement_lines():
        req = _requirement(line)
        specs = list(req.specifier) if req else []
        if (
            req
            and len(specs) == 1
            and specs[0].operator in ("==", "===")
            and "*" not in specs[0].version
        ):
            out[canonicalize_name(req.name)] = Version(specs[0].version)
    return out


_UNREACHABLE = re.compile(
    r"Failed to fetch|failed to lookup address|Connection refused|timed out|"
    r"certificate verify failed|Request failed after"
)
_OFFLINE_MISS = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*) was not found in the cache")


def _genuine_conflict(error: str) -> bool:
    """A failure whose cause is in the inputs, so the same inputs fail the same way."""
    return "unsatisfiable" in error and not (
        _UNREACHABLE.search(error) or _OFFLINE_MISS.search(error)
    )


def _unresolved(cell: Cell, error: str, where: str) -> Resolved:
    """A failed resolution: its exact pins stand in for versions; the conflict is named."""
    versions = exact_pins(cell)
    platform_misses = _NO_WHEELS.findall(error)
    for name, version in platform_misses:
        versions[canonicalize_name(name)] = Version(version)
    if platform_misses:  # the no-wheel rule reports these, with a better hint
        return Resolved(versions, False)
    if miss := _OFFLINE_MISS.search(error):
        finding = _error(
            "index-unreachable",
            canonicalize_name(miss[1]),
            f"cannot resolve offline: uv's cache has no index data for {miss[1]}; "
            "versions below are the matrix's own pins",
            "run `builder check` once without --offline to fill the cache",
            where,
        )
        return Resolved(versions, False, (finding,))
    if _UNREACHABLE.search(error):
        url = re.search(r"Failed to fetch: `?([^\s`]+)", error)
        finding = _error(
            "index-unreachable",
            None,
            f"cannot resolve: the index did not answer ({url[1] if url else 'network error'}); "
            "versions below are the matrix's own pins",
            "check the network, the index URL and `indexes.ca_bundle`; the other findings "
            "may change once the index answers",
            where,
        )
        return Resolved(versions, False, (finding,))
    premises = conflict(error)
    names = re.findall(r"you require ([A-Za-z0-9][A-Za-z0-9._-]*)", " ".join(premises))
    finding = _error(
        "unresolvable",
        canonicalize_name(names[0]) if names else None,
        "the requirements conflict: " + "; ".join(premises or [error[:300]]),
        f"change one of the requirements named; `builder lock --cell {cell.id}` "
        "shows uv's whole explanation",
        where,
    )
    return Resolved(versions, False, (finding,))


def conflict(explanation: str) -> list[str]:
    """uv's explanation cut to its premises: `A depends on B`, `you require C`, ..."""
    text = " ".join(explanation.split())
    premises: list[str] = []
    for sentence in re.split(r"(?:And )?[Bb]ecause ", text)[1:]:
        cause = re.split(r",? we can conclude that ", sentence)[0]
        premises += [
            p.strip(" .")
            for p in re.split(r" and (?=you |the |[A-Za-z0-9._-]+[=<>!~ ])", cause)
            if p.strip(" .")
        ]
    return list(dict.fromkeys(premises))


# ---------------------------------------------------------------- the run


def check_cells(
    matrix: Matrix, cells: Sequence[Cell], options: Options, log: Log | None = None
) -> list[CellReport]:
    """Check each cell; a cell's problems never stop the others. Profile errors raise first."""
    known = load_profiles(matrix.profile_paths)
    chosen = {c.id: tuple(profiles_for(matrix, c, known)) for c in cells}
    issues = load_known_issues()
    pool = IndexPool(
        cache_dir=options.cache_dir, fetch=_fetch(cells, options), max_age=options.max_age
    )
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:  # cells finish on worker threads; keep their lines whole
            if log is not None:
                log.info(line)

    def one(cell: Cell, cancel: threading.Event) -> CellReport:
        return check_cell(matrix, cell, chosen[cell.id], issues, pool, options, say)

    def crashed(cell: Cell, exc: Exception) -> CellReport:
        reason = (log or Log(verbosity=-1)).crash(f"check {cell.id}", exc)
        finding = _error(
            "internal-error", None, reason, "re-run with --debug and report it", "builder"
        )
        return CellReport(id=cell.id, findings=(finding,))

    return proc.parallel_map(one, cells, options.jobs, crashed)


def _fetch(cells: Sequence[Cell], options: Options) -> Fetch | None:
    if options.offline:
        return None
    configured = cells[0].indexes.ca_bundle if cells else None
    return options.fetch or urllib_fetch(options.settings.ca_for(configured))


def check_cell(
    matrix: Matrix,
    cell: Cell,
    profiles: tuple[Profile, ...],
    issues: KnownIssues,
    pool: IndexPool,
    options: Options,
    say: Callable[[str], None] = lambda line: None,
) -> CellReport:
    """All rules on one cell."""
    start = time.monotonic()
    resolved = resolve(matrix, cell, options)
    metadata = pool.for_indexes(
        cell.indexes.index_url, cell.indexes.extra_index_urls, cell.indexes.wheelhouse
    )
    prefetch(metadata, resolved.versions)
    ctx = Context(
        cell=cell,
        where=f"{matrix.path.name}:{cell.line}",
        profiles=profiles,
        versions=resolved.versions,
        resolved=resolved.resolved,
        pinned=exact_pins(cell),
        metadata=metadata,
        issues=issues,
    )
    findings = [*resolved.findings, *(f for rule in RULES for f in rule(ctx))]
    ordered = sorted(dict.fromkeys(findings), key=lambda f: SEVERITIES.index(f.severity))
    say(
        f"check {cell.id}: {len(resolved.versions)} packages ({resolved.origin}), "
        f"{len(ordered)} finding(s), {time.monotonic() - start:.1f}s"
    )
    return CellReport(id=cell.id, findings=tuple(ordered))
