"""A finished `Walk` as a `DockerfileDraft`: the app, the steps, the requirements, the base.

Only now is everything known: which copies pip consumed (requirements files, wheels) and
which are the app; whether a clone is pinned (a checkout of a full commit, else the commit
its branch names today, when `git ls-remote` answers); where each kept RUN sits relative to
the first install and the app (after-apt, after-deps, after-app).
"""

from __future__ import annotations

import os
import re
import shlex
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from packaging.utils import canonicalize_name

from builder.init.basefacts import BaseFacts
from builder.init.model import (
    AppDraft,
    BaseDraft,
    DockerfileDraft,
    Fact,
    GitDraft,
    ImageDraft,
    IndexDraft,
    Req,
    Source,
    StepDraft,
    Untranslated,
)
from builder.init.runs import is_commit
from builder.init.shell import Command
from builder.init.walk import CLONE, CONTEXT, DROP, KEEP, Clone, Copy, Install, Run, Uninstall, Walk

# (url, ref or None for HEAD) -> (commit, "") or (None, why not)
ResolveRef = Callable[[str, str | None], tuple[str | None, str]]
APP_ROOT = PurePosixPath("/app")
_STEP_UNSAFE = re.compile(r"[\n\r\x00]|\{\{|\{%|\{#|\}\}|%\}|#\}|\\$")  # the matrix's step rule
_SLUG = re.compile(r"[^a-z0-9]+")
# What a file named in a step is likely to end with (a relative one needs the RUN's WORKDIR).
RELATIVE_SUFFIXES = (".py", ".sh", ".txt", ".json", ".yaml", ".yml", ".toml", ".cfg", ".ini")


def finish(walk: Walk, facts: BaseFacts, resolve: ResolveRef) -> DockerfileDraft:
    """The draft of one Dockerfile's chain."""
    app = _app(walk, resolve)
    steps, step_of = _steps(walk, app)
    _fill_step_notes(walk, step_of, steps)
    requirements = _requirements(walk, set(_preinstalled_names(facts)))
    base = _base(walk, facts)
    _base_warnings(walk, base, requirements)
    return DockerfileDraft(
        file=walk.chain.files[-1],
        base=base,
        requirements=tuple(requirements),
        indexes=_indexes(walk),
        image=_image(walk, app.origin if app.draft else None),
        app=app.draft,
        steps=tuple(steps),
        untranslated=tuple(sorted(walk.untranslated, key=lambda u: _order(walk, u.source))),
        warnings=tuple(walk.warnings),
    )


def _order(walk: Walk, source: Source) -> tuple[int, int]:
    files = walk.chain.files
    return (files.index(source.file) if source.file in files else len(files), source.line)


# ---------------------------------------------------------------- the app


@dataclass(frozen=True)
class _App:
    """The app, the build position it arrives at, the clone it is (if any) and where the
    Dockerfile put it."""

    draft: AppDraft | None = None
    position: int | None = None
    clone: Clone | None = None
    origin: PurePosixPath | None = None


def _app(walk: Walk, resolve: ResolveRef) -> _App:
    copies = [c for c in walk.copies if not _consumed(walk, c)]
    app_dir = _app_directory(walk, [c for c in copies if c.is_dir])
    pinned = None if app_dir is not None else _pinned_clone(walk, resolve)
    clone = pinned[0] if pinned is not None else None
    files = [
        c for c in copies if not c.is_dir and not (app_dir and c.host.is_relative_to(app_dir.host))
    ]
    origin = app_dir.dest if app_dir else clone.dest if clone else None
    if app_dir is None and clone is None and files:
        app_dir, origin, files = _files_directory(walk, files), _common_parent(files), []
    path = _app_path(walk, app_dir) if app_dir is not None else None
    if path is None and pinned is None:
        return _App()
    app_files = tuple(f for f in (_app_file(walk, c, clone) for c in files) if f is not None)
    positions = [c.position for c in (*([app_dir] if app_dir else []), *files)]
    positions += [clone.position] if clone is not None else []
    draft = AppDraft(path=path, git=_git_draft(pinned) if pinned else None, files=app_files)
    return _App(draft, min(positions), clone, origin)


def _app_directory(walk: Walk, dirs: Sequence[Copy]) -> Copy | None:
    """The first directory copied is the app; another one outside it cannot be."""
    for extra in dirs[1:]:
        if not extra.host.is_relative_to(dirs[0].host):
            walk.note(
                extra.source,
                f"a second app directory ({extra.host.name})",
                "left out: an app is one directory (app.path)",
            )
    return dirs[0] if dirs else None


