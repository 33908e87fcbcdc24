"""The rules of `check`: each a small function from a cell's `Context` to its findings."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from packaging import tags
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from builder.check.fleet import fleet_findings
from builder.check.known_issues import KnownIssues
from builder.check.metadata import File, Metadata
from builder.check.results import Change, Finding, Fix, error
from builder.check.toolchain import toolchain
from builder.matrix import Cell
from builder.platforms import PLATFORMS
from builder.profiles import KnownBad, Profile, Rule, written_range

_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_CUDA_LABEL = re.compile(r"^cu(\d{2,3})$")
_CUDA_RUNTIME = re.compile(r"^nvidia-cuda-runtime(?:-cu\d+)?$")
_CUDA_SUFFIX = re.compile(r"^nvidia-[a-z0-9-]+-cu(\d{2})$")  # nvidia-cudnn-cu13: CUDA 13.x
_CUDA_PINS = ("==", "===", "~=")
_CUDA_BUILD = re.compile(r"\+cu\d{2,3}$")  # a wheel built per CUDA: 2.1.0+cu121
Cuda = tuple[int, int | None]  # (major, minor) of a CUDA release; minor None: only the major


@dataclass(frozen=True, kw_only=True)
class Context:
    """Everything the rules read about one cell."""

    cell: Cell
    where: str  # matrix.yaml:LINE of the cell (`Matrix.where`)
    profiles: tuple[Profile, ...]
    versions: Mapping[str, Version]  # canonical name -> version: resolved, or the exact pins
    resolved: bool  # False: the cell did not resolve, so `versions` holds only its exact pins
    pinned: Mapping[str, Version]  # the cell's own exact pins
    metadata: Metadata
    issues: KnownIssues
    add_to: str = "the matrix `requirements`"  # where a missing requirement goes

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
                _pinned(name, best),
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
    source = f"profile {rule.profile}: {rule.cited}"
    if present is None:
        if ctx.resolved and not rule.optional and rule.soft:
            yield from _untested(ctx, profile, rule, source)
        elif ctx.resolved and not rule.optional:
            yield error(
                "profile-missing-package",
                rule.name,
                f"{profile.name} needs {rule.text}, and the cell does not install {rule.name}",
                f"add `{rule.text}` to {ctx.add_to}",
                source,
                ((_change(rule.name, rule.range, rule.requirement.extras),),),
            )
        elif not ctx.resolved:
            yield from _pin_outside(ctx, profile, rule, source)
        return
    version = ctx.versions[present]
    if rule.requirement.specifier.contains(version, prereleases=True):
        return
    best = ctx.highest(present, rule.requirement.specifier)
    yield _graded(
        rule,
        Finding(
            severity="warning" if rule.optional else "error",
            code="profile-range",
            package=present,
            message=f"{present} {version} is outside {_range_words(profile, rule)}",
            hint=_range_hint(ctx, present, rule.range, best),
            source=source,
            candidates=(*_pinned(present, best), (_change(present, rule.range),)),
        ),
    )


def _whose(profile: Profile, rule: Rule) -> str:
    """`wan2.2's`, or `wan2.2-s2v's (from wan2.2)` for an inherited rule."""
    return f"{profile.name}'s" + (f" (from {rule.profile})" if rule.profile != profile.name else "")


# What a README install line or a maintainer's word was: a tested setup, not a requirement.
_TESTED = {"readme": "README was tested with", "maintainer": "maintainers tested it with"}
_TESTED_NOTE = "a tested-with note, not a requirement: it may work; to match the tested setup, "


def _range_words(profile: Profile, rule: Rule) -> str:
    """`wan2.2's range >=4.49.0,<=4.51.3`, or `what multitalk's README was tested with (==2.4.1)`."""
    if rule.soft:
        tested = _TESTED[str(rule.kind)]
        return f"what {_whose(profile, rule)} {tested} ({rule.range})"
    return f"{_whose(profile, rule)} range {rule.range}"


def _graded(rule: Rule, finding: Finding) -> Finding:
    """A README or maintainer rule's finding is a warning, its hint says why."""
    if not rule.soft:
        return finding
    return replace(finding, severity="warning", hint=_TESTED_NOTE + finding.hint)


