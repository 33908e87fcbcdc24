"""Following a repository's local imports from its entry files.

Each reached file is read once and parsed once (`parse`); its imports are local (a file or
directory of the repository), standard library or third-party. The reach of a file is the
strongest path to it from the entries, a path being as strong as its weakest import: a
module-level import in a module that is itself imported lazily is lazy. The reach of each
third-party import, missing local module and CUDA call is its own combined with its file's.

Only regular files inside the repository are read: a FIFO, a symlink loop or a link out of the
repository is skipped with a warning note.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from builder.scan.model import (
    GpuSite,
    LocalPackage,
    Location,
    MissingLocal,
    Note,
    Reach,
    SyntaxProblem,
)
from builder.scan.parse import Parsed, Statement, Target, parse


@dataclass(frozen=True)
class _Site:
    """An import, a missing module or a CUDA call of one file, before the file's reach."""

    kind: str  # "third", "missing", "gpu"
    line: int
    reach: Reach
    what: str  # the module, or the call
    detail: str = ""  # why it is missing, or the CUDA call's context


@dataclass
class _File:
    rel: str
    edges: list[tuple[Path, Reach]] = field(default_factory=list)
    sites: list[_Site] = field(default_factory=list)


@dataclass(frozen=True)
class Walked:
    """What the walk found, every reach already combined along the strongest paths."""

    files: tuple[str, ...]
    local: tuple[LocalPackage, ...]
    stdlib: tuple[str, ...]
    sites: dict[str, set[Location]]  # third-party module -> where
    missing: tuple[MissingLocal, ...]
    gpu: tuple[GpuSite, ...]
    syntax: tuple[SyntaxProblem, ...]
    warnings: tuple[Note, ...]
    namespaces: tuple[str, ...]  # directories without __init__.py that imports reach


@dataclass
class _Repository:
    """The repository's file system, each question asked once (a big repository asks the same
    ones thousands of times)."""

    root: Path
    _modules: dict[tuple[str, ...], Path | None] = field(default_factory=dict)
    _local_tops: dict[tuple[str, bool], bool] = field(default_factory=dict)
    _listings: dict[Path, dict[str, list[str]]] = field(default_factory=dict)

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def module_path(self, parts: Sequence[str]) -> Path | None:
        """What `import a.b` loads from the root, in the import system's order, or None."""
        key = tuple(parts)
        if key not in self._modules:
            self._modules[key] = self._find(key)
        return self._modules[key]

    def _find(self, parts: tuple[str, ...]) -> Path | None:
        base = self.root.joinpath(*parts)
        names = self._names(base.parent)
        inside = self._names(base) if base.name in names.get("dirs", ()) else {}
        if "__init__.py" in inside.get("files", ()) and (base / "__init__.py").is_file():
            return base / "__init__.py"
        for extension in _extensions(base.name, names.get("files", ())):
            return base.parent / extension
        if (
            f"{base.name}.py" in names.get("files", ())
            and (module := base.parent / f"{base.name}.py").is_file()
        ):
            return module
        return base if base.name in names.get("dirs", ()) else None  # a namespace package

    def _names(self, directory: Path) -> dict[str, list[str]]:
        """A directory's entries: `files` and `dirs` (through links, as imports see them)."""
        if directory not in self._listings:
            listing: dict[str, list[str]] = {"files": [], "dirs": []}
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        try:
                            kind = "dirs" if entry.is_dir() else "files"
                        except OSError:
                            kind = "files"
                        listing[kind].append(entry.name)
            except OSError:
                pass
            self._listings[directory] = listing
        return self._listings[directory]

    def is_local_top(self, top: str, dotted: bool) -> bool:
        """Whether an absolute import of `top` is the repository's own. A directory without
        `__init__.py` counts when it holds Python files, or when the import names something
        inside it (`import src.audio.model`): then a missing part is a missing local module,
        never a distribution of that name."""
        key = (top, dotted)
        if key not in self._local_tops:
            found = self.module_path((top,))
            if found is None or found.is_file():
                self._local_tops[key] = found is not None
            else:
                # A directory linked from outside is local too, but is not searched (it may be /).
                outside = not Path(os.path.realpath(found)).is_relative_to(self.root)
                self._local_tops[key] = dotted or outside or _has_python(found)
        return self._local_tops[key]