def _common_parent(files: Sequence[Copy]) -> PurePosixPath | None:
    parents = {c.lands().parent for c in files}
    return parents.pop() if len(parents) == 1 else None


def _consumed(walk: Walk, copy: Copy) -> bool:
    """Copied only for pip: a requirements file, a wheel directory."""
    if copy.host in walk.consumed:
        return True
    return copy.is_dir and _only_consumed(walk, copy)


def _only_consumed(walk: Walk, copy: Copy) -> bool:
    """A directory copied only for what pip read from it (a wheelhouse, requirements)."""
    found = False
    for path in (p for p in copy.host.rglob("*") if p.is_file()):
        if not any(path.is_relative_to(c) for c in walk.consumed):
            return False
        found = True
    return found  # an empty directory is not pip's


def _files_directory(walk: Walk, files: Sequence[Copy]) -> Copy:
    """With files but no directory copied, the app is the directory holding them."""
    host = Path(os.path.commonpath([str(c.host.parent) for c in files]))
    names = ", ".join(c.host.name for c in files)
    shown = os.path.relpath(host, walk.out_dir.resolve())
    walk.note(
        files[0].source,
        f"single files copied ({names}), no directory",
        f"app.path is their directory ({shown}): all of it is copied to /app",
    )
    first = files[0]
    return Copy(host, APP_ROOT, True, False, first.source, min(c.position for c in files))


def _relative(walk: Walk, host: Path, what: str, source: Source) -> str | None:
    relative = os.path.relpath(host, walk.out_dir.resolve())
    if relative == ".." or relative.startswith(("../", "/")):
        walk.note(
            source,
            f"{what} {host}",
            "left out: it is outside the matrix's directory; write the matrix next to the "
            "Dockerfile (-o DIR/matrix.yaml)",
        )
        return None
    return relative


def _app_path(walk: Walk, copy: Copy) -> Fact | None:
    relative = _relative(walk, copy.host, "the app directory", copy.source)
    if relative is None:
        return None
    if copy.dest != APP_ROOT:
        walk.note(
            copy.source,
            f"the app copied to {copy.dest}",
            "copied to /app instead (check image.workdir and the paths in CMD)",
        )
    if (copy.host / ".dockerignore").is_file():
        walk.warn(
            f"{relative}/.dockerignore is not read: app.path copies the whole directory "
            "(render leaves out only __pycache__, *.pyc and .git)",
            copy.source,
        )
    if relative == ".":
        walk.warn(
            "app.path is the matrix's own directory: render outside it (builder render -o "
            "../build), since the output may not lie inside the app",
            copy.source,
        )
    return Fact(relative, (copy.source,))


def _app_file(walk: Walk, copy: Copy, clone: Clone | None) -> Fact | None:
    relative = _relative(walk, copy.host, "the file", copy.source)
    if relative is None:
        return None
    in_clone = clone is not None and copy.lands().parent == clone.dest
    if copy.lands().parent != APP_ROOT and not in_clone:
        walk.note(
            copy.source,
            f"{copy.host.name} copied to {copy.lands()}",
            f"in app.files: copied to /app/{copy.host.name} instead",
        )
    return Fact(relative, (copy.source,))


def _pinned_clone(walk: Walk, resolve: ResolveRef) -> tuple[Clone, str, bool] | None:
    """The first clone that can be app.git: (clone, commit, pinned today)."""
    for clone in walk.clones:
        if urllib.parse.urlsplit(clone.url).scheme not in ("https", "file"):
            walk.note(
                clone.source,
                f"git clone {clone.url}",
                "kept as a step: app.git takes https:// or file:// URLs",
            )
            continue
        if clone.rev and is_commit(clone.rev):
            return clone, clone.rev.lower(), False
        ref = clone.rev or clone.branch
        commit, why = resolve(clone.url, ref)
        what = f"git clone {clone.url} follows {ref or 'its default branch'}, which moves"
        if commit:
            walk.warn(
                f"{what}: app.git is pinned to the commit it names today, {commit}", clone.source
            )
            return clone, commit, True
        walk.warn(
            f"{what}, and could not be pinned ({why}): kept as a step; pin it with "
            "app.git {url, rev: <40-hex commit>}",
            clone.source,
        )
    return None