def _untested(ctx: Context, profile: Profile, rule: Rule, source: str) -> Iterator[Finding]:
    """A README or maintainer rule's package is missing: a warning, unless a rule from a
    requirements file or the code (which reports it as an error) names it too."""
    if any(not r.soft and not r.optional for r in profile.rules_for(rule.name)):
        return
    yield Finding(
        severity="warning",
        code="profile-missing-package",
        package=rule.name,
        message=f"{_whose(profile, rule)} {_TESTED[str(rule.kind)]} {rule.text}, "
        f"and the cell does not install {rule.name}",
        hint=f"{_TESTED_NOTE}add `{rule.text}` to {ctx.add_to}",
        source=source,
        candidates=((_change(rule.name, rule.range, rule.requirement.extras),),),
    )


def _range_hint(ctx: Context, name: str, range_: str, best: Version | None) -> str:
    if best is None:
        return f"no release of {name} inside {range_} supports Python {ctx.python}"
    fix = f"{name}=={best} (the highest release inside {range_})"
    if ctx.cell.pin(name):
        return f"pin {fix} in the matrix ({ctx.where})"
    if declared := ctx.cell.declared(name):
        return f"change {declared[0]} at {declared[1]} to {fix}"
    return f"add {fix} to {ctx.add_to}"