def _extensions(name: str, files: Sequence[str]) -> list[str]:
    """Compiled extension modules: `name.so`, `name.cpython-311-x86_64-linux-gnu.so`, `.pyd`."""
    prefix = f"{name}."
    return sorted(f for f in files if f.startswith(prefix) and f.endswith((".so", ".pyd")))


def _has_python(directory: Path) -> bool:
    return any(True for _ in directory.rglob("*.py"))


def _absolute(statement: Statement, package: tuple[str, ...]) -> tuple[str, ...] | None:
    """The absolute dotted parts a statement imports, or None when it climbs above the root."""
    tail = tuple(statement.module.split(".")) if statement.module else ()
    if statement.level == 0:
        return tail
    if statement.level > len(package):
        return None
    return package[: len(package) - statement.level + 1] + tail


def _is_package(path: Path) -> bool:
    return path.is_dir() or path.name == "__init__.py"


class _Unread(Exception):
    """Why a module file is not read."""


def _read_module(root: Path, path: Path) -> bytes:
    """A module file's bytes, when it is a regular file inside the repository (links are
    followed only within it); `_Unread` otherwise."""
    try:
        real = path.resolve(strict=True)
    except RuntimeError:  # a symlink loop, before Python 3.13
        raise _Unread("a symbolic link loop") from None
    except OSError as exc:
        loop = exc.errno == errno.ELOOP
        raise _Unread("a symbolic link loop" if loop else f"cannot read: {exc.strerror}") from None
    if not real.is_relative_to(root):
        raise _Unread(f"links to {real}, outside the repository")
    if not real.is_file():
        raise _Unread("not a regular file")
    try:
        return real.read_bytes()
    except OSError as exc:
        raise _Unread(f"cannot read: {exc.strerror}") from None


@dataclass
class _Walk:
    """The walk in progress (internal and mutable; `Walked` is what it returns)."""

    repo: _Repository
    stdlib_names: frozenset[str]
    target: Target
    files: dict[Path, _File] = field(default_factory=dict)
    stdlib: set[str] = field(default_factory=set)
    syntax: list[SyntaxProblem] = field(default_factory=list)
    warnings: list[Note] = field(default_factory=list)
    local_tops: set[str] = field(default_factory=set)

    def visit(self, path: Path) -> _File:
        """Read and parse one file; record what it imports."""
        rel = self.repo.rel(path)
        info = _File(rel)
        try:
            source = _read_module(self.repo.root, path)
        except _Unread as exc:
            self.warnings.append(Note("warning", f"{rel}: skipped: {exc}"))
            return info
        parsed = parse(source, rel, self.target)
        if isinstance(parsed, SyntaxProblem):
            self.syntax.append(parsed)
        elif isinstance(parsed, Note):
            self.warnings.append(parsed)
        else:
            self._record(info, parsed)
        self.files[path] = info
        return info

    def _record(self, info: _File, parsed: Parsed) -> None:
        for statement in parsed.statements:
            self._statement(info, statement)
        for call in parsed.cuda:
            info.sites.append(_Site("gpu", call.line, Reach.MODULE, call.call, call.context))

    def _statement(self, info: _File, statement: Statement) -> None:
        parts = _absolute(statement, PurePosixPath(info.rel).parent.parts)
        written = "." * statement.level + statement.module
        line, reach = statement.line, statement.reach
        if parts is None:
            why = "relative import beyond the repository root"
            info.sites.append(_Site("missing", line, reach, written, why))
        elif statement.level or self.repo.is_local_top(parts[0], len(parts) > 1):
            self.local_tops.add(parts[0])
            reached, missing = self._resolve_local(parts, statement.names)
            info.edges += [(path, reach) for path in reached]
            info.sites += [_Site("missing", line, reach, written, why) for why in missing]
        elif parts[0] in self.stdlib_names:
            self.stdlib.add(parts[0])
        else:
            module = ".".join(parts)
            for name in [f"{module}.{n}" for n in statement.names] or [module]:
                info.sites.append(_Site("third", line, reach, name))

    def _resolve_local(
        self, parts: tuple[str, ...], names: tuple[str, ...]
    ) -> tuple[list[Path], list[str]]:
        """The files and namespace directories an import loads, and why parts are missing."""
        reached: list[Path] = []
        for end in range(1, len(parts) + 1):
            hit = self.repo.module_path(parts[:end])
            if hit is None:
                return reached, [f"no module or package at {'/'.join(parts[:end])}"]
            reached.append(hit)
        if not _is_package(reached[-1]):
            return reached, []  # names are attributes of a module
        missing: list[str] = []
        namespace = reached[-1].is_dir()
        for name in (n for n in names if n != "*"):
            # `from pkg import x`: x is a submodule when a file says so, else an attribute
            hit = self.repo.module_path((*parts, name))
            if hit is not None:
                reached.append(hit)
            elif namespace:  # a namespace package has no attributes to import
                missing.append(f"no module or package at {'/'.join((*parts, name))}")
        return reached, missing