def _git_draft(found: tuple[Clone, str, bool]) -> GitDraft:
    clone, commit, today = found
    sources = (clone.source, *([clone.rev_source] if clone.rev_source else []))
    note = "the commit the branch names today" if today else ""
    if clone.dest != APP_ROOT:
        note = "; ".join(
            p for p in (note, f"cloned to {clone.dest} in the Dockerfile, /app here") if p
        )
    return GitDraft(url=Fact(clone.url, (clone.source,)), rev=Fact(commit, sources, note=note))


# ---------------------------------------------------------------- steps


def _steps(walk: Walk, app: _App) -> tuple[list[StepDraft], dict[Source, StepDraft]]:
    first_install = min((i.position for i in walk.installs if isinstance(i, Install)), default=None)
    app_parts = set(app.clone.parts) if app.clone is not None else set()
    steps: list[StepDraft] = []
    by_source: dict[Source, StepDraft] = {}
    names: set[str] = set()
    for index, run in enumerate(walk.runs):
        kept, first = _kept(run, index, app_parts)
        if not kept:
            continue
        at = _point(run, app.position, first_install)
        text = _step_text(run, kept, at, app.origin if app.draft else None)
        if _STEP_UNSAFE.search(text):
            walk.note(run.ins.source, "a RUN line that is not one line of shell", "left out")
            continue
        step = StepDraft(
            _unique(_step_name(run, first), names), at, text, run.ins.source, run.secrets
        )
        steps.append(step)
        by_source[run.ins.source] = step
    return steps, by_source


def _kept(run: Run, index: int, app_parts: set[tuple[int, int]]) -> tuple[list[int], int]:
    """The commands of run `index` its step keeps (none: no step), and the first that is
    more than context (the step is named after it). A clone that became the app goes."""
    statuses = [
        (DROP if (index, i) in app_parts else KEEP) if s == CLONE else s
        for i, s in enumerate(run.statuses)
    ]
    kept = [i for i, s in enumerate(statuses) if s in (KEEP, CONTEXT)]
    while kept and statuses[kept[-1]] == CONTEXT and run.commands[kept[-1]].before != "||":
        kept.pop()
    first = next((i for i in kept if statuses[i] == KEEP), None)
    return (kept, first) if first is not None else ([], 0)


def _point(run: Run, app_at: int | None, first_install: int | None) -> str:
    if app_at is not None and run.position > app_at:
        return "after-app"
    if run.has_install or (first_install is not None and run.position > first_install):
        return "after-deps"
    return "after-apt"


def _step_text(run: Run, kept: list[int], at: str, origin: PurePosixPath | None) -> str:
    """The kept commands joined by their own operators, after what the RUN had around it:
    the build arguments and ENV it expands, and its WORKDIR (the app's, /app, is the
    directory after-app steps already run in)."""
    commands = [run.commands[i] for i in kept]
    body = commands[0].text
    for command in commands[1:]:
        body += f" {command.before or '&&'} {command.text}"
    used = {p for c in commands for p in c.parameters}
    prefix = [f"export {k}={shlex.quote(v)}" for k, v in run.exports.items() if k in used]
    workdir = PurePosixPath(run.workdir) if run.workdir else None
    if workdir is not None and workdir == origin:
        workdir = APP_ROOT
    if (
        workdir is not None
        and not (at == "after-app" and workdir == APP_ROOT)
        and _relative_paths(run, commands)
    ):
        quoted = shlex.quote(str(workdir))
        prefix.append(f"mkdir -p {quoted} && cd {quoted}")
    return " && ".join([*prefix, body]) if prefix else body


def _relative_paths(run: Run, commands: Sequence[Command]) -> bool:
    """Whether the commands name a path relative to the directory they run in (so the step
    must `cd` to the RUN's WORKDIR first); a line bashlex could not read may."""
    if run.unparsed:
        return True
    words = [w for c in commands for ws in (c.inner or (c.words,)) for w in ws]
    return any(_looks_relative(w) for w in words)


def _looks_relative(word: str) -> bool:
    if word.startswith(("/", "-", "$", "~")) or "://" in word or "=" in word:
        return False
    return "/" in word or PurePosixPath(word).suffix in RELATIVE_SUFFIXES


def _step_name(run: Run, index: int) -> str:
    """From the command: its program and first argument (`python-apply-patches`)."""
    if run.unparsed:
        return f"line-{run.ins.source.line}"
    words = _words_of(run, index)
    program = PurePosixPath(words[0]).name if words else "step"
    args = [w for w in words[1:] if not w.startswith("-") and "=" not in w and "://" not in w]
    parts = [program, *(PurePosixPath(a).stem for a in args[:1])]
    slug = _SLUG.sub("-", " ".join(parts).lower()).strip("-")[:40].strip("-")
    return slug or "step"


