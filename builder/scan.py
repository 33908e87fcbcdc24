"""`builder scan`: follow a repository's imports statically and check them against its requirements.

Nothing is executed: files are parsed with `ast`, starting at the entry files and following local
modules transitively. Each import is standard library (names of the running interpreter), local (a
file of the repository) or third-party; third-party imports are mapped to distributions (installed
metadata first, then a table of known mismatches, else the import name) and compared with the
requirements files, read by pip's rules (`-r` and `-c` includes, `#egg=` names, and markers
evaluated for the target Python on Linux).

Only regular files inside the repository are read: a FIFO, a symlink loop or a link out of the
repository is skipped, and a file Python's parser cannot take (undecodable in its PEP 263
encoding, or nested too deeply) is not parsed; each is a warning note and the scan goes on.

`--format json` prints one object:

    {
      "path": str,                                 # PATH as given
      "python": {"target": "3.11", "stdlib_names_from": "3.11"},
      "entries": [str],                            # relative to PATH, like every "file" below
      "files": [str],                              # local .py files reached, sorted
      "stdlib": [str],                             # top-level standard-library modules, sorted
      "third_party": [{
        "import": str,                             # top-level name, or a known dotted one
        "distributions": [str],                    # canonical names; several = ambiguous
        "ambiguous": bool,
        "source": "installed" | "table" | "name",  # where the mapping came from
        "reach": "module" | "lazy" | "optional",   # the strongest way it is reached
        "locations": [{"file": str, "line": int, "reach": str}]
      }],
      "missing_local": [{"file": str, "line": int, "module": str, "reason": str}],
      "syntax_errors": [{"file": str, "line": int, "message": str}],
      "notes": [{"level": "info" | "warning", "message": str}],  # warning: file skipped
      "requirements": null | {                     # null without --requirements
        "files": [str],
        "declared": [str],                         # PEP 508, those for the target
        "undeclared": {"required" | "lazy" | "optional":
                       [{"import": str, "distributions": [str]}]},
        "transitive": [{"import": str, "distribution": str, "via": str}],
        "unused": [str]                            # declared, never imported
      },
      "exit_code": 0 | 1
    }

Exit code 1 when a local module is missing, or when an import reached at module level is not
declared (with --requirements); bad input raises `InputError` (exit code 2).
"""

from __future__ import annotations

import ast
import errno
import glob
import io
import json
import os
import sys
import tokenize
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from importlib import metadata
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, cast

from packaging.markers import UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pip_requirements_parser import SCHEME_RE, RequirementsFile

from builder.errors import InputError
from builder.files import read_text, write_atomic

# Import names whose distribution is named differently. Dotted keys win over installed metadata,
# which only knows top-level names (`google` belongs to many distributions).
KNOWN_DISTRIBUTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "Crypto": ("pycryptodome",),
        "OpenSSL": ("pyopenssl",),
        "PIL": ("pillow",),
        "attr": ("attrs",),
        "bs4": ("beautifulsoup4",),
        "cv2": ("opencv-python", "opencv-python-headless"),
        "dateutil": ("python-dateutil",),
        "decord": ("decord", "decord2", "eva-decord"),
        "docx": ("python-docx",),
        "dotenv": ("python-dotenv",),
        "faiss": ("faiss-cpu", "faiss-gpu"),
        "ffmpeg": ("ffmpeg-python", "python-ffmpeg"),
        "fitz": ("pymupdf",),
        "flash_attn": ("flash-attn",),
        "git": ("gitpython",),
        "google.protobuf": ("protobuf",),
        "jose": ("python-jose",),
        "jwt": ("pyjwt",),
        "magic": ("python-magic",),
        "multipart": ("python-multipart",),
        "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
        "optimum.quanto": ("optimum-quanto",),
        "pkg_resources": ("setuptools",),
        "pptx": ("python-pptx",),
        "ruamel.yaml": ("ruamel-yaml",),
        "serial": ("pyserial",),
        "skimage": ("scikit-image",),
        "sklearn": ("scikit-learn",),
        "usb": ("pyusb",),
        "yaml": ("pyyaml",),
        "zmq": ("pyzmq",),
    }
)