def _pin_outside(ctx: Context, profile: Profile, rule: Rule, source: str) -> Iterator[Finding]:
    """An unresolved cell's range pin that leaves no release inside the profile's range."""
    pin = ctx.cell.pin(rule.name)
    project = ctx.metadata.project(rule.name)
    if pin is None or project is None:
        return
    wanted = SpecifierSet(pin.specifier)
    if not any(v in wanted and v in rule.requirement.specifier for v in project.releases):
        best = ctx.highest(rule.name, rule.requirement.specifier)
        yield _graded(
            rule,
            error(
                "profile-range",
                rule.name,
                f"the pin {pin.requirement} leaves no release inside {_range_words(profile, rule)}",
                _range_hint(ctx, rule.name, rule.range, best),
                source,
                (*_pinned(rule.name, best), (_change(rule.name, rule.range),)),
            ),
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
    needs = _build_needs(ctx, name, files)
    if needs is not None:
        where = f"{name} {version} has no wheel for this platform ({ctx.platform}), only an sdist"
        row = ctx.issues.needs_build.get(name) or {}
        build = _nvcc_build if needs == "nvcc" else _compiler_build
        return build(ctx, name, version, where, row, row.get("source") or source)
    return Finding(
        severity="info",
        code="sdist-only",
        package=name,
        message=f"{name} {version} installs from its sdist (built during the image build)",
        hint="pure-Python sdists build without extra tools",
        source=source,
    )


def _build_needs(ctx: Context, name: str, files: Sequence[File]) -> str | None:
    """What a release's sdist needs to build: `nvcc` (CUDA kernels), `compiler` (C/C++) or
    None (pure Python, as far as can be told). The needs_build table says it for the packages
    it lists; else "cuda" in the name of a project with no pure wheel, or +cuXYZ wheels in
    other releases, mean nvcc, and compiled wheels for other platforms mean a compiler."""
    row = ctx.issues.needs_build.get(name) or {}
    if row.get("needs") in ("nvcc", "compiler"):
        return row["needs"]
    project = ctx.metadata.project(name)
    every = project.files if project else files
    cuda_named = "cuda" in name and not any(f.is_pure for f in every)
    if cuda_named or any(_CUDA_BUILD.search(f.raw_version or "") for f in every):
        return "nvcc"
    if row or any(f.is_wheel and not f.is_pure for f in files):
        return "compiler"
    return None


def _nvcc_build(
    ctx: Context, name: str, version: Version, where: str, row: Mapping[str, str], source: str
) -> Finding:
    """A CUDA extension's sdist: a warning where the base has nvcc, else an error."""
    base, tools = ctx.cell.base, toolchain(ctx.cell.base)
    wheel = row.get("hint") or (
        f"put a prebuilt {name} wheel for this torch, CUDA and Python in indexes.wheelhouse"
    )
    if base.cuda is not None and tools.nvcc:
        return Finding(
            severity="warning",
            code="needs-build",
            package=name,
            message=f"{where}: a source build of its CUDA kernels on base {base.name} "
            f"({tools.why_nvcc}): slow, and it needs torch at build time",
            hint="build it after torch without build isolation (a `steps` entry at after-deps: "
            f"`pip install --no-build-isolation {name}=={version}`), or {_lower(wheel)}",
            source=source,
        )
    reason = row.get("reason") or "it compiles CUDA kernels with nvcc against the installed torch"
    if base.cuda is None:
        why = f"base {base.name} has no CUDA"
    elif tools.nvcc is False:
        why = f"no nvcc: {tools.why_nvcc}"
    else:
        why = f"no nvcc known: base {base.name}'s tag says neither -devel nor -runtime"
    devel = tools.devel or "a -devel CUDA base"
    return error(
        "needs-build",
        name,
        f"{where}: {reason}; {why}",
        f"{wheel}; or build it on {devel} (nvcc), without build isolation (slow)",
        source,
    )


def _compiler_build(
    ctx: Context, name: str, version: Version, where: str, row: Mapping[str, str], source: str
) -> Finding:
    """A C/C++ extension's sdist: a warning where the base or its apt list has a compiler."""
    base, tools = ctx.cell.base, toolchain(ctx.cell.base)
    if tools.compiler:
        headers = f"python{ctx.python}-dev"
        return Finding(
            severity="warning",
            code="needs-build",
            package=name,
            message=f"{where}: the image build compiles it ({tools.why_compiler}), "
            "which makes builds slower",
            hint=f"the build needs Python {ctx.python}'s headers too ({headers} on a base whose "
            f"Python comes from apt); a {name} wheel in indexes.wheelhouse skips the build",
            source=source,
        )
    reason = row.get("reason") or (
        "it has compiled code, so the image build needs a compiler and its build dependencies"
    )
    why = f"; {tools.why_compiler}" if tools.why_compiler else ""
    return error(
        "needs-build",
        name,
        f"{where}: {reason}{why}",
        row.get("hint")
        or f"add build-essential to bases.{base.name}.apt, pick a {name} release with a "
        "wheel for this platform and Python, or provide one in indexes.wheelhouse",
        source,
    )


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


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
                candidates=_outside(*row.when[0]),
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
            (*_pinned(name, best), (_change(name, f"=={want}.*"),)),
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
    if not _runs_on(wheel, have):
        best = newest_torch_for(ctx, have)
        yield error(
            "cuda-mismatch",
            "torch",
            f"torch {torch}{_torch_origin(ctx)} is built for CUDA {_cuda_text(wheel)}; base "
            f"{base.name} has CUDA {base.cuda}",
            _cuda_hint(have, wheel, best),
            f"{how}; base at {ctx.where}",
            _pinned("torch", best),
        )


def _runs_on(wheel: Cuda, base: tuple[int, int]) -> bool:
    """A wheel built for CUDA X.Y runs on a base with CUDA X.Z, Z >= Y (the driver's minor
    version compatibility); a wheel that declares only its major runs on any base of it."""
    return wheel[0] == base[0] and (wheel[1] is None or wheel[1] <= base[1])


def _cuda_text(cuda: Cuda) -> str:
    return f"{cuda[0]}.x" if cuda[1] is None else f"{cuda[0]}.{cuda[1]}"


def _torch_origin(ctx: Context) -> str:
    """How the cell came to this torch when it does not pin it exactly: it resolved to it."""
    if "torch" in ctx.pinned:
        return ""
    pin, declared = ctx.cell.pin("torch"), ctx.cell.declared("torch")
    asked = pin.requirement if pin else declared[0] if declared else None
    if asked is None:
        return " (pulled in by another requirement: the cell does not ask for torch)"
    return f" (what `{asked}` resolves to: the cell does not pin torch)"


def _cuda_hint(base: tuple[int, int], wheel: Cuda, best: Version | None) -> str:
    index = f"https://download.pytorch.org/whl/cu{base[0]}{base[1]}"
    newest = (
        f"use torch=={best} (the newest torch whose PyPI wheel is built for CUDA "
        f"{base[0]}.x up to {base[0]}.{base[1]})"
        if best
        else f"use a torch build for CUDA {base[0]}.x up to {base[0]}.{base[1]}"
    )
    return (
        f"{newest}, or torch from the per-CUDA index {index}, or a base with CUDA "
        f"{_cuda_text(wheel)} or a newer {wheel[0]}.x"
    )


def newest_torch_for(ctx: Context, cuda: tuple[int, int]) -> Version | None:
    """The newest torch release whose default PyPI wheel runs on `cuda` (torch_tables.yaml)
    and has a file for the cell's Python (when the index says)."""
    project = ctx.metadata.project("torch")
    for build in reversed(ctx.issues.torch_builds):
        if build.cuda is None or not _runs_on(_cuda(build.cuda), cuda):
            continue
        files = project.files_for(build.release) if project else ()
        if not files or any(not f.yanked and f.supports_python(ctx.python) for f in files):
            return build.release
    return None


def torch_cuda(ctx: Context, torch: Version) -> tuple[Cuda, str] | None:
    """The CUDA a torch wheel is built for ((0, 0) for CPU-only), and how that is known: the
    local version label, the wheel's Requires-Dist (`declared_cuda`), else
    builder/data/torch_tables.yaml (the release's row, or the newest of its minor)."""
    label = str(torch.local or "")
    if label == "cpu":
        return (0, 0), f"torch {torch}: local version label"
    if match := _CUDA_LABEL.match(label):
        digits = match[1]
        return (int(digits[:-1]), int(digits[-1])), f"torch {torch}: local version label"
    if label or PLATFORMS[ctx.cell.base.platform].machine != "x86_64":
        return None
    declared = declared_cuda(ctx.metadata.requires_dist("torch", torch) or (), ctx.markers())
    if declared and declared[0][1] is not None:
        return declared[0], f"torch {torch} Requires-Dist {declared[1]}"
    build = ctx.issues.torch_build(torch)
    if build is not None and build.cuda is not None:
        return _cuda(build.cuda), build.source
    return (declared[0], f"torch {torch} Requires-Dist {declared[1]}") if declared else None


def declared_cuda(requires: Iterable[str], markers: Mapping[str, str]) -> tuple[Cuda, str] | None:
    """The CUDA a wheel's Requires-Dist ties it to, and the line that says so (None: none).

    torch has said it three ways: the runtime's wheel (`nvidia-cuda-runtime-cu12==12.8.90`, up
    to 2.10; CUDA 13 wheels drop the suffix, `nvidia-cuda-runtime==13.0.*`), the toolkit's
    meta-package (`cuda-toolkit[cublas,cudart,...]==13.0.2`, from 2.11), and only the major in
    the `-cuNN` suffix of its other nvidia-* libraries (`nvidia-cudnn-cu13`), used when no pin
    says more. `cuda-bindings` is not read: its version is the Python bindings' (12.9.4 beside
    torch 2.10's CUDA 12.8 runtime)."""
    major_only: tuple[Cuda, str] | None = None
    for text in requires:
        req = _requirement(text)
        if req is None or not (req.marker is None or req.marker.evaluate(markers)):
            continue
        name = canonicalize_name(req.name)
        if name == "cuda-toolkit" or _CUDA_RUNTIME.match(name):
            pins = [s.version for s in req.specifier if s.operator in _CUDA_PINS]
            if pins:
                return _cuda(pins[0]), text
        elif major_only is None and (match := _CUDA_SUFFIX.match(name)):
            major_only = (int(match[1]), None), text
    return major_only


def _cuda(version: str) -> Cuda:
    """`13.0.2`, `12.8.*` -> (13, 0), (12, 8); `13` -> (13, None)."""
    parts = version.removesuffix(".*").split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def rule_preinstalled(ctx: Context) -> Iterator[Finding]:
    """preinstalled-replaced: the base ships a package the cell installs at another version.
    reused-conflict: a requirement or axis pin excludes the version a reused base carries."""
    if ctx.cell.base.reuse_preinstalled:
        yield from _reused_conflicts(ctx)
        return
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
                candidates=_pinned(name, Version(version)),
            )