def walk(
    root: Path, entries: Sequence[Path], stdlib_names: frozenset[str], target: Target
) -> Walked:
    """Follow the local imports from the entries, then combine reaches along the paths."""
    state = _Walk(_Repository(root), stdlib_names, target)
    namespaces: set[Path] = set()
    queue, seen = deque(entries), set(entries)
    while queue:
        for path, _ in state.visit(queue.popleft()).edges:
            if path.is_dir():
                namespaces.add(path)
            elif path.suffix == ".py" and path not in seen:
                seen.add(path)
                queue.append(path)
    reaches = _reaches(state.files, entries)
    return _collect(state, reaches, namespaces)


def _reaches(files: dict[Path, _File], entries: Sequence[Path]) -> dict[Path, Reach]:
    """Each file's strongest path from the entries (a widest-path search over 4 levels)."""
    best = {path: Reach.MODULE for path in entries if path in files}
    queue = deque(best)
    while queue:
        path = queue.popleft()
        for target, reach in files[path].edges:
            if target not in files:
                continue
            through = best[path].through(reach)
            if target not in best or through.strength > best[target].strength:
                best[target] = through
                queue.append(target)
    return best


def _collect(state: _Walk, reaches: dict[Path, Reach], namespaces: set[Path]) -> Walked:
    sites: dict[str, set[Location]] = {}
    missing: list[MissingLocal] = []
    gpu: list[GpuSite] = []
    for path, info in state.files.items():
        own = reaches.get(path, Reach.GUARDED)
        for site in info.sites:
            reach = own.through(site.reach)
            if site.kind == "third":
                sites.setdefault(site.what, set()).add(Location(info.rel, site.line, reach))
            elif site.kind == "missing":
                missing.append(MissingLocal(info.rel, site.line, site.what, site.detail, reach))
            else:
                gpu.append(GpuSite(info.rel, site.line, site.what, site.detail, own))
    rel = state.repo.rel
    files = sorted(info.rel for info in state.files.values())
    return Walked(
        files=tuple(files),
        local=_local_packages(state, files),
        stdlib=tuple(sorted(state.stdlib)),
        sites=sites,
        missing=tuple(sorted(set(missing), key=lambda m: (m.file, m.line, m.module, m.reason))),
        gpu=tuple(sorted(gpu, key=lambda g: (g.file, g.line, g.call))),
        syntax=tuple(sorted(state.syntax, key=lambda s: (s.file, s.line))),
        warnings=tuple(sorted(state.warnings, key=lambda note: note.message)),
        namespaces=tuple(sorted(rel(path) for path in namespaces)),
    )


def _local_packages(state: _Walk, files: Sequence[str]) -> tuple[LocalPackage, ...]:
    """The local top-level names: those of the reached files, and those imports named."""
    counts: dict[str, int] = {}
    for rel in files:
        top = rel.split("/")[0]
        counts[top] = counts.get(top, 0) + 1
    tops = {top.removesuffix(".py") for top in counts}
    found = []
    for name in sorted(tops | state.local_tops):
        path = state.repo.module_path((name,))
        if path is None:
            continue
        package = path.is_dir() or path.name == "__init__.py"
        where = path.parent if path.name == "__init__.py" else path
        count = counts.get(name, 0) + counts.get(f"{name}.py", 0)
        found.append(
            LocalPackage(
                name=name,
                path=state.repo.rel(where),
                kind="package" if package else "module",
                namespace=path.is_dir(),
                files=count,
            )
        )
    return tuple(found)
