"""The state of one Dockerfile's translation while its instructions are read in order.

The instructions record what they mean here (packages, installs, copies, clones, the shell
commands that stay as steps, each with its position in the build); `builder.init.finish`
turns the record into a `DockerfileDraft` once everything is known (which copies are the
app, which clone is pinned, where each step sits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from builder.init.model import Fact, HealthDraft, Notice, Source, Untranslated
from builder.init.shell import Command
from builder.init.stages import Chain, Instruction

# What a command of a RUN line became.
DROP = "drop"  # translated (apt, pip, housekeeping) or the `|| true` of a translated command
KEEP = "keep"  # stays, in a step
CONTEXT = "context"  # cd, export, set: kept only in front of a command that stays
CLONE = "clone"  # part of a git clone; dropped if the clone becomes app.git


@dataclass(frozen=True)
class Install:
    """A `pip install`'s requirements, in the order pip saw them."""

    reqs: tuple[tuple[str, str, tuple[Source, ...]], ...]  # (name, PEP 508, sources)
    source: Source
    position: int
    upgrade: bool = False
    soft: str = ""  # how a failure was ignored (`|| true`), if it was
    index: str | None = None  # its --index-url, when not PyPI


@dataclass(frozen=True)
class Uninstall:
    names: tuple[str, ...]
    source: Source
    position: int


@dataclass(frozen=True)
class Copy:
    """A local COPY/ADD source and where it lands in the image."""

    host: Path  # resolved, in the build context
    dest: PurePosixPath  # absolute, in the image
    is_dir: bool
    into_dir: bool  # dest is a directory the source goes into by name
    source: Source
    position: int

    def lands(self) -> PurePosixPath:
        return self.dest / self.host.name if self.into_dir and not self.is_dir else self.dest

    def host_for(self, path: PurePosixPath) -> Path | None:
        """The build-context file that is `path` in the image, if this copy put it there."""
        if self.is_dir and (path == self.dest or self.dest in path.parents):
            return self.host / path.relative_to(self.dest)
        return self.host if not self.is_dir and path == self.lands() else None


@dataclass
class Clone:
    """A `git clone` and the commands that move it to a revision."""

    url: str
    dest: PurePosixPath
    branch: str | None
    source: Source
    run: int  # index into Walk.runs
    position: int
    rev: str | None = None  # a `git checkout REV` (or reset/fetch) of the clone
    rev_source: Source | None = None
    parts: list[tuple[int, int]] = field(default_factory=list)  # (run, command) indexes


@dataclass
class Run:
    """A RUN line's commands and what each became; the kept ones make its step."""

    ins: Instruction
    position: int
    workdir: str  # "" while no WORKDIR was set
    commands: tuple[Command, ...]
    statuses: list[str]
    exports: dict[str, str]  # ARG/ENV values its kept commands expand
    unparsed: str = ""  # bashlex's reason, when it kept the whole line
    secrets: tuple[str, ...] = ()
    has_install: bool = False


@dataclass
class Walk:
    """Everything read so far from one chain of instructions."""

    chain: Chain
    out_dir: Path
    position: int = 0
    workdir: str = "/"
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, Fact] = field(default_factory=dict)
    apt: list[Fact] = field(default_factory=list)
    python: Fact | None = None  # from `apt-get install python3.X`
    installs: list[Install | Uninstall] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    clones: list[Clone] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    consumed: set[Path] = field(default_factory=set)  # requirements files pip read
    index_urls: list[Fact] = field(default_factory=list)
    extra_index_urls: list[Fact] = field(default_factory=list)
    wheelhouse: list[Fact] = field(default_factory=list)
    workdir_fact: Fact | None = None
    user: Fact | None = None
    cmd: tuple[tuple[str, ...], Source] | None = None
    entrypoint: tuple[tuple[str, ...], Source] | None = None
    expose: list[tuple[int, Source]] = field(default_factory=list)
    healthcheck: HealthDraft | None = None
    pipefail: bool = False
    non_root: Source | None = None  # a USER that later RUNs ran as
    untranslated: list[Untranslated] = field(default_factory=list)
    warnings: list[Notice] = field(default_factory=list)
    no_build_isolation: list[Source] = field(default_factory=list)

    def step(self) -> int:
        self.position += 1
        return self.position

    def note(self, source: Source, construct: str, instead: str) -> None:
        self.untranslated.append(Untranslated(source, construct, instead))

    def warn(self, message: str, source: Source | None = None) -> None:
        self.warnings.append(Notice(message, source))

    def in_image(self, path: str, cwd: str | None = None) -> PurePosixPath:
        """A path as the image sees it, relative ones against `cwd` (default: the workdir)."""
        return PurePosixPath(_normal(str(PurePosixPath(cwd or self.workdir) / path)))

    def host_for(self, path: PurePosixPath) -> Path | None:
        """The build-context file that became `path` in the image (the latest copy wins)."""
        for copy in reversed(self.copies):
            found = copy.host_for(path)
            if found is not None and found.exists():
                return found
        return None

    def clone_at(self, path: PurePosixPath) -> Clone | None:
        """The clone whose tree holds `path`, if any."""
        return next((c for c in self.clones if path == c.dest or c.dest in path.parents), None)


def _normal(path: str) -> str:
    """`..` and `.` folded, as the image's filesystem would (never above /)."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)
