"""The rules of `check`: each a small function from a cell's `Context` to its findings."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from packaging import tags
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from builder.check.known_issues import KnownIssues
from builder.check.metadata import File, Metadata
from builder.check.results import Finding, error
from builder.matrix import Cell
from builder.platforms import PLATFORMS
from builder.profiles import KnownBad, Profile, Rule, written_range

_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_CUDA_LABEL = re.compile(r"^cu(\d{2,3})$")
_CUDA_RUNTIME = re.compile(r"^nvidia-cuda-runtime(?:-cu\d+)?$")


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
            "platform_machine": PLATFORMS[self.cell.base.platform].machine,
            "extra": "",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
        }

    def highest(self, name: str, specifier: SpecifierSet) -> Version | None:
        project = self.metadata.project(name)
        return project.highest(specifier, self.python) if project else None


def supported_tags(python: str, platform: str) -> frozenset[tags.Tag]:
    """The wheel tags an installer accepts for CPython `python` on `platform` (its glibc)."""
    version = tuple(int(part) for part in python.split("."))
    arch, glibc = PLATFORMS[platform].machine, PLATFORMS[platform].glibc_minor
    platforms = [f"manylinux_2_{m}_{arch}" for m in range(glibc, 4, -1)]
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


# ---------------------------------------------------------------- the rules


def rule_python(ctx: Context) -> Iterator[Finding]:
    """python-unsupported: the base's Python against the profiles and every Requires-Python."""
    for p in ctx.profiles:
        if not p.python.contains(ctx.python, prereleases=True):
            yield error(
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
            yield error(
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
            yield error(
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
            yield error(
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
        yield error(
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
        return error(
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
        return error(
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
        yield error(
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
            yield error(
                "cuda-mismatch",
                "torch",
                f"torch {torch} is the CPU-only build, but the cell requires a GPU",
                "use a +cuXYZ build of torch",
                how,
            )
        return
    if wheel[0] != have[0] or wheel[1] > have[1]:
        label = f"cu{have[0]}{have[1]}"
        yield error(
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
    if label or PLATFORMS[ctx.cell.base.platform].machine != "x86_64":
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
                yield error(
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
