"""`builder scan`: follow a repository's imports statically and check them against its requirements.

Nothing is executed: files are parsed with `ast`, starting at the entry files and following local
modules transitively. Each import is standard library (names of the running interpreter), local (a
file of the repository) or third-party; third-party imports are mapped to distributions (installed
metadata first, then a table of known mismatches, else the import name) and compared with the
requirements files.

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
      "notes": [{"level": "info" | "warning", "message": str}],
      "requirements": null | {                     # null without --requirements
        "files": [str],
        "declared": [str],                         # PEP 508 strings, in file order
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
import glob
import json
import os
import re
import sys
import tempfile
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from importlib import metadata
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.errors import InputError

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
_COMMENT = re.compile(r"(^|\s)#.*$")
_TRAILING_OPTIONS = re.compile(r"\s+--?\w.*$")  # `pkg==1.0 --hash=sha256:...`


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


class _ImportCollector(ast.NodeVisitor):
    """Collects import statements with their reach; skips `if TYPE_CHECKING:` blocks."""

    def __init__(self) -> None:
        self.found: list[_Statement] = []
        self._lazy = False
        self._guarded = False

    def _reach(self) -> Reach:
        if self._guarded:
            return Reach.OPTIONAL
        return Reach.LAZY if self._lazy else Reach.MODULE

    def _visit_all(self, nodes: Iterable[ast.AST], *, lazy: bool, guarded: bool) -> None:
        saved = self._lazy, self._guarded
        self._lazy, self._guarded = lazy, guarded
        for node in nodes:
            self.visit(node)
        self._lazy, self._guarded = saved

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append(_Statement(alias.name, (), 0, node.lineno, self._reach()))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        names = tuple(alias.name for alias in node.names)
        statement = _Statement(node.module or "", names, node.level, node.lineno, self._reach())
        self.found.append(statement)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        # A try around the def does not guard the body: that runs later, when called.
        self._visit_all(node.body, lazy=True, guarded=False)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Try(self, node: ast.Try) -> None:
        catches = any(_catches_import_error(handler.type) for handler in node.handlers)
        self._visit_all(node.body, lazy=self._lazy, guarded=self._guarded or catches)
        rest = [*node.handlers, *node.orelse, *node.finalbody]
        self._visit_all(rest, lazy=self._lazy, guarded=self._guarded)

    visit_TryStar = visit_Try

    def visit_If(self, node: ast.If) -> None:
        body = [] if _is_type_checking(node.test) else node.body
        self._visit_all([*body, *node.orelse], lazy=self._lazy, guarded=self._guarded)


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


def _parse(source: bytes, rel: str) -> list[_Statement] | SyntaxProblem:
    """The import statements of one file, or its syntax error."""
    try:
        with warnings.catch_warnings():  # invalid escapes and the like are not our findings
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=rel)
    except SyntaxError as exc:
        return SyntaxProblem(rel, exc.lineno or 0, exc.msg)
    except ValueError as exc:  # null bytes, before Python 3.12
        return SyntaxProblem(rel, 0, str(exc))
    collector = _ImportCollector()
    collector.visit(tree)
    return collector.found


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
    return found is not None and (found.is_file() or any(found.rglob("*.py")))


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
    namespaces: set[str] = field(default_factory=set)

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def visit(self, file: Path) -> list[Path]:
        """Record one file's imports; return the local files and directories they reach."""
        rel = self.rel(file)
        self.files.append(rel)
        parsed = _parse(file.read_bytes(), rel)
        if isinstance(parsed, SyntaxProblem):
            self.syntax.append(parsed)
            return []
        return [path for statement in parsed for path in self.record(rel, statement)]

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


def read_requirements(path: Path) -> tuple[Requirement, ...]:
    """The requirements of a requirements file; option and comment lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}", "pass an existing file") from exc
    requirements = []
    for number, line in _requirement_lines(text):
        try:
            requirements.append(Requirement(line))
        except InvalidRequirement as exc:
            hint = "write `name[extras] specifier ; marker` or `name @ url`"
            raise InputError(f"{path}:{number}: not a requirement: {line!r} ({exc})", hint) from exc
    return tuple(requirements)


def _requirement_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each logical requirement line."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", raw).strip()
        start = start or number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, first, pending, start = (pending + line).strip(), start, "", 0
        if line and not line.startswith("-"):
            yield first, _TRAILING_OPTIONS.sub("", line)


def _dependencies(
    req: Requirement, requires: Mapping[str, tuple[str, ...]], python: str
) -> list[Requirement]:
    environment = {"python_version": python, "python_full_version": f"{python}.0"}
    found = []
    for text in requires.get(canonicalize_name(req.name), ()):
        try:
            dep = Requirement(text)
        except InvalidRequirement:
            continue  # broken installed metadata is not the scanned repository's problem
        extras = ("", *sorted(req.extras))
        marker = dep.marker
        if marker is None or any(marker.evaluate(environment | {"extra": e}) for e in extras):
            found.append(dep)
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
    declared = tuple(req for path in files for req in read_requirements(path))
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


def _entries(root: Path, given: Sequence[Path]) -> list[Path]:
    if not root.is_dir():
        raise InputError(f"{root}: no such directory", "pass the repository to scan")
    if not given:
        found = sorted(root.glob("*.py"))
        if not found:
            raise InputError(
                f"{root}: no .py files at the top", "name the entry files with --entry"
            )
        return [path.resolve() for path in found]
    return [_entry(root, path) for path in given]


def _entry(root: Path, given: Path) -> Path:
    path = next((p for p in (root / given, given) if p.is_file()), None)
    if path is None:
        raise InputError(f"{given}: entry file not found", f"give a .py file inside {root}")
    if not path.resolve().is_relative_to(root.resolve()):
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
    return tuple(notes)


def scan(options: ScanOptions, env: Environment) -> ScanReport:
    """Scan a repository; raise InputError for bad input."""
    python = _target_python(options.python, env)
    entries = _entries(options.path, options.entries)
    root = options.path.resolve()
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
    """Write the draft atomically: a temporary file in the same folder, then os.replace."""
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder does not exist", "create it or pick another path")
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(render_profile_draft(report))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def run_scan(options: ScanOptions, fmt: str, profile_draft: Path | None) -> tuple[str, int]:
    """What `builder scan` prints and its exit code; writes the profile draft when asked."""
    report = scan(options, current_environment())
    if profile_draft is not None:
        write_profile_draft(report, profile_draft)
    return render(report, fmt), report.exit_code