# Handlers that swallow a failed import: the guarded import is optional.
_IMPORT_ERROR_CATCHERS = frozenset(
    {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
)


class Reach(str, Enum):
    """How an import is reached when the program runs."""

    MODULE = "module"  # at import time of a module
    LAZY = "lazy"  # inside a function or method body
    OPTIONAL = "optional"  # guarded by a try that catches ImportError


_STRENGTH = {Reach.OPTIONAL: 0, Reach.LAZY: 1, Reach.MODULE: 2}
_UNDECLARED_KEY = {Reach.MODULE: "required", Reach.LAZY: "lazy", Reach.OPTIONAL: "optional"}


@dataclass(frozen=True)
class Environment:
    """What the scan knows about Python: stdlib names and installed distributions."""

    version: str  # "3.11": the interpreter the stdlib names come from
    stdlib: frozenset[str]
    packages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # import -> dists
    requires: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # dist -> Requires-Dist


@dataclass(frozen=True, kw_only=True)
class ScanOptions:
    path: Path
    entries: tuple[Path, ...] = ()  # default: every .py at the top of path
    requirements: tuple[Path, ...] = ()
    python: str | None = None  # target "X.Y"; default: the environment's version


@dataclass(frozen=True)
class Location:
    file: str
    line: int
    reach: Reach


@dataclass(frozen=True)
class ThirdParty:
    name: str
    distributions: tuple[str, ...]
    source: str
    locations: tuple[Location, ...]

    @property
    def reach(self) -> Reach:
        return max((loc.reach for loc in self.locations), key=_STRENGTH.__getitem__)


@dataclass(frozen=True)
class MissingLocal:
    file: str
    line: int
    module: str
    reason: str
    reach: Reach


@dataclass(frozen=True)
class SyntaxProblem:
    file: str
    line: int
    message: str


@dataclass(frozen=True)
class Note:
    level: str
    message: str


@dataclass(frozen=True)
class Transitive:
    name: str
    distribution: str
    via: str


@dataclass(frozen=True)
class RequirementsCheck:
    files: tuple[str, ...]
    declared: tuple[Requirement, ...]
    undeclared: tuple[ThirdParty, ...]
    transitive: tuple[Transitive, ...]
    unused: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        undeclared: dict[str, list[dict[str, Any]]] = {k: [] for k in _UNDECLARED_KEY.values()}
        for item in self.undeclared:
            entry = {"import": item.name, "distributions": list(item.distributions)}
            undeclared[_UNDECLARED_KEY[item.reach]].append(entry)
        return {
            "files": list(self.files),
            "declared": [str(req) for req in self.declared],
            "undeclared": undeclared,
            "transitive": [
                {"import": t.name, "distribution": t.distribution, "via": t.via}
                for t in self.transitive
            ],
            "unused": list(self.unused),
        }


@dataclass(frozen=True)
class ScanReport:
    path: str
    python: str
    stdlib_from: str
    entries: tuple[str, ...]
    files: tuple[str, ...]
    stdlib: tuple[str, ...]
    third_party: tuple[ThirdParty, ...]
    missing_local: tuple[MissingLocal, ...]
    syntax_errors: tuple[SyntaxProblem, ...]
    notes: tuple[Note, ...]
    requirements: RequirementsCheck | None

    @property
    def exit_code(self) -> int:
        check = self.requirements
        undeclared = check is not None and any(t.reach is Reach.MODULE for t in check.undeclared)
        missing = any(m.reach is not Reach.OPTIONAL for m in self.missing_local)
        return 1 if missing or undeclared else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "python": {"target": self.python, "stdlib_names_from": self.stdlib_from},
            "entries": list(self.entries),
            "files": list(self.files),
            "stdlib": list(self.stdlib),
            "third_party": [_third_party_json(t) for t in self.third_party],
            "missing_local": [vars(m) | {"reach": m.reach.value} for m in self.missing_local],
            "syntax_errors": [vars(s).copy() for s in self.syntax_errors],
            "notes": [vars(n).copy() for n in self.notes],
            "requirements": self.requirements.to_json() if self.requirements else None,
            "exit_code": self.exit_code,
        }


