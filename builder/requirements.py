"""Requirement files (`requirements.txt`) read by pip's rules, for the matrix and `check -r`.

Plumbing: imports no stage. pip-requirements-parser reads each file as pip would (comments,
line continuations, options); this module follows its includes and holds every line to what
builder can lock:

- `-r FILE` and `-c FILE` are followed relative to the file that names them (pip's rule,
  which also makes a `-r` inside a constraints file a requirements file). A file included
  again is read once; an include of a file that is including it (a loop), an include nested
  deeper than MAX_DEPTH files, and an include of a URL are errors.
- Each requirement is kept as one PEP 508 line with its marker, and where it comes from
  (`Line.origin`, `requirements.txt:7`). `--hash` options are dropped (`lock` writes its
  own) and `--require-hashes` is ignored.
- `--index-url`, `--extra-index-url` and `--find-links` are returned as `IndexOption`s for
  the caller to use or refuse. Every other pip option (`--pre`, `--no-binary`,
  `--trusted-host`, per-requirement `--install-option`, ...) is refused: builder would
  silently resolve something else.
- Editable requirements (`-e .`) and bare paths or URLs are refused, naming the line: a
  lock pins distributions from an index by hash; a URL is written `name @ URL` (PEP 508).
- A file is a regular UTF-8 file (a BOM is allowed) of at most MAX_BYTES; a missing,
  unreadable or special file (a directory, a FIFO), a non-UTF-8 byte (with its line) and
  a larger file are errors.

Every problem is an `InputError` (exit 2) whose message starts with `file:line:` (or
`file:` for the file as a whole), so that the matrix can put its own location in front.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from pip_requirements_parser import (
    OPT_BY_OPTIONS_DEST,
    SCHEME_RE,
    InstallationError,
    OptionLine,
    RequirementsFile,
)

from builder.errors import InputError
from builder.yamlnodes import UNSAFE

MAX_BYTES = 1024 * 1024  # per file; real requirement files are a few KiB
MAX_DEPTH = 16  # files nested through -r/-c; real projects nest two or three
INDEX_OPTIONS = {
    "index_url": "--index-url",
    "extra_index_urls": "--extra-index-url",
    "find_links": "--find-links",
}
IGNORED_OPTIONS = ("require_hashes",)  # lock and build always require hashes
_KINDS = (
    (stat.S_ISDIR, "it is a directory"),
    (stat.S_ISFIFO, "it is a FIFO"),
    (stat.S_ISSOCK, "it is a socket"),
    (stat.S_ISCHR, "it is a character device"),
    (stat.S_ISBLK, "it is a block device"),
)
_FORM = "write `name[extras] specifier ; marker` or `name @ URL` (PEP 508)"


@dataclass(frozen=True, kw_only=True)
class Line:
    """One requirement as a PEP 508 line, and the file line it comes from."""

    text: str
    file: str  # as shown: relative to where reading started (the matrix's directory, or .)
    line: int

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, kw_only=True)
class IndexOption:
    """An `--index-url`, `--extra-index-url` or `--find-links` line of a file."""

    flag: str  # the long option, as pip spells it
    value: str
    file: str
    line: int

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, kw_only=True)
class Declared:
    """What a requirements file and everything it includes declare, in pip's order."""

    requirements: tuple[Line, ...] = ()
    constraints: tuple[Line, ...] = ()  # from -c files: they limit versions, add nothing
    indexes: tuple[IndexOption, ...] = ()
    files: tuple[str, ...] = ()  # every file read, as shown


@dataclass
class _Reading:
    root: Path
    requirements: list[Line] = field(default_factory=list)
    constraints: list[Line] = field(default_factory=list)
    indexes: list[IndexOption] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    seen: set[tuple[str, bool]] = field(default_factory=set)  # (real path, as constraints)


def read_requirements(root: Path, name: str | Path, *, constraints: bool = False) -> Declared:
    """Read `root / name` (a requirements file, or a constraints file) and its includes.
    Paths in the result and in errors are shown relative to `root`, as `name` is."""
    reading = _Reading(root)
    _read(reading, Path(name), constraints, chain=(), included_at=None)
    return Declared(
        requirements=tuple(reading.requirements),
        constraints=tuple(reading.constraints),
        indexes=tuple(reading.indexes),
        files=tuple(reading.files),
    )


def _read(
    reading: _Reading,
    shown: Path,
    constraints: bool,
    chain: tuple[tuple[str, str], ...],
    included_at: str | None,
) -> None:
    """Read one file into `reading`, its includes where they stand; `chain` holds the files
    including it, as (real path, shown path)."""
    path = reading.root / shown
    real = os.path.realpath(path)
    if (real, constraints) in reading.seen:
        return
    reading.seen.add((real, constraints))
    reading.files.append(str(shown))
    parsed = _parse(path, shown, included_at)
    chain = (*chain, (real, str(shown)))
    for item in _in_line_order(parsed):
        where = f"{shown}:{item.line_number}"
        if isinstance(item, OptionLine):
            _options(reading, item.options, where, chain)
            continue
        line = Line(
            text=_requirement(item, where, constraints), file=str(shown), line=item.line_number
        )
        (reading.constraints if constraints else reading.requirements).append(line)


