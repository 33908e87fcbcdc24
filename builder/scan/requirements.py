"""Requirements files, read by pip's rules (pip-requirements-parser): `-r` and `-c` includes,
`#egg=` names, and markers evaluated for the target Python on Linux."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from packaging.markers import UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from pip_requirements_parser import SCHEME_RE, RequirementsFile

from builder.errors import InputError
from builder.files import read_text
from builder.matrix import Indexes
from builder.scan.model import Declared


def read_requirements(
    path: Path, python: str | None = None, machine: str = "x86_64"
) -> tuple[Requirement, ...]:
    """What a requirements file declares (see `read_declared`), as requirements."""
    return tuple(d.requirement for d in read_declared(path, python, machine))


def read_declared(
    path: Path, python: str | None = None, machine: str = "x86_64"
) -> tuple[Declared, ...]:
    """What a requirements file declares, each with its file and line.

    `-r` files are read too, relative to the file that includes them; `-c` constraint files
    are checked but declare nothing; each file is read once, so includes may form a cycle.
    With `python`, only the requirements whose markers hold for it on Linux (on `machine`)
    are kept."""
    declared: list[Declared] = []
    queue, seen = deque([(path, False)]), {os.path.realpath(path)}
    while queue:
        current, constraints = queue.popleft()
        parsed = _requirements_file(current)
        if not constraints:
            found = (_declared(item, python, machine) for item in parsed.requirements)
            declared += filter(None, found)
        for included, is_constraint in _includes(current, parsed.options):
            if os.path.realpath(included) not in seen:
                seen.add(os.path.realpath(included))
                queue.append((included, is_constraint))
    return tuple(declared)


def read_indexes(paths: Iterable[Path]) -> Indexes:
    """The index options of requirements files and their includes, as pip reads them: the first
    `--index-url`, every `--extra-index-url`, and `--find-links` directories (relative to the
    file that names them; a find-links URL is not followed)."""
    index_url: str | None = None
    extra: list[str] = []
    links: list[Path] = []
    for path in paths:
        queue, seen = deque([path]), {os.path.realpath(path)}
        while queue:
            current = queue.popleft()
            options = _requirements_file(current).options
            for option in options:
                index_url = index_url or option.options.get("index_url")
                extra += option.options.get("extra_index_urls", ())
                links += (
                    current.parent / link
                    for link in option.options.get("find_links", ())
                    if not SCHEME_RE.search(link) and (current.parent / link).is_dir()
                )
            for included, _ in _includes(current, options):
                if os.path.realpath(included) not in seen:
                    seen.add(os.path.realpath(included))
                    queue.append(included)
    return Indexes(
        index_url=index_url,
        extra_index_urls=tuple(dict.fromkeys(extra)),
        wheelhouse=tuple(dict.fromkeys(links)),
    )


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


def _declared(item: Any, python: str | None, machine: str) -> Declared | None:
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
        applies = python is None or _applies(req, target_markers(python, machine))
    except (UndefinedComparison, UndefinedEnvironmentName) as exc:
        where = f"{item.filename}:{item.line_number}"
        raise InputError(f"{where}: marker {item.marker}: {exc}", "see PEP 508 markers") from None
    return Declared(req, str(item.filename), int(item.line_number or 0)) if applies else None


def target_markers(python: str, machine: str = "x86_64") -> dict[str, str]:
    """PEP 508 marker values for CPython `python` on Linux, the platform of the images."""
    return {
        "platform_machine": machine,
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
    }


def _applies(req: Requirement, markers: dict[str, str]) -> bool:
    return req.marker is None or req.marker.evaluate(markers | {"extra": ""})