def _third_party_json(item: ThirdParty) -> dict[str, Any]:
    return {
        "import": item.name,
        "distributions": list(item.distributions),
        "ambiguous": len(item.distributions) > 1,
        "source": item.source,
        "reach": item.reach.value,
        "locations": [
            {"file": x.file, "line": x.line, "reach": x.reach.value} for x in item.locations
        ],
    }


# --- parsing: import statements and how they are reached -------------------------------------


@dataclass(frozen=True)
class _Statement:
    module: str  # as written after `import` / `from`, without the leading dots
    names: tuple[str, ...]  # the names of a from-import; () for `import x`
    level: int
    line: int
    reach: Reach


# Python 3.11 added `try: ... except* E:`, a node of its own.
_TRIES = tuple(getattr(ast, name) for name in ("Try", "TryStar") if hasattr(ast, name))


def _imports(tree: ast.Module) -> list[_Statement]:
    """A module's import statements with their reach; `if TYPE_CHECKING:` blocks are skipped.

    The tree is walked with an explicit stack: a 400-branch elif chain is 400 nested `If`
    nodes, too deep for a recursive visitor."""
    found: list[_Statement] = []
    stack: list[tuple[ast.AST, Reach]] = [(tree, Reach.MODULE)]
    while stack:
        node, reach = stack.pop()
        found += _statements(node, reach)
        stack += reversed(_children(node, reach))
    return found