def _words_of(run: Run, index: int) -> tuple[str, ...]:
    command = run.commands[index]
    if command.words:
        return command.words
    if command.pipeline:
        return command.pipeline[0]
    return command.inner[0] if command.inner else tuple(command.text.split()[:2])


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate = f"{name}-{n}"
        n += 1
    taken.add(candidate)
    return candidate


def _fill_step_notes(walk: Walk, step_of: dict[Source, StepDraft], steps: list[StepDraft]) -> None:
    """Notes written while reading a RUN name its step ({step}, {at}), known only now."""
    for run in walk.runs:
        if run.unparsed and run.ins.source in step_of:
            walk.note(
                run.ins.source,
                f"a RUN line bashlex cannot parse ({run.unparsed})",
                "kept whole, as written, in step {step} (at {at}); nothing in it is translated, "
                "and steps run under /bin/sh -eu",
            )
    filled = []
    for note in walk.untranslated:
        step = step_of.get(note.source)
        if "{step}" in note.instead:
            instead = note.instead.format(
                step=step.name if step else "(none)", at=step.at if step else "-"
            )
            note = Untranslated(note.source, note.construct, instead)
        filled.append(note)
    walk.untranslated[:] = filled


# ---------------------------------------------------------------- requirements


@dataclass(frozen=True)
class _Entry:
    text: str
    sources: tuple[Source, ...]
    install: int  # which install event it came from
    note: str = ""


def _requirements(walk: Walk, preinstalled: set[str]) -> list[Req]:
    """pip's installs and uninstalls in order, folded into what the environment ends with:
    a later install of a name replaces an earlier one, a reinstall after an uninstall is one
    pin; lines of one install add up (pip resolves them together)."""
    current: dict[str, list[_Entry]] = {}
    removed: dict[str, Source] = {}
    for n, event in enumerate(walk.installs):
        if isinstance(event, Uninstall):
            removed |= {name: event.source for name in event.names}
            for name in event.names:
                current.pop(name, None)
            continue
        back = {name: removed.pop(name) for name, _, _ in event.reqs if name in removed}
        for name, text, sources in event.reqs:
            _add(
                walk,
                current,
                event,
                n,
                name,
                _Entry(text, sources, n, _entry_note(event, back.get(name))),
            )
        _reinstall_note(walk, event, back)
        _soft(walk, event)
    for name, source in removed.items():
        gone = (
            "the venv does not see the base's packages (isolated)"
            if name in preinstalled
            else "not installed"
        )
        walk.note(source, f"pip uninstall {name}", f"nothing to remove: {gone}")
    return [
        Req(Fact(e.text, e.sources, note=e.note), name) for name, es in current.items() for e in es
    ]


def _add(
    walk: Walk, current: dict[str, list[_Entry]], event: Install, n: int, name: str, entry: _Entry
) -> None:
    entries = current.get(name, [])
    if entries and entries[0].install != n:
        before = " and ".join(e.text for e in entries)
        if before != entry.text:
            walk.note(
                event.source,
                f"{name} installed again: {before} ({entries[0].sources[-1]}), then {entry.text}",
                f"one pin, {entry.text}: the last, as pip left it",
            )
        entries = []
    if entry.text not in [e.text for e in entries]:
        entries.append(entry)
    current[name] = entries


def _entry_note(event: Install, uninstalled: Source | None) -> str:
    if uninstalled is not None:
        return f"reinstalled after the pip uninstall at {uninstalled}"
    return "a soft install in the Dockerfile" if event.soft else ""


def _reinstall_note(walk: Walk, event: Install, back: dict[str, Source]) -> None:
    if not back:
        return
    pins = ", ".join(t for name, t, _ in event.reqs if name in back)
    where = ", ".join(str(s) for s in dict.fromkeys(back.values()))
    walk.note(
        event.source,
        f"pip uninstall {', '.join(back)} ({where}), then pip install {pins}",
        f"one pin each ({pins}): the venv only ever has these copies",
    )


def _soft(walk: Walk, event: Install) -> None:
    if event.soft and event.reqs:
        names = ", ".join(dict.fromkeys(t for _, t, _ in event.reqs))
        walk.note(
            event.source,
            f"a soft install ({event.soft}): {names}",
            "hard requirements: the lock must resolve them, and the build fails without them",
        )


# ---------------------------------------------------------------- indexes, image, base