def _reused_conflicts(ctx: Context) -> Iterator[Finding]:
    base = ctx.cell.base
    reused = {name: Version(version) for name, version in base.preinstalled}
    for line in ctx.cell.requirement_lines():
        req = _requirement(line)
        name = canonicalize_name(req.name) if req else ""
        if req is None or name not in reused or not _applies(ctx, req):
            continue
        if not req.specifier.contains(reused[name], prereleases=True):
            yield error(
                "reused-conflict",
                name,
                f"the cell asks for {line} but base {base.name} carries {name} {reused[name]}, "
                "which it reuses (reuse_preinstalled: true), so no other version can be installed",
                f"use {name}=={reused[name]} (the base's), or set reuse_preinstalled: false to "
                "install the cell's own copy",
                f"{ctx.where} (bases.{base.name}.preinstalled)",
                _pinned(name, reused[name]),
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
                    (*_pinned(dep, best), (_change(dep, str(req.specifier)),)),
                )


# What hints suggest, as data: builder/check/fixes.py re-checks each before offering it.
_NEGATED = {">=": "<", ">": "<=", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}


def _change(name: str, specifier: str, extras: Iterable[str] = ()) -> Change:
    return Change(package=name, specifier=specifier, extras=tuple(sorted(extras)))


def _pinned(name: str, version: Version | None) -> tuple[Fix, ...]:
    """The candidate fix `name==version`; none without a version."""
    return ((_change(name, f"=={version}"),),) if version is not None else ()


def _outside(name: str, specifier: SpecifierSet) -> tuple[Fix, ...]:
    """Each way out of a known-bad range, one candidate per clause: `>=4.52` -> `<4.52`."""
    return tuple(
        (_change(name, f"{_NEGATED[s.operator]}{s.version}"),)
        for s in specifier
        if s.operator in _NEGATED
    )


@functools.lru_cache(maxsize=8192)  # the same lines are parsed for every cell and rule
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


def rule_fleet(ctx: Context) -> Iterable[Finding]:
    """fleet-arch, fleet-ptx-jit, fleet-driver, fleet-unknown, fleet-cpu-build: the cell's
    torch build against the GPUs its image will land on (builder/check/fleet.py)."""
    torch = ctx.versions.get("torch")
    found = torch_cuda(ctx, torch) if torch is not None and ctx.cell.fleet else None
    return fleet_findings(ctx.cell, torch, found, ctx.where)


RULES: tuple[Callable[[Context], Iterable[Finding]], ...] = (
    rule_python,
    rule_gpu,
    rule_profiles,
    rule_wheels,
    rule_known_bad,
    rule_companions,
    rule_cuda,
    rule_fleet,
    rule_preinstalled,
    rule_dependencies,
    rule_metadata,
)