def _statements(node: ast.AST, reach: Reach) -> list[_Statement]:
    if isinstance(node, ast.Import):
        return [_Statement(alias.name, (), 0, node.lineno, reach) for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        names = tuple(alias.name for alias in node.names)
        return [_Statement(node.module or "", names, node.level, node.lineno, reach)]
    return []


def _children(node: ast.AST, reach: Reach) -> list[tuple[ast.AST, Reach]]:
    """The nodes under `node`, each with the reach its imports get."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        # A try around the def does not guard the body: that runs later, when called.
        return [(child, Reach.LAZY) for child in node.body]
    if isinstance(node, _TRIES):
        return _try_children(cast(ast.Try, node), reach)
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        return [(child, reach) for child in node.orelse]
    return [(child, reach) for child in ast.iter_child_nodes(node)]


def _try_children(node: ast.Try, reach: Reach) -> list[tuple[ast.AST, Reach]]:
    catches = any(_catches_import_error(handler.type) for handler in node.handlers)
    guarded = Reach.OPTIONAL if catches else reach
    rest = [*node.handlers, *node.orelse, *node.finalbody]
    return [(child, guarded) for child in node.body] + [(child, reach) for child in rest]


def _catches_import_error(handler: ast.expr | None) -> bool:
    if handler is None:
        return True
    if isinstance(handler, ast.Tuple):
        return any(_catches_import_error(element) for element in handler.elts)
    name = handler.id if isinstance(handler, ast.Name) else getattr(handler, "attr", "")
    return name in _IMPORT_ERROR_CATCHERS


def _is_type_checking(test: ast.expr) -> bool:
    name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
    return name == "TYPE_CHECKING"


def _parse(source: bytes, rel: str) -> list[_Statement] | SyntaxProblem | Note:
    """The import statements of one file, its syntax error, or a warning that it was not parsed."""
    try:
        text = _decode(source)
        with warnings.catch_warnings():  # invalid escapes and the like are not our findings
            warnings.simplefilter("ignore")
            tree = ast.parse(text, filename=rel)
    except UnicodeDecodeError as exc:
        reason = f"not valid {exc.encoding} text (byte {exc.start}: {exc.reason})"
        return Note("warning", f"{rel}: not parsed: {reason}")
    except SyntaxError as exc:
        return SyntaxProblem(rel, exc.lineno or 0, exc.msg)
    except ValueError as exc:  # null bytes, before Python 3.12
        return SyntaxProblem(rel, 0, str(exc))
    except (RecursionError, MemoryError) as exc:  # the parser's own limits
        reason = f"too deeply nested or too large for Python's parser ({type(exc).__name__})"
        return Note("warning", f"{rel}: not parsed: {reason}")
    return _imports(tree)


def _decode(source: bytes) -> str:
    """Source text in the encoding it declares (PEP 263), UTF-8 by default."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    except SyntaxError:  # undecodable first lines or an unknown codec: say where UTF-8 fails
        encoding = "utf-8"
    return source.decode(encoding)


# --- resolving: local, stdlib or third-party ---------------------------------------------------


@dataclass(frozen=True)
class _Local:
    reached: tuple[Path, ...]  # module files and namespace-package directories
    missing: tuple[str, ...]  # reasons, one per part that resolves to nothing


def _module_path(root: Path, parts: Sequence[str]) -> Path | None:
    """What `import a.b` loads from root, in the import system's order, or None."""
    base = root.joinpath(*parts)
    for candidate in (base / "__init__.py", *_extensions(base), base.parent / f"{base.name}.py"):
        if candidate.is_file():
            return candidate
    return base if base.is_dir() else None  # an implicit namespace package


def _extensions(base: Path) -> list[Path]:
    """Compiled extension modules: `name.so`, `name.cpython-311-x86_64-linux-gnu.so`, `.pyd`."""
    found = base.parent.glob(f"{glob.escape(base.name)}.*")
    return sorted(path for path in found if path.suffix in (".so", ".pyd"))


def _is_local_top(root: Path, top: str) -> bool:
    found = _module_path(root, (top,))
    if found is None or found.is_file():
        return found is not None
    # A directory linked from outside is local too, but is not searched (it may be `/`).
    return not Path(os.path.realpath(found)).is_relative_to(root) or any(found.rglob("*.py"))


def _is_package(path: Path) -> bool:
    return path.is_dir() or path.name == "__init__.py"


def _absolute(statement: _Statement, package: tuple[str, ...]) -> tuple[str, ...] | None:
    """The absolute dotted parts a statement imports, or None when it climbs above the root."""
    tail = tuple(statement.module.split(".")) if statement.module else ()
    if statement.level == 0:
        return tail
    if statement.level > len(package):
        return None
    return package[: len(package) - statement.level + 1] + tail


def _resolve_local(root: Path, parts: tuple[str, ...], names: tuple[str, ...]) -> _Local:
    reached: list[Path] = []
    for end in range(1, len(parts) + 1):
        hit = _module_path(root, parts[:end])
        if hit is None:
            return _Local(tuple(reached), (f"no module or package at {'/'.join(parts[:end])}",))
        reached.append(hit)
    if not _is_package(reached[-1]):
        return _Local(tuple(reached), ())  # names are attributes of a module
    return _resolve_names(root, parts, names, reached)


def _resolve_names(
    root: Path, parts: tuple[str, ...], names: tuple[str, ...], reached: list[Path]
) -> _Local:
    """`from pkg import x`: x is a submodule when a file says so, else an attribute of pkg."""
    missing: list[str] = []
    namespace = reached[-1].is_dir()
    for name in (n for n in names if n != "*"):
        hit = _module_path(root, (*parts, name))
        if hit is not None:
            reached.append(hit)
        elif namespace:  # a namespace package has no attributes to import
            missing.append(f"no module or package at {'/'.join((*parts, name))}")
    return _Local(tuple(reached), tuple(missing))


def _third_party_modules(parts: tuple[str, ...], names: tuple[str, ...]) -> list[str]:
    module = ".".join(parts)
    return [f"{module}.{name}" for name in names] if names else [module]


# --- walking the graph -------------------------------------------------------------------------


@dataclass
class _Walk:
    """What the walk has seen so far (internal and mutable; the report is frozen)."""

    root: Path
    stdlib_names: frozenset[str]
    files: list[str] = field(default_factory=list)
    stdlib: set[str] = field(default_factory=set)
    sites: dict[str, set[Location]] = field(default_factory=dict)
    missing: list[MissingLocal] = field(default_factory=list)
    syntax: list[SyntaxProblem] = field(default_factory=list)
    warnings: list[Note] = field(default_factory=list)  # files not read or not parsed
    namespaces: set[str] = field(default_factory=set)

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def visit(self, file: Path) -> list[Path]:
        """Record one file's imports; return the local files and directories they reach."""
        rel = self.rel(file)
        try:
            source = _read_module(self.root, file)
        except _Unread as exc:
            self.warnings.append(Note("warning", f"{rel}: skipped: {exc}"))
            return []
        self.files.append(rel)
        parsed = _parse(source, rel)
        if isinstance(parsed, SyntaxProblem):
            self.syntax.append(parsed)
        elif isinstance(parsed, Note):
            self.warnings.append(parsed)
        else:
            return [path for statement in parsed for path in self.record(rel, statement)]
        return []

    def record(self, rel: str, statement: _Statement) -> tuple[Path, ...]:
        parts = _absolute(statement, PurePosixPath(rel).parent.parts)
        written = "." * statement.level + statement.module
        if parts is None:
            reason = "relative import beyond the repository root"
            self.missing.append(MissingLocal(rel, statement.line, written, reason, statement.reach))
        elif statement.level or _is_local_top(self.root, parts[0]):
            local = _resolve_local(self.root, parts, statement.names)
            line, reach = statement.line, statement.reach
            self.missing += [MissingLocal(rel, line, written, m, reach) for m in local.missing]
            return local.reached
        elif parts[0] in self.stdlib_names:
            self.stdlib.add(parts[0])
        else:
            for module in _third_party_modules(parts, statement.names):
                where = Location(rel, statement.line, statement.reach)
                self.sites.setdefault(module, set()).add(where)
        return ()


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


def _walk(root: Path, entries: Sequence[Path], stdlib_names: frozenset[str]) -> _Walk:
    walk = _Walk(root, stdlib_names)
    queue, seen = deque(entries), set(entries)
    while queue:
        for path in walk.visit(queue.popleft()):
            if path.is_dir():
                walk.namespaces.add(walk.rel(path))
            elif path.suffix == ".py" and path not in seen:
                seen.add(path)
                queue.append(path)
    return walk


# --- distributions and requirements --------------------------------------------------------------


def distributions_for(
    module: str, packages: Mapping[str, tuple[str, ...]]
) -> tuple[str, str, tuple[str, ...]]:
    """(import name, source, canonical distributions) for a third-party module."""
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
        dotted = ".".join(parts[:end])
        if dotted in KNOWN_DISTRIBUTIONS:
            return dotted, "table", KNOWN_DISTRIBUTIONS[dotted]
    top = parts[0]
    if packages.get(top):
        names = sorted({canonicalize_name(name) for name in packages[top]})
        return top, "installed", tuple(names)
    if top in KNOWN_DISTRIBUTIONS:
        return top, "table", KNOWN_DISTRIBUTIONS[top]
    return top, "name", (canonicalize_name(top),)


def _third_party(
    sites: Mapping[str, set[Location]], packages: Mapping[str, tuple[str, ...]]
) -> tuple[ThirdParty, ...]:
    grouped: dict[tuple[str, str, tuple[str, ...]], set[Location]] = {}
    for module, locations in sites.items():
        grouped.setdefault(distributions_for(module, packages), set()).update(locations)
    items = [
        ThirdParty(name, dists, source, tuple(sorted(locs, key=_location_key)))
        for (name, source, dists), locs in grouped.items()
    ]
    return tuple(sorted(items, key=lambda item: item.name.lower()))


def _location_key(location: Location) -> tuple[str, int, int]:
    return location.file, location.line, _STRENGTH[location.reach]


def read_requirements(path: Path, python: str | None = None) -> tuple[Requirement, ...]:
    """What a requirements file declares, by pip's rules (pip-requirements-parser).

    `-r` files are read too, relative to the file that includes them; `-c` constraint files
    are checked but declare nothing; each file is read once, so includes may form a cycle.
    With `python`, only the requirements whose markers hold for it on Linux are kept."""
    declared: list[Requirement] = []
    queue, seen = deque([(path, False)]), {os.path.realpath(path)}
    while queue:
        current, constraints = queue.popleft()
        parsed = _requirements_file(current)
        if not constraints:
            declared += filter(None, (_declared(item, python) for item in parsed.requirements))
        for included, is_constraint in _includes(current, parsed.options):
            if os.path.realpath(included) not in seen:
                seen.add(os.path.realpath(included))
                queue.append((included, is_constraint))
    return tuple(declared)


def _requirements_file(path: Path) -> Any:
    """One requirements file, parsed without its includes; bad lines are InputErrors."""
    read_text(path, "requirements file")  # a regular UTF-8 file, or an error naming it
    parsed = RequirementsFile.from_file(str(path), include_nested=False)
    for bad in parsed.invalid_lines:
        hint = "write `name[extras] specifier ; marker` or `name @ url`"
        reason = bad.error_message.splitlines()[0]
        message = f"{path}:{bad.line_number}: not a requirement: {bad.line!r} ({reason})"
        raise InputError(message, hint)
    return parsed


def _includes(path: Path, options: Iterable[Any]) -> Iterator[tuple[Path, bool]]:
    """(file, is a constraints file) for each `-r` and `-c` line, relative to `path`."""
    for option in options:
        for key, flag in (("requirements", "-r"), ("constraints", "-c")):
            for name in option.options.get(key, ()):
                if SCHEME_RE.search(name):  # pip's test for an include to download
                    where = f"{path}:{option.line_number}: {flag} {name}"
                    raise InputError(
                        f"{where}: cannot follow a URL", "download it, pass it with -r"
                    )
                yield path.parent / name, flag == "-c"


def _declared(item: Any, python: str | None) -> Requirement | None:
    """The requirement a parsed line declares, with its marker, if that holds for `python`.
    A URL or editable line names its distribution with `#egg=name`; without a name (`-e .`)
    it declares nothing we can know."""
    if item.req is None:
        return None
    req = Requirement(str(item.req))
    if req.url is None and item.link is not None:
        req.url, req.specifier = item.link.url_without_fragment, SpecifierSet()
    req.marker = item.marker
    try:
        return req if python is None or _applies(req, python) else None
    except (UndefinedComparison, UndefinedEnvironmentName) as exc:
        where = f"{item.filename}:{item.line_number}"
        raise InputError(f"{where}: marker {item.marker}: {exc}", "see PEP 508 markers") from None


def _target_markers(python: str) -> dict[str, str]:
    """PEP 508 marker values for CPython `python` on Linux, the platform of the images."""
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
    }