def _indexes(walk: Walk) -> IndexDraft:
    installs = [i for i in walk.installs if isinstance(i, Install) and i.reqs]
    chosen = {i.index for i in installs}
    index_url = walk.index_urls[0] if walk.index_urls else None
    extra = list(walk.extra_index_urls)
    if len(chosen) == 1 and None not in chosen and index_url is None:
        first = installs[0]
        index_url = Fact(str(first.index), tuple(i.source for i in installs))
    else:
        for install in installs:
            if install.index is not None:
                walk.note(
                    install.source,
                    f"--index-url {install.index} for this install only",
                    "an extra index for every package: uv takes a package from the first index "
                    "that has it, so others may come from there too",
                )
                extra.append(Fact(install.index, (install.source,)))
    for other in walk.index_urls[1:]:
        if index_url is not None and other.value != index_url.value:
            walk.warn(
                f"a second index URL {other.value}: the matrix has one; kept {index_url.value}",
                other.sources[0],
            )
    unique = {f.value: f for f in reversed(extra)}
    ordered = [unique[f.value] for f in extra if unique.get(f.value) is f]
    extras = tuple((f, ()) for f in ordered)
    return IndexDraft(index_url=index_url, extra=extras, wheelhouse=tuple(walk.wheelhouse))


def _image(walk: Walk, origin: PurePosixPath | None) -> ImageDraft:
    return ImageDraft(
        env=tuple(walk.env.items()),
        workdir=_workdir(walk, origin),
        entrypoint=walk.entrypoint,
        cmd=walk.cmd,
        expose=tuple({p: (p, s) for p, s in walk.expose}.values()),
        user=walk.user,
        healthcheck=walk.healthcheck,
    )


def _workdir(walk: Walk, origin: PurePosixPath | None) -> Fact | None:
    """The last WORKDIR; the app's directory in the Dockerfile is /app here."""
    fact = walk.workdir_fact
    if fact is None or fact.value == "/":
        return None
    if origin is not None and origin != APP_ROOT and PurePosixPath(fact.value) == origin:
        return replace(
            fact, value=str(APP_ROOT), note=f"the app's directory ({origin} in the Dockerfile)"
        )
    return fact


def _preinstalled_names(facts: BaseFacts) -> list[str]:
    return ["torch"] if facts.torch else []


def _base(walk: Walk, facts: BaseFacts) -> BaseDraft:
    root = walk.chain.root
    source = root.source
    python = _python(walk, facts, source)
    cuda = None
    if facts.cuda:
        cuda = Fact(facts.cuda, (source,), guessed=True)
    elif not facts.cpu:
        walk.warn(
            f"could not tell the CUDA of {root.image} from its tag: wrote none (a CPU base)", source
        )
    preinstalled = (Fact(f"torch=={facts.torch}", (source,), guessed=True),) if facts.torch else ()
    platform = Fact(root.platform, (source,)) if root.platform else None
    return BaseDraft(
        name="",
        image=Fact(root.image, (source,), note=f"a {facts.kind} image" if facts.kind else ""),
        python=python,
        cuda=cuda,
        platform=platform,
        apt=tuple(walk.apt),
        preinstalled=preinstalled,
        kind=facts.kind,
    )


def _python(walk: Walk, facts: BaseFacts, source: Source) -> Fact:
    if walk.python is not None:
        return walk.python
    if facts.python:
        why = facts.why_python if facts.why_python and facts.why_python != "in the tag" else ""
        return Fact(facts.python, (source,), guessed=True, note=why)
    walk.warn(f"could not tell the Python of {walk.chain.root.image}: wrote 3.11", source)
    return Fact("3.11", (source,), guessed=True, note="a guess: the tag does not say")


def _base_warnings(walk: Walk, base: BaseDraft, requirements: Sequence[Req]) -> None:
    names = {canonicalize_name(r.name) for r in requirements}
    if base.preinstalled and "torch" not in names:
        torch = base.preinstalled[0].value
        walk.warn(
            f"the base carries {torch} (from the tag) and the Dockerfile installs no torch: "
            "the matrix's venv is isolated from the base, so torch comes only from what "
            f"requires it (as pip replaced the base's); add {torch} to requirements to keep "
            "the base's version, or set reuse_preinstalled: true",
            base.image.sources[0],
        )
    if base.kind == "runtime":
        for source in walk.no_build_isolation:
            walk.warn(
                "a source build (--no-build-isolation) on a -runtime base, which has no nvcc: "
                "that build fails there",
                source,
            )


def with_name(draft: DockerfileDraft, name: str) -> DockerfileDraft:
    return replace(draft, base=replace(draft.base, name=name))
