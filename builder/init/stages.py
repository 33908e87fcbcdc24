"""Dockerfiles, read with BuildKit's own parser (the `dockerfile` wheel), and the chain of
instructions that makes a Dockerfile's final image.

A Dockerfile's final stage is its last; its base is followed back through `FROM <stage>`
(multi-stage builds) and through `FROM <tag>` where another given Dockerfile builds that tag
(`--dockerfile base.Dockerfile=acme/base:1`). The chain is every instruction on that path, in
build order; stages off the path (builders that `COPY --from=` reads) are listed apart.
Build arguments' defaults (`ARG NAME=value` before the first FROM) are substituted into FROM.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import dockerfile

from builder.errors import InputError
from builder.files import read_text
from builder.init.model import Source


@dataclass(frozen=True)
class Instruction:
    """One instruction, with the Dockerfile (and so the build context) it belongs to."""

    cmd: str  # upper case
    value: tuple[str, ...]
    flags: tuple[str, ...]
    json: bool
    original: str
    source: Source
    context: Path  # the Dockerfile's directory, taken as its build context
    heredoc: bool = False
    sub_cmd: str | None = None

    def flag(self, name: str) -> str | None:
        """The value of `--name=value`, if given."""
        prefix = f"--{name}="
        return next((f[len(prefix) :] for f in self.flags if f.startswith(prefix)), None)


@dataclass(frozen=True)
class Stage:
    index: int
    name: str | None  # `AS name`, lower case
    image: str  # what FROM names, build arguments substituted
    source: Source
    instructions: tuple[Instruction, ...]
    platform: str | None = None


@dataclass(frozen=True)
class Parsed:
    path: Path
    display: str  # as the user gave it
    builds: str | None  # the tag this Dockerfile builds, when given (FILE=TAG)
    stages: tuple[Stage, ...]
    args: tuple[tuple[str, str], ...] = ()  # build arguments' defaults before the first FROM


@dataclass(frozen=True)
class Chain:
    """The final image's path: the external image at its root and every instruction."""

    root: Stage
    instructions: tuple[Instruction, ...]
    off_path: tuple[Stage, ...] = ()  # stages of these Dockerfiles not on the path
    files: tuple[str, ...] = ()  # the Dockerfiles the chain goes through, root first
    args: tuple[tuple[str, str], ...] = ()  # their build arguments' defaults


def read_dockerfile(path: Path, display: str, builds: str | None = None) -> Parsed:
    """Parse one Dockerfile; missing, unreadable, non-UTF-8, unparsable or FROM-less files
    are InputErrors naming the file."""
    text = read_text(path, "Dockerfile")
    try:
        commands = dockerfile.parse_string(text)
    except dockerfile.GoParseError as exc:
        raise InputError(f"{display}: not a Dockerfile BuildKit can parse: {exc}") from None
    stages, args = _stages(commands, path, display)
    if not stages:
        raise InputError(
            f"{display}: no FROM instruction: not a Dockerfile",
            hint="give the Dockerfile that builds the serving image",
        )
    return Parsed(path=path, display=display, builds=builds, stages=stages, args=args)


def _stages(
    commands: tuple[dockerfile.Command, ...], path: Path, display: str
) -> tuple[tuple[Stage, ...], tuple[tuple[str, str], ...]]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    current: list[Instruction] = []
    head: tuple[dockerfile.Command, str | None] | None = None
    for command in commands:
        ins = _instruction(command, path, display)
        if ins.cmd == "FROM":
            if head is not None:
                stages.append(_stage(len(stages), head, current, args, path, display))
            head, current = (command, ins.flag("platform")), []
        elif head is None and ins.cmd == "ARG":
            args.update(_arg_defaults(ins.value))
        elif head is not None:
            current.append(ins)
    if head is not None:
        stages.append(_stage(len(stages), head, current, args, path, display))
    return tuple(stages), tuple(args.items())


def _instruction(command: dockerfile.Command, path: Path, display: str) -> Instruction:
    return Instruction(
        cmd=command.cmd.upper(),
        value=tuple(command.value),
        flags=tuple(command.flags),
        json=command.json,
        original=command.original,
        source=Source(display, command.start_line),
        context=path.parent,
        heredoc=bool(command.heredocs),
        sub_cmd=command.sub_cmd,
    )


def _arg_defaults(value: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for word in value:
        name, eq, default = word.partition("=")
        if eq:
            out[name] = unquote(default)
    return out


def unquote(raw: str) -> str:
    """A Dockerfile word's value, its shell-style quotes removed (`"a b"` is `a b`)."""
    try:
        return " ".join(shlex.split(raw))
    except ValueError:
        return raw


def expand(word: str, values: Mapping[str, str]) -> str:
    """`$NAME` and `${NAME}` replaced by known build-argument and ENV values; the rest kept."""
    return string.Template(word).safe_substitute(values) if "$" in word else word


def _stage(
    index: int,
    head: tuple[dockerfile.Command, str | None],
    body: list[Instruction],
    args: Mapping[str, str],
    path: Path,
    display: str,
) -> Stage:
    command, platform = head
    words = list(command.value)
    name = words[2].lower() if len(words) >= 3 and words[1].upper() == "AS" else None
    source = Source(display, command.start_line)
    image = string.Template(words[0] if words else "").safe_substitute(args)
    if "$" in image:
        raise InputError(
            f"{source}: FROM {words[0]}: a build argument without a default",
            hint="give it a default (ARG NAME=image:tag before FROM), so init knows the base",
        )
    return Stage(index, name, image, source, tuple(body), platform)


def chain(parsed: Parsed, built: Mapping[str, Parsed], seen: tuple[str, ...] = ()) -> Chain:
    """The final stage's chain; `built` maps image tags to the Dockerfiles that build them."""
    if parsed.display in seen:
        raise InputError(
            f"{parsed.display}: its base chain comes back to itself ({' -> '.join(seen)})",
            hint="check the FILE=TAG pairs given with --dockerfile",
        )
    on_path = _path(parsed.stages, len(parsed.stages) - 1)
    off = tuple(s for s in parsed.stages if s.index not in {p.index for p in on_path})
    own = tuple(i for stage in on_path for i in stage.instructions)
    root = on_path[0]
    parent = built.get(root.image)
    if parent is None:
        return Chain(root, own, off, (parsed.display,), parsed.args)
    above = chain(parent, built, (*seen, parsed.display))
    return Chain(
        above.root,
        above.instructions + own,
        above.off_path + off,
        (*above.files, parsed.display),
        above.args + parsed.args,
    )


def _path(stages: tuple[Stage, ...], index: int) -> list[Stage]:
    """Stages from the one whose FROM is an image down to `index`, following FROM <stage>."""
    stage = stages[index]
    parent = _stage_named(stages[:index], stage.image)
    return [stage] if parent is None else [*_path(stages, parent.index), stage]


def _stage_named(stages: tuple[Stage, ...], name: str) -> Stage | None:
    wanted = name.lower()
    for stage in reversed(stages):
        if stage.name == wanted or str(stage.index) == wanted:
            return stage
    return None