def _applies(req: Requirement, python: str, extra: str = "") -> bool:
    return req.marker is None or req.marker.evaluate(_target_markers(python) | {"extra": extra})


def _dependencies(
    req: Requirement, requires: Mapping[str, tuple[str, ...]], python: str
) -> list[Requirement]:
    found = []
    for text in requires.get(canonicalize_name(req.name), ()):
        try:
            dep = Requirement(text)
        except InvalidRequirement:
            continue  # broken installed metadata is not the scanned repository's problem
        try:
            if any(_applies(dep, python, extra) for extra in ("", *sorted(req.extras))):
                found.append(dep)
        except (UndefinedComparison, UndefinedEnvironmentName):
            continue  # likewise
    return found


def _transitive_roots(
    declared: Sequence[Requirement], env: Environment, python: str
) -> dict[str, str]:
    """Each distribution installed as a dependency of a declared one -> that declared one."""
    via: dict[str, str] = {}
    for root in sorted(declared, key=lambda req: canonicalize_name(req.name)):
        queue = [root]
        while queue:
            for dep in _dependencies(queue.pop(), env.requires, python):
                name = canonicalize_name(dep.name)
                if name not in via:
                    via[name] = canonicalize_name(root.name)
                    queue.append(dep)
    return via


def check_requirements(
    files: Sequence[Path], third_party: Sequence[ThirdParty], env: Environment, python: str
) -> RequirementsCheck:
    declared = tuple(req for path in files for req in read_requirements(path, python))
    names = {canonicalize_name(req.name) for req in declared}
    via = _transitive_roots(declared, env, python)
    undeclared: list[ThirdParty] = []
    transitive: list[Transitive] = []
    for item in third_party:
        if names.intersection(item.distributions):
            continue
        indirect = [dist for dist in item.distributions if dist in via]
        if indirect:
            transitive.append(Transitive(item.name, indirect[0], via[indirect[0]]))
        else:
            undeclared.append(item)
    imported = {dist for item in third_party for dist in item.distributions}
    unused = sorted(names - imported)
    paths = tuple(str(path) for path in files)
    return RequirementsCheck(paths, declared, tuple(undeclared), tuple(transitive), tuple(unused))


