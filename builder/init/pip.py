"""pip's command line and requirements files, as `builder init` reads them out of RUN lines.

A command is recognised by its words (already split and unquoted by bashlex): `pip`,
`pip3`, `python -m pip`, `python3.11 -m pip`, `uv pip`. Its options are read with pip's own
option table (the long and short names, which take a value); a requirement is read with
`packaging`, and a requirements file with pip's rules (pip-requirements-parser), following
its `-r` and `-c` lines relative to the file that names them.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from pip_requirements_parser import RequirementsFile

from builder.files import read_text

# pip's (and uv pip's) options that take a value, by every name they go by.
VALUED = {
    "-r": "requirement",
    "--requirement": "requirement",
    "-c": "constraint",
    "--constraint": "constraint",
    "-e": "editable",
    "--editable": "editable",
    "-i": "index_url",
    "--index-url": "index_url",
    "--default-index": "index_url",
    "--extra-index-url": "extra_index_url",
    "--index": "extra_index_url",
    "-f": "find_links",
    "--find-links": "find_links",
    "-t": "target",
    "--target": "target",
    "--prefix": "target",
    "--root": "target",
    "--trusted-host": "ignored",
    "--platform": "ignored",
    "--python-version": "ignored",
    "--implementation": "ignored",
    "--abi": "ignored",
    "--no-binary": "ignored",
    "--only-binary": "ignored",
    "--progress-bar": "ignored",
    "--log": "ignored",
    "--cache-dir": "ignored",
    "--src": "ignored",
    "--upgrade-strategy": "ignored",
    "--global-option": "ignored",
    "--config-settings": "ignored",
    "-C": "ignored",
    "--report": "ignored",
    "--python": "ignored",
    "-p": "ignored",
    "--index-strategy": "ignored",
    "--root-user-action": "ignored",
    "--timeout": "ignored",
    "--retries": "ignored",
    "--proxy": "ignored",
    "--cert": "ignored",
    "--exists-action": "ignored",
}
FLAGS = {
    "-U": "upgrade",
    "--upgrade": "upgrade",
    "--force-reinstall": "upgrade",
    "--no-build-isolation": "no_build_isolation",
    "--no-deps": "no_deps",
    "--user": "target",
    "-y": "yes",
    "--yes": "yes",
}
PYTHONS = ("python", "python3")


@dataclass(frozen=True)
class PipCommand:
    """One pip (or uv pip) invocation: what it installs or removes, and how."""

    action: str  # install, uninstall, or pip's other subcommands (cache, freeze, ...)
    args: tuple[str, ...] = ()  # positional: requirements (install) or names (uninstall)
    requirement_files: tuple[str, ...] = ()
    constraint_files: tuple[str, ...] = ()
    editables: tuple[str, ...] = ()
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    upgrade: bool = False
    no_build_isolation: bool = False
    no_deps: bool = False
    target: bool = False  # --target, --prefix, --root, --user: not the environment


def pip_words(words: tuple[str, ...]) -> tuple[str, ...] | None:
    """The words after `pip` in a pip invocation, or None if the command is not pip."""
    if words and words[0] == "sudo":
        words = words[1:]
    if not words:
        return None
    program = PurePosixPath(words[0]).name
    if program.startswith("pip") and (program[3:] in ("", "3") or _version_suffix(program[3:])):
        return words[1:]
    if _is_python(program) and words[1:3] == ("-m", "pip"):
        return words[3:]
    if program == "uv" and len(words) > 1 and words[1] == "pip":
        return words[2:]
    return None


def _is_python(program: str) -> bool:
    return program in PYTHONS or (program.startswith("python3.") and program[8:].isdigit())


def _version_suffix(text: str) -> bool:
    return text.startswith("3.") and text[2:].isdigit()


def parse_pip(words: tuple[str, ...]) -> PipCommand:
    """pip's words (after `pip`): the subcommand and its options. Options may come before the
    subcommand (`pip --no-cache-dir install x`), attached (`-rfile`, `--index-url=URL`)."""
    fields: dict[str, Any] = {"action": "", "args": []}
    lists: dict[str, list[str]] = {
        "requirement": [],
        "constraint": [],
        "editable": [],
        "extra_index_url": [],
        "find_links": [],
    }
    rest = list(words)
    while rest:
        word = rest.pop(0)
        key, value = _option(word, rest)
        if key is None and not fields["action"]:
            fields["action"] = word
        elif key is None:
            fields["args"].append(word)
        elif key in lists:
            lists[key].append(value or "")
        elif key == "index_url":
            fields["index_url"] = value
        elif key != "ignored" and key != "yes":
            fields[key] = True
    return PipCommand(
        action=fields["action"],
        args=tuple(fields["args"]),
        requirement_files=tuple(lists["requirement"]),
        constraint_files=tuple(lists["constraint"]),
        editables=tuple(lists["editable"]),
        index_url=fields.get("index_url"),
        extra_index_urls=tuple(lists["extra_index_url"]),
        find_links=tuple(lists["find_links"]),
        upgrade=bool(fields.get("upgrade")),
        no_build_isolation=bool(fields.get("no_build_isolation")),
        no_deps=bool(fields.get("no_deps")),
        target=bool(fields.get("target")),
    )


def _option(word: str, rest: list[str]) -> tuple[str | None, str | None]:
    """(field, value) of an option word (taking its value from `rest` when separate); a
    positional word is (None, None). Unknown options are ignored flags."""
    if not word.startswith("-") or word == "-":
        return None, None
    name, eq, attached = word.partition("=")
    if name in VALUED:
        value = attached if eq else (rest.pop(0) if rest else "")
        return VALUED[name], value
    if not name.startswith("--") and name[:2] in VALUED and len(name) > 2:
        return VALUED[name[:2]], word[2:]
    return FLAGS.get(name, "ignored"), None


# ---------------------------------------------------------------- requirements


@dataclass(frozen=True)
class Spec:
    """A requirement as the matrix can hold it: PEP 508 text, or why it cannot be."""

    name: str | None  # canonical
    text: str | None  # PEP 508 line for `requirements`, None when not expressible
    wheel_dir: str | None = None  # a local wheel's directory (for the wheelhouse)
    problem: str = ""


def read_spec(word: str) -> Spec:
    """One positional word of `pip install`: `name[extras] spec`, `name @ url`, a local wheel,
    a VCS URL with `#egg=`, or something the matrix cannot hold (a local project, `.`)."""
    try:
        req = Requirement(word)
    except InvalidRequirement:
        return _link_spec(word)
    return Spec(canonicalize_name(req.name), str(req))


def _link_spec(word: str) -> Spec:
    if word.endswith(".whl") and "://" not in word:
        try:
            name, version, _, _ = parse_wheel_filename(PurePosixPath(word).name)
        except InvalidWheelFilename as exc:
            return Spec(None, None, problem=f"not a wheel file name ({exc})")
        return Spec(name, f"{name}=={version}", wheel_dir=str(PurePosixPath(word).parent))
    url, _, fragment = word.partition("#")
    egg = dict(p.partition("=")[::2] for p in fragment.split("&")).get("egg") if fragment else None
    if "://" in url and egg:
        return read_spec(f"{egg} @ {url}")
    if "://" in url:
        return Spec(None, None, problem="a URL without `#egg=name` (its name is unknown)")
    return Spec(None, None, problem="a local project or path (installed from the build context)")


@dataclass(frozen=True)
class FileLine:
    """A line of a requirements file: a requirement, an option, or a line pip refuses."""

    path: Path
    line: int
    spec: Spec | None = None
    option: tuple[str, str] | None = None  # (index_url | extra_index_url | find_links, value)
    invalid: str = ""


def read_requirements_file(path: Path) -> tuple[tuple[FileLine, ...], tuple[Path, ...]]:
    """Every line of `path` and of the files its `-r` lines include, by pip's rules; and the
    files read (constraint files' lines are marked as options `constraint`). A file is read
    once, so includes may form a cycle; a missing include is an invalid line."""
    lines: list[FileLine] = []
    seen = {os.path.realpath(path)}
    queue: deque[tuple[Path, bool]] = deque([(path, False)])
    read: list[Path] = []
    while queue:
        current, constraint = queue.popleft()
        read.append(current)
        parsed = RequirementsFile.from_file(str(current), include_nested=False)
        lines += _lines(current, parsed, constraint)
        for included, is_constraint, number in _includes(current, parsed.options):
            if not included.is_file():
                lines.append(FileLine(current, number, invalid=f"{included}: file not found"))
            elif os.path.realpath(included) not in seen:
                seen.add(os.path.realpath(included))
                queue.append((included, is_constraint))
    return tuple(lines), tuple(read)


def check_readable(path: Path) -> None:
    """A requirements file must be a regular UTF-8 file (an InputError names it otherwise)."""
    read_text(path, "requirements file")


def _lines(path: Path, parsed: Any, constraint: bool) -> list[FileLine]:
    out = [
        FileLine(path, bad.requirement_line.line_number, invalid=bad.error_message.splitlines()[0])
        for bad in parsed.invalid_lines
    ]
    for item in parsed.requirements:
        spec = _item_spec(item)
        if item.marker and spec.text:
            spec = Spec(spec.name, f"{spec.text}; {item.marker}", spec.wheel_dir)
        if constraint:
            out.append(FileLine(path, item.line_number, option=("constraint", spec.text or "")))
        else:
            out.append(FileLine(path, item.line_number, spec=spec))
    for option in parsed.options:
        for key in ("index_url", "extra_index_urls", "find_links"):
            values = option.options.get(key)
            for value in [values] if isinstance(values, str) else values or ():
                field = key.removesuffix("s") if key == "extra_index_urls" else key
                out.append(FileLine(path, option.line_number, option=(field, value)))
    return sorted(out, key=lambda line: line.line)


def _item_spec(item: Any) -> Spec:
    if item.is_editable:
        return Spec(None, None, problem=f"an editable install (-e {item.line.split()[-1]})")
    if item.link is None and item.req is not None:
        return Spec(canonicalize_name(item.req.name), str(Requirement(str(item.req))))
    if item.link is not None and item.link.url.endswith(".whl") and item.is_local_path:
        return _link_spec(item.link.url)
    if item.link is not None and item.req is not None:
        return read_spec(f"{item.req.name} @ {item.link.url_without_fragment}")
    return _link_spec(item.line.split()[0] if item.line else "")


def _includes(path: Path, options: Any) -> list[tuple[Path, bool, int]]:
    out = []
    for option in options:
        for key, constraint in (("requirements", False), ("constraints", True)):
            for name in option.options.get(key, ()):
                out.append((path.parent / name, constraint, option.line_number))
    return out
