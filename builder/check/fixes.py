"""Fixes that hold: every fix `check` suggests is tried on the cell before it is offered.

A rule's finding carries the fixes its hint suggests (`Finding.candidates`, data from
builder/check/rules.py). `offer_fixes` widens them into a few more (the same package inside the
rule's range bounded by the limits of the other rules: the known-bad rows that would fire, the
profiles' ranges; the next major; the index's highest releases inside), applies each to the cell
(`apply`: the axis pin or requirement line of the package rewritten, else the line added) and
re-checks the variant: resolution with the same resolver, then every rule. A fix is offered
(`Finding.fix`) only when the finding is gone and no error was added. When no single-package fix
holds, the errors a failed one adds are repaired in turn (their own candidates; for a conflict,
the range the other side declares), a few rounds, and the joint fix that holds is offered; else
the hint says that none was found and what was tried.

Re-checks are memoised per cell by the variant's inputs digest (uv's answers are cached on disk
under the same digest), run a few at once, and capped per cell (`MAX_RECHECKS`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from builder.check.results import Change, Finding, Fix
from builder.check.rules import Context
from builder.lock import inputs_digest
from builder.matrix import Cell

MAX_SINGLES = 5  # single-package candidates tried per finding
MAX_REPAIRED = 2  # failed candidates whose added errors are repaired into a joint fix
REPAIR_ROUNDS = 3  # repairs of one joint fix, each a re-check
MAX_RECHECKS = 32  # re-checks per cell, all findings together
WAVE = 2  # candidates re-checked at once, after the hint's own
FINDINGS_AT_ONCE = 4

_DEPENDS = re.compile(r"\bdepends? on (?P<req>[A-Za-z0-9][^;]*)$")
_REQUIRES = re.compile(r"^you require (?P<req>[A-Za-z0-9].*)$")
# uv offline, a package missing from its cache: not a conflict, though uv words it as one
_OFFLINE = re.compile(
    r"(\S+) (?:needs to be downloaded from a registry|was not found in the cache)"
)


@dataclass(frozen=True, kw_only=True)
class Recheck:
    """What the rules say about a variant of the cell."""

    findings: tuple[Finding, ...]
    versions: Mapping[str, Version]
    resolved: bool


@dataclass(frozen=True, kw_only=True)
class Trial:
    """One fix, applied and re-checked (`result` None: not re-checked, the cell's limit)."""

    fix: Fix
    result: Recheck | None
    cleared: bool = False  # the finding is gone
    added: tuple[Finding, ...] = ()  # errors the fix adds
    warned: tuple[Finding, ...] = ()  # warnings it adds: a fix that holds, but a worse one
    unverified: str = ""  # why the re-check cannot judge the fix

    @property
    def holds(self) -> bool:
        return self.result is not None and self.cleared and not self.added and not self.unverified

    @property
    def clean(self) -> bool:
        return self.holds and not self.warned


@dataclass
class Rechecks:
    """The re-checks of one cell's variants: memoised by inputs digest, at most `limit`."""

    cell: Cell
    run: Callable[[Cell], Recheck]
    limit: int = MAX_RECHECKS
    _memo: dict[str, Future[Recheck]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def count(self) -> int:
        return len(self._memo)

    def of(self, fix: Fix) -> Recheck | None:
        """The re-check of the cell with `fix` applied; None once the limit is spent."""
        variant = apply(self.cell, fix)
        key = inputs_digest(variant, "uv")
        with self._lock:
            future, owner = self._memo.get(key), False
            if future is None:
                if len(self._memo) >= self.limit:
                    return None
                future = self._memo[key] = Future()
                owner = True
        if owner:
            try:
                future.set_result(self.run(variant))
            except BaseException as exc:
                future.set_exception(exc)
                raise
        return future.result()


# ---------------------------------------------------------------- applying a fix


def apply(cell: Cell, fix: Fix) -> Cell:
    """The cell with each change made: its axis pin gets the new specifier and every
    requirement line naming the package is rewritten (extras and markers kept); a package the
    cell does not name yet is added to its requirements."""
    for change in fix:
        cell = _applied(cell, change)
    return cell


def _applied(cell: Cell, change: Change) -> Cell:
    name = canonicalize_name(change.package)
    pin = cell.pin(name)
    pins = tuple(replace(p, specifier=change.specifier) if p is pin else p for p in cell.pins)
    origins = tuple((_rewritten(text, name, change), where) for text, where in cell.origins)
    requirements = tuple(_rewritten(text, name, change) for text in cell.requirements)
    if pin is None and requirements == cell.requirements:
        requirements += (change.line,)
        origins += ((change.line, "fix"),)
    return replace(cell, pins=pins, requirements=requirements, origins=origins)


def _rewritten(text: str, name: str, change: Change) -> str:
    req = _requirement(text)
    if req is None or canonicalize_name(req.name) != name:
        return text
    extras = sorted(req.extras | set(change.extras))
    marker = f"; {req.marker}" if req.marker else ""
    return f"{req.name}{'[' + ','.join(extras) + ']' if extras else ''}{change.specifier}{marker}"


def _requirement(text: str) -> Requirement | None:
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None


# ---------------------------------------------------------------- judging a re-check


def _key(finding: Finding) -> tuple[str, str | None, str]:
    """The same problem across variants, whose messages name other versions: a conflict is
    one problem whoever uv names first; a known-bad row is known by its source."""
    if finding.code == "unresolvable":
        return finding.code, None, ""
    return finding.code, finding.package, finding.source if finding.code == "known-bad" else ""


def _trial(target: Finding, originals: Sequence[Finding], fix: Fix, rechecks: Rechecks) -> Trial:
    """The fix applied and re-checked, against the cell's own findings (`originals`)."""
    result = rechecks.of(fix)
    if result is None:
        return Trial(fix=fix, result=None, unverified="over the cell's re-check limit")
    errors = {_key(f) for f in originals if f.severity == "error"}
    seen = {_key(f) for f in originals}
    added = tuple(f for f in result.findings if f.severity == "error" and _key(f) not in errors)
    return Trial(
        fix=fix,
        result=result,
        cleared=_key(target) not in {_key(f) for f in result.findings},
        added=added,
        warned=tuple(f for f in result.findings if f.severity == "warning" and _key(f) not in seen),
        unverified=_unverified(fix, result, added),
    )


def _unverified(fix: Fix, result: Recheck, added: Sequence[Finding]) -> str:
    """Why the re-check says nothing about the fix: the index could not answer, or the
    versions it gives ignore the fix (a resolver that did not honour the requirements)."""
    for f in result.findings:
        if f.code == "index-unreachable":  # the variant's versions are its exact pins only
            return f.message.split(";")[0]
    for f in added:
        if f.code == "unresolvable" and (miss := _OFFLINE.search(f.message)):
            return f"offline, and uv's cache lacks {miss[1]}"
    if not result.resolved:
        return ""
    for change in fix:
        have = result.versions.get(canonicalize_name(change.package))
        if have is None or not _spec(change.specifier).contains(have, prereleases=True):
            return f"the resolution ignores {change.line}"
    return ""


def _why(trial: Trial) -> str:
    """What went wrong with a fix, in a few words."""
    if trial.unverified:
        return f"not re-checked: {trial.unverified}"
    if not trial.cleared:
        return "the finding stays"
    if trial.holds:
        return f"it adds the warning {_named(trial.warned)}"
    return f"it adds {_named(trial.added)}"


def _named(findings: Sequence[Finding]) -> str:
    return ", ".join(
        dict.fromkeys(
            f"{f.code} ({f.package})" if f.package and f.code != "unresolvable" else f.code
            for f in findings
        )
    )


# ---------------------------------------------------------------- candidates


def _spec(text: str) -> SpecifierSet:
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        return SpecifierSet("==0+invalid")  # admits nothing a real release has


def range_text(spec: SpecifierSet) -> str:
    """A range as people write it: its floor, exclusions, then its ceiling; looser bounds go."""
    lows = [s for s in spec if s.operator in (">=", ">")]
    highs = [s for s in spec if s.operator in ("<", "<=")]
    low = max(lows, key=lambda s: (Version(s.version), s.operator == ">"), default=None)
    high = min(highs, key=lambda s: (Version(s.version), s.operator == "<="), default=None)
    rest = sorted((s for s in spec if s not in lows and s not in highs), key=str)
    return ",".join(str(s) for s in (low, *rest, high) if s is not None)


def _exact(change: Change) -> bool:
    specs = list(_spec(change.specifier))
    return len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version


def _admitted(ctx: Context, change: Change) -> frozenset[Version] | None:
    """The index's final releases (with a file for the cell's Python) that the change allows;
    None when the index is not known."""
    project = ctx.metadata.project(change.package)
    if project is None:
        return None
    spec = _spec(change.specifier)
    return frozenset(
        v
        for v, files in project.releases.items()
        if spec.contains(v, prereleases=_exact(change))
        and (not v.is_prerelease or _exact(change))
        and any(not f.yanked and f.supports_python(ctx.python) for f in files)
    )


def _limits(ctx: Context, name: str) -> Iterator[list[SpecifierSet]]:
    """What the other rules allow of `name` beside the cell's other versions, each as its
    alternatives: a known-bad row that would fire gives its ways out, a profile its range."""
    rows = (*ctx.issues.known_bad, *(row for p in ctx.profiles for row in p.known_bad))
    for row in dict.fromkeys(rows):
        spec = dict(row.when).get(name)
        if spec is not None and _fires_beside(ctx, row.when, row.profile, name):
            yield [SpecifierSet(_negated(s)) for s in spec if _negated(s)]
    for profile in ctx.profiles:
        for rule in profile.requirements:
            if name in rule.names and rule.requirement.specifier:
                yield [rule.requirement.specifier]


def _fires_beside(
    ctx: Context,
    when: Sequence[tuple[str, SpecifierSet]],
    facts: Sequence[tuple[str, Sequence[object]]],
    name: str,
) -> bool:
    """A known-bad row's conditions other than `name`'s hold for the cell."""
    others = all(
        n in ctx.versions and spec.contains(ctx.versions[n], prereleases=True)
        for n, spec in when
        if n != name
    )
    return others and (
        not facts or any(all(getattr(p, k) in v for k, v in facts) for p in ctx.profiles)
    )


_NEGATED = {">=": "<", ">": "<=", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}


def _negated(spec: Specifier) -> str:
    return f"{_NEGATED[spec.operator]}{spec.version}" if spec.operator in _NEGATED else ""


def _bounded(ctx: Context, change: Change) -> Change:
    """The change's range inside every other rule's limits (a row's first way out that
    leaves a release)."""
    spec = _spec(change.specifier)
    for alternatives in _limits(ctx, canonicalize_name(change.package)):
        for option in alternatives:
            trial = replace(change, specifier=str(spec & option))
            if _admitted(ctx, trial) != frozenset():
                spec &= option
                break
    return replace(change, specifier=range_text(spec))


def _below_next_major(change: Change) -> Change | None:
    """`>=4.49.0` -> `>=4.49.0,<5`: an open range kept in its major release."""
    spec = _spec(change.specifier)
    lows = [Version(s.version) for s in spec if s.operator in (">=", ">")]
    if not lows or any(s.operator in ("<", "<=", "==", "~=", "===") for s in spec):
        return None
    return replace(change, specifier=range_text(spec & SpecifierSet(f"<{max(lows).major + 1}")))


def candidates(ctx: Context, finding: Finding) -> list[Fix]:
    """The fixes to try for a finding, the hint's own first, then the rule's range bounded by
    the other rules, the range as the rule states it, the range kept in its major release,
    and the highest releases inside; none admitting the same releases twice."""
    given = [_normalised(fix) for fix in finding.candidates or _conflict_fixes(ctx, finding, ())]
    ranges = [fix[0] for fix in given if len(fix) == 1 and not _exact(fix[0])]
    bounded = [_bounded(ctx, c) for c in ranges]
    majors = [m for c in ranges if (m := _below_next_major(_bounded(ctx, c))) is not None]
    exact = [
        replace(c, specifier=f"=={v}")
        for c in bounded
        for v in sorted(_admitted(ctx, c) or (), reverse=True)[:2]
    ]
    ordered = [*given[:1], *((c,) for c in bounded), *given[1:], *((c,) for c in (*majors, *exact))]
    return _distinct(ctx, ordered, given)[:MAX_SINGLES]


def _normalised(fix: Fix) -> Fix:
    return tuple(
        c if _exact(c) or not c.specifier else replace(c, specifier=range_text(_spec(c.specifier)))
        for c in fix
    )


def _distinct(ctx: Context, fixes: Iterable[Fix], given: Sequence[Fix]) -> list[Fix]:
    """Fixes that differ in what they let the resolver pick; a made-up one that allows no
    release is dropped (the rule's own are tried whatever the index says)."""
    seen: set[object] = set()
    out = []
    for fix in fixes:
        admitted = _admitted(ctx, fix[0]) if len(fix) == 1 else None
        if admitted == frozenset() and fix not in given:
            continue
        key = (fix[0].package, admitted) if admitted is not None else fix
        if key not in seen:
            seen.add(key)
            out.append(fix)
    return out


def _conflict_fixes(ctx: Context, finding: Finding, originals: Sequence[Finding]) -> list[Fix]:
    """For a conflict uv named: each requirement of the cell that another side's declared
    range excludes, moved into that range (`transformers==4.51.3 depends on
    huggingface-hub>=0.30.0,<1.0`); then, for a requirement uv names, the fixes the cell's
    own findings about it suggest."""
    if finding.code != "unresolvable":
        return []
    named = {
        canonicalize_name(r.name)
        for line in ctx.cell.requirement_lines()
        if (r := _requirement(line))
    }
    premises = finding.message.removeprefix("the requirements conflict: ").split("; ")
    out: list[Fix] = []
    for premise in premises:
        if (m := _DEPENDS.search(premise)) and (req := _requirement(m["req"])):
            name = canonicalize_name(req.name)
            if name in named and req.specifier:
                out.append((Change(package=name, specifier=range_text(req.specifier)),))
        elif originals and (m := _REQUIRES.match(premise)) and (req := _requirement(m["req"])):
            name = canonicalize_name(req.name)
            out += [fix for f in originals if f.package == name for fix in f.candidates[:1]]
    return out


# ---------------------------------------------------------------- the search


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What the search found for one finding: the fix that holds (joint: several packages)
    and the trials that failed."""

    held: Trial | None
    failed: tuple[Trial, ...]
    joint: bool = False


def search(
    ctx: Context, finding: Finding, originals: Sequence[Finding], rechecks: Rechecks
) -> Outcome | None:
    """Try the finding's candidates (the hint's own alone, then a few at a time), then repair
    the errors the first failures add, into a joint fix. None: nothing to try."""
    tries = candidates(ctx, finding)
    if not tries:
        return None
    trials: list[Trial] = []
    for wave in (tries[:1], *(tries[i : i + WAVE] for i in range(1, len(tries), WAVE))):
        trials += _parallel(lambda fix: _trial(finding, originals, fix, rechecks), wave)
        if any(t.clean for t in trials) or trials[0].unverified:
            break  # a fix holds, or re-checks cannot answer here (offline, over the limit)
    held = next((t for t in trials if t.clean), None) or next((t for t in trials if t.holds), None)
    if held is not None or trials[0].unverified:
        return Outcome(held=held, failed=tuple(t for t in trials if t is not held))
    for trial in [t for t in trials if t.cleared and not t.unverified][:MAX_REPAIRED]:
        joint = _repaired(ctx, finding, originals, trial, rechecks)
        if joint is not None:
            return Outcome(held=joint, failed=tuple(trials), joint=True)
    return Outcome(held=None, failed=tuple(trials))


def _repaired(
    ctx: Context,
    finding: Finding,
    originals: Sequence[Finding],
    trial: Trial,
    rechecks: Rechecks,
) -> Trial | None:
    """Add to a fix what repairs the errors it adds, a few rounds; the joint fix, if it holds."""
    for _ in range(REPAIR_ROUNDS):
        more = _repairs(ctx, trial, originals)
        if not more:
            return None
        trial = _trial(finding, originals, trial.fix + more, rechecks)
        if trial.holds:
            return trial
        if not trial.cleared or trial.unverified:
            return None
    return None


def _repairs(ctx: Context, trial: Trial, originals: Sequence[Finding]) -> Fix:
    """For each error a fix adds, its first suggestion about a package the fix leaves alone
    (a conflict can need one per package it names)."""
    taken = {canonicalize_name(c.package) for c in trial.fix}
    out: list[Change] = []
    for added in trial.added:
        for fix in (*added.candidates, *_conflict_fixes(ctx, added, originals)):
            names = {canonicalize_name(c.package) for c in fix}
            if not names & taken:
                taken |= names
                out += _normalised(fix)
    return tuple(out)


def _parallel(work: Callable[[Fix], Trial], fixes: Sequence[Fix]) -> list[Trial]:
    if len(fixes) <= 1:
        return [work(fix) for fix in fixes]
    with ThreadPoolExecutor(max_workers=len(fixes)) as pool:
        return list(pool.map(work, fixes))


# ---------------------------------------------------------------- offering


def offer_fixes(ctx: Context, findings: Sequence[Finding], rechecks: Rechecks) -> list[Finding]:
    """The findings with `fix` set where one holds, and hints that offer nothing that failed.
    Errors are searched before warnings (they share the cell's re-check limit)."""
    todo = [
        f
        for severity in ("error", "warning")
        for f in findings
        if f.severity == severity and (f.candidates or f.code == "unresolvable")
    ]

    def one(finding: Finding) -> Finding:
        outcome = search(ctx, finding, findings, rechecks)
        return finding if outcome is None else _offered(ctx, finding, outcome)

    with ThreadPoolExecutor(max_workers=FINDINGS_AT_ONCE) as pool:
        done = dict(zip(todo, pool.map(one, todo), strict=True))
    return [done.get(f, f) for f in findings]


def _offered(ctx: Context, finding: Finding, outcome: Outcome) -> Finding:
    """The finding with its fix and a hint that stands by it."""
    failed_own = [
        t
        for t in outcome.failed
        if _names(finding.hint, t.fix) and not t.unverified and t is not outcome.held
    ]
    held = outcome.held
    if held is None:
        return replace(finding, fix=None, hint=_none_held(finding, outcome, bool(failed_own)))
    shown = "; ".join(_placed(ctx, c, held) for c in held.fix)
    if outcome.joint:
        hint = f"no single-package fix holds (tried {_tried(outcome.failed)}); together: {shown}"
    elif failed_own:
        hint = f"{shown}; re-checked, unlike {_tried(failed_own)}"
    else:
        hint = finding.hint
    warned = _named(held.warned)
    return replace(
        finding,
        fix=held.fix,
        hint=hint + (f" (the fix adds a warning: {warned})" if warned else ""),
    )


def _none_held(finding: Finding, outcome: Outcome, own_failed: bool) -> str:
    """No fix holds: say so and what was tried; an untried hint is kept, saying why."""
    first = outcome.failed[0] if outcome.failed else None
    if first is not None and first.unverified and not own_failed:
        return f"{finding.hint} (not re-checked: {first.unverified})"
    found = "no single-package fix holds, and no joint fix was found"
    kept = "" if own_failed else f"; {finding.hint}"
    return f"{found} (tried {_tried(outcome.failed)}){kept}"


def _tried(trials: Sequence[Trial]) -> str:
    return "; ".join(f"{' + '.join(c.line for c in t.fix)}: {_why(t)}" for t in trials[:3])


def _names(hint: str, fix: Fix) -> bool:
    """The hint itself suggests this fix (`transformers==5.20.2` is in its text)."""
    line = re.escape(fix[0].line)
    return len(fix) == 1 and bool(re.search(rf"(?<![\w.-]){line}(?![\w*]|\.\d)", hint))


def _placed(ctx: Context, change: Change, trial: Trial) -> str:
    """Where the change goes, and what a range resolved to in the re-check."""
    cell, name = ctx.cell, canonicalize_name(change.package)
    if cell.pin(name):
        where = f"pin {change.line} in the matrix ({ctx.where})"
    elif declared := cell.declared(name):
        where = f"change {declared[0]} at {declared[1]} to {change.line}"
    else:
        where = f"add {change.line} to {ctx.add_to}"
    version = trial.result.versions.get(name) if trial.result and trial.result.resolved else None
    return where if version is None or _exact(change) else f"{where}, which resolves to {version}"