# --- the scan ----------------------------------------------------------------------------------


def current_environment() -> Environment:
    """The running interpreter's stdlib names and installed distributions."""
    requires: dict[str, tuple[str, ...]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            requires.setdefault(canonicalize_name(name), tuple(dist.requires or ()))
    packages = {name: tuple(dists) for name, dists in metadata.packages_distributions().items()}
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return Environment(version, frozenset(sys.stdlib_module_names), packages, requires)


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


def _notes(walk: _Walk, python: str, env: Environment) -> tuple[Note, ...]:
    notes = []
    if python != env.version:
        text = f"standard-library names are from Python {env.version}; the target is {python}"
        notes.append(Note("info", text))
    for directory in sorted(walk.namespaces):
        text = (
            f"{directory}/ has no __init__.py: an implicit namespace package, importable only "
            "when the repository root is on sys.path"
        )
        notes.append(Note("info", text))
    return (*notes, *sorted(walk.warnings, key=lambda note: note.message))


def scan(options: ScanOptions, env: Environment) -> ScanReport:
    """Scan a repository; raise InputError for bad input."""
    python = _target_python(options.python, env)
    root = _root(options.path)
    entries = _entries(root, options.entries)
    walk = _walk(root, entries, env.stdlib)
    third_party = _third_party(walk.sites, env.packages)
    check = None
    if options.requirements:
        check = check_requirements(options.requirements, third_party, env, python)
    return ScanReport(
        path=str(options.path),
        python=python,
        stdlib_from=env.version,
        entries=tuple(walk.rel(path) for path in entries),
        files=tuple(sorted(walk.files)),
        stdlib=tuple(sorted(walk.stdlib)),
        third_party=third_party,
        missing_local=tuple(sorted(walk.missing, key=lambda m: (m.file, m.line, m.module))),
        syntax_errors=tuple(sorted(walk.syntax, key=lambda s: (s.file, s.line))),
        notes=_notes(walk, python, env),
        requirements=check,
    )


# --- output ------------------------------------------------------------------------------------


def render(report: ScanReport, fmt: str) -> str:
    """The report as JSON or as text; both come from `to_json`."""
    data = report.to_json()
    return json.dumps(data, indent=2) if fmt == "json" else render_text(data)


def render_text(data: Mapping[str, Any]) -> str:
    lines = [
        f"scan of {data['path']} (python {data['python']['target']})",
        f"entries: {', '.join(data['entries'])}",
        f"local files ({len(data['files'])}): {', '.join(data['files'])}",
        f"standard library ({len(data['stdlib'])}): {', '.join(data['stdlib'])}",
    ]
    lines += _third_party_text(data["third_party"])
    lines += _section("missing local modules", [_missing_text(m) for m in data["missing_local"]])
    lines += _section("syntax errors", [_problem_text(s) for s in data["syntax_errors"]])
    lines += _section("notes", [f"{n['level']}: {n['message']}" for n in data["notes"]])
    if data["requirements"] is not None:
        lines += _requirements_text(data["requirements"])
    lines += ["", f"result: {_summary(data)}"]
    return "\n".join(lines)


def _section(title: str, items: Sequence[str]) -> list[str]:
    return ["", f"{title}:", *(f"  {item}" for item in items)] if items else []


def _third_party_text(items: Sequence[Mapping[str, Any]]) -> list[str]:
    dists = [
        " | ".join(item["distributions"]) + (" (ambiguous)" if item["ambiguous"] else "")
        for item in items
    ]
    width = max((len(item["import"]) for item in items), default=0)
    dist_width = max(map(len, dists), default=0)
    rows = []
    for item, dist in zip(items, dists, strict=True):
        where = ", ".join(f"{loc['file']}:{loc['line']}" for loc in item["locations"])
        rows.append(f"{item['import']:<{width}}  {item['reach']:<8}  {dist:<{dist_width}}  {where}")
    return _section(f"third-party imports ({len(items)})", rows)


def _missing_text(item: Mapping[str, Any]) -> str:
    reach = "" if item["reach"] == Reach.MODULE.value else f" ({item['reach']})"
    return f"{item['file']}:{item['line']}: {item['module']}: {item['reason']}{reach}"


def _problem_text(item: Mapping[str, Any]) -> str:
    return f"{item['file']}:{item['line']}: {item['message']}"


def _requirements_text(check: Mapping[str, Any]) -> list[str]:
    rows = [
        f"imported but not declared ({kind}): {_names(items)}"
        for kind, items in check["undeclared"].items()
    ]
    via = [f"{t['distribution']} (via {t['via']})" for t in check["transitive"]]
    rows.append(f"declared only transitively: {', '.join(via) or '-'}")
    rows.append(f"declared but never imported: {', '.join(check['unused']) or '-'}")
    return _section(f"requirements ({', '.join(check['files'])})", rows)


def _names(items: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(" | ".join(item["distributions"]) for item in items) or "-"


def _summary(data: Mapping[str, Any]) -> str:
    check = data["requirements"]
    optional = sum(1 for m in data["missing_local"] if m["reach"] == Reach.OPTIONAL.value)
    counts = [
        (len(data["missing_local"]) - optional, "missing local module(s)"),
        (optional, "missing optional local module(s)"),
        (len(check["undeclared"]["required"]) if check else 0, "undeclared required import(s)"),
        (len(data["syntax_errors"]), "file(s) with syntax errors"),
        (sum(n["level"] == "warning" for n in data["notes"]), "file(s) skipped or not parsed"),
    ]
    problems = [f"{count} {what}" for count, what in counts if count]
    return ", ".join(problems) if problems else "ok"


# --- profile draft -----------------------------------------------------------------------------


def render_profile_draft(report: ScanReport) -> str:
    """A starting model-profile YAML; ambiguous distributions carry a comment."""
    declared = report.requirements.declared if report.requirements else ()
    names = {canonicalize_name(req.name) for req in declared}
    requirements = [json.dumps(str(req)) for req in declared]
    for item in report.third_party:
        if item.reach is not Reach.OPTIONAL and not names.intersection(item.distributions):
            requirements.append(json.dumps(item.distributions[0]) + _ambiguity_comment(item))
    required = [json.dumps(t.name) for t in report.third_party if t.reach is not Reach.OPTIONAL]
    optional = [json.dumps(t.name) for t in report.third_party if t.reach is Reach.OPTIONAL]
    lines = [
        "# Draft model profile written by `builder scan`: review it before use.",
        f"name: {json.dumps(Path(report.path).resolve().name)}",
        *_yaml_list("requirements", requirements),
        *_yaml_list("imports", required),
        *_yaml_list("optional_imports", optional),
        f"source: {json.dumps(report.path)}",
    ]
    return "\n".join(lines) + "\n"


def _ambiguity_comment(item: ThirdParty) -> str:
    if len(item.distributions) < 2:
        return ""
    return f"  # {item.name}: ambiguous, one of {' | '.join(item.distributions)}"


def _yaml_list(key: str, items: Sequence[str]) -> list[str]:
    """A YAML block list of already-quoted items (JSON strings are YAML scalars)."""
    return [f"{key}:", *(f"  - {item}" for item in items)] if items else [f"{key}: []"]


def write_profile_draft(report: ScanReport, path: Path) -> None:
    """Write the draft atomically; an unwritable path is an InputError naming it."""
    write_atomic(path, render_profile_draft(report))


def run_scan(options: ScanOptions, fmt: str, profile_draft: Path | None) -> tuple[str, int]:
    """What `builder scan` prints and its exit code; writes the profile draft when asked."""
    report = scan(options, current_environment())
    if profile_draft is not None:
        write_profile_draft(report, profile_draft)
    return render(report, fmt), report.exit_code