def _parse(path: Path, shown: Path, included_at: str | None) -> Any:
    """One file parsed by pip-requirements-parser (without its includes), after checking
    that it is a regular UTF-8 file of at most MAX_BYTES; invalid lines are errors."""
    _check_file(path, shown, included_at)
    try:
        parsed = RequirementsFile.from_file(str(path), include_nested=False)
    except (InstallationError, OSError, UnicodeDecodeError) as exc:  # changed under us
        raise InputError(f"{shown}: cannot read requirements file: {exc}") from None
    for bad in parsed.invalid_lines:
        reason = bad.error_message.splitlines()[0].removeprefix("Invalid requirement: : ")
        text = bad.line.strip()
        hint = "environment variables are not expanded: write the value" if "${" in text else _FORM
        raise InputError(f"{shown}:{bad.line_number}: not a requirement: {text!r} ({reason})", hint)
    return parsed


def _check_file(path: Path, shown: Path, included_at: str | None) -> None:
    """A regular file of at most MAX_BYTES, all UTF-8: else an error naming it (and, for
    an included file, the line that includes it)."""
    at = f" (included at {included_at})" if included_at else ""
    try:
        mode = path.stat().st_mode
        kind = next((what for test, what in _KINDS if test(mode)), None)
        if kind or not stat.S_ISREG(mode):
            raise InputError(f"{shown}: cannot read requirements file: {kind or 'not a file'}{at}")
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{shown}: requirements file not found{at}") from None
    except OSError as exc:
        raise InputError(
            f"{shown}: cannot read requirements file: {exc.strerror or exc}{at}"
        ) from None
    if len(data) > MAX_BYTES:
        raise InputError(
            f"{shown}: requirements file is larger than {MAX_BYTES} bytes{at}",
            hint="split it into several files",
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{shown}:{line}: byte 0x{data[exc.start]:02x} is not UTF-8{at}",
            hint="save the file as UTF-8",
        ) from None


def _in_line_order(parsed: Any) -> list[Any]:
    """Requirement and option lines, in file order (the parser groups them by kind)."""
    return sorted((*parsed.requirements, *parsed.options), key=lambda item: item.line_number)


def _options(
    reading: _Reading, options: dict[str, Any], where: str, chain: tuple[tuple[str, str], ...]
) -> None:
    """An option line: includes are followed, index options kept, the rest refused."""
    shown, line = where.rsplit(":", 1)
    for dest, value in options.items():
        values = [value] if isinstance(value, str) else value
        if dest in ("requirements", "constraints"):
            for name in values:
                _include(reading, name, dest == "constraints", where, chain)
        elif dest in INDEX_OPTIONS:
            flag = INDEX_OPTIONS[dest]
            reading.indexes += (
                IndexOption(flag=flag, value=v, file=shown, line=int(line)) for v in values
            )
        elif dest not in IGNORED_OPTIONS:
            flag = OPT_BY_OPTIONS_DEST.get(dest, dest)
            raise InputError(
                f"{where}: {flag} is not supported: builder resolves without pip's options, "
                "so it would lock something else than pip installs",
                hint=f"remove the {flag} option",
            )


def _include(
    reading: _Reading,
    name: str,
    as_constraints: bool,
    where: str,
    chain: tuple[tuple[str, str], ...],
) -> None:
    """Follow `-r name` or `-c name` on line `where`, relative to the file it is in."""
    flag = "-c" if as_constraints else "-r"
    if SCHEME_RE.search(name):  # pip's test for an include to download
        raise InputError(
            f"{where}: {flag} {name}: cannot follow a URL",
            hint="download the file and include it by its path",
        )
    target = Path(chain[-1][1]).parent / name
    real = os.path.realpath(reading.root / target)
    reals = [r for r, _ in chain]
    if real in reals:
        loop = [s for _, s in chain[reals.index(real) :]]
        raise InputError(
            f"{where}: {flag} {name}: an include loop ({' -> '.join([*loop, loop[0]])})",
            hint="remove one of the includes",
        )
    if len(chain) >= MAX_DEPTH:
        raise InputError(
            f"{where}: {flag} {name}: includes nested deeper than {MAX_DEPTH} files",
            hint="include the files from fewer levels",
        )
    _read(reading, target, as_constraints, chain, where)


def _requirement(item: Any, where: str, constraints: bool) -> str:
    """A parsed requirement as one PEP 508 line (marker kept, hashes dropped), or an error."""
    line = item.line.split(" --hash", 1)[0].strip()
    if item.is_editable:
        raise InputError(
            f"{where}: editable requirement {line!r}: an image installs locked distributions",
            hint="list the project's dependencies instead, or build it into a wheel in a "
            "wheelhouse and require it by name",
        )
    if item.req is None or (item.link is not None and item.req.url is None):
        raise InputError(
            f"{where}: {line!r} is a path or URL, not a requirement",
            hint="require the distribution by name (a wheel: from a wheelhouse), or write "
            "`name @ URL` (PEP 508)",
        )
    if item.install_options or item.global_options:
        raise InputError(
            f"{where}: per-requirement options are not supported: {line!r}",
            hint="remove the --install-option/--global-option",
        )
    text = _pep508(item, where)
    if UNSAFE.search(text):
        raise InputError(f"{where}: unsafe requirement {text!r}", hint=_FORM)
    if constraints and Requirement(text).extras:
        raise InputError(
            f"{where}: a constraint cannot have extras: {text!r}",
            hint="constrain the distribution by name and version only",
        )
    return text


def _pep508(item: Any, where: str) -> str:
    try:
        req = Requirement(str(item.req))
    except InvalidRequirement as exc:  # the parser accepted it; packaging should too
        raise InputError(f"{where}: not a requirement: {exc}", hint=_FORM) from None
    req.marker = item.marker
    return str(req)
