"""What `builder init` produces: values with the file and line they came from.

Every value the generated matrix holds is a `Fact`: its text, the places it came from (a
Dockerfile line, a requirements file line and the Dockerfile line that read it) and whether it
was guessed from an image tag. What cannot be carried over faithfully is an `Untranslated`
(the construct, and what the matrix does instead); everything else worth saying is a `Notice` (a warning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Source:
    """A line of an input file, by the file's name as the user gave it."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Fact:
    """One value for the matrix and where it came from; `guessed` marks a fact read from an
    image tag (the output says `from the tag; verify`)."""

    value: str
    sources: tuple[Source, ...] = ()
    guessed: bool = False
    note: str = ""

    def comment(self) -> str:
        """The trailing YAML comment: the sources, then the note, then the guess mark."""
        parts = [" ".join(str(s) if i == 0 else f"(via {s})" for i, s in enumerate(self.sources))]
        parts += [self.note] if self.note else []
        parts += ["from the tag; verify"] if self.guessed else []
        return "; ".join(p for p in parts if p)


@dataclass(frozen=True)
class Untranslated:
    """A construct the matrix cannot express as written, and what it does instead."""

    source: Source
    construct: str
    instead: str

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.source.file,
            "line": self.source.line,
            "construct": self.construct,
            "instead": self.instead,
        }

    def text(self) -> str:
        return f"{self.source}: {self.construct}: {self.instead}"


@dataclass(frozen=True)
class Notice:
    """Something to review that the matrix does express (a guess, a moving branch, a choice)."""

    message: str
    source: Source | None = None

    def to_json(self) -> dict[str, Any]:
        where = self.source
        return {
            "file": where.file if where else None,
            "line": where.line if where else None,
            "message": self.message,
        }

    def text(self) -> str:
        return f"{self.source}: {self.message}" if self.source else self.message


@dataclass(frozen=True)
class Req:
    """A requirement line (PEP 508) and its canonical name."""

    fact: Fact
    name: str

    @property
    def text(self) -> str:
        return self.fact.value


@dataclass(frozen=True)
class StepDraft:
    name: str
    at: str
    run: str
    source: Source
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class GitDraft:
    url: Fact
    rev: Fact


@dataclass(frozen=True)
class AppDraft:
    path: Fact | None = None  # relative to the matrix's directory
    git: GitDraft | None = None
    files: tuple[Fact, ...] = ()

    def same(self, other: AppDraft | None) -> bool:
        return other is not None and _values(self) == _values(other)


def _values(app: AppDraft) -> tuple[Any, ...]:
    git = (app.git.url.value, app.git.rev.value) if app.git else None
    return (app.path.value if app.path else None, git, tuple(f.value for f in app.files))


@dataclass(frozen=True)
class HealthDraft:
    cmd: tuple[str, ...]
    source: Source
    interval: str | None = None
    timeout: str | None = None
    retries: int | None = None


@dataclass(frozen=True)
class ImageDraft:
    env: tuple[tuple[str, Fact], ...] = ()
    workdir: Fact | None = None
    entrypoint: tuple[tuple[str, ...], Source] | None = None
    cmd: tuple[tuple[str, ...], Source] | None = None
    expose: tuple[tuple[int, Source], ...] = ()
    user: Fact | None = None
    healthcheck: HealthDraft | None = None

    def key(self) -> tuple[Any, ...]:
        """The values alone, to compare the images of two Dockerfiles."""
        health = self.healthcheck
        return (
            tuple((k, f.value) for k, f in self.env),
            self.workdir.value if self.workdir else None,
            self.entrypoint[0] if self.entrypoint else None,
            self.cmd[0] if self.cmd else None,
            tuple(p for p, _ in self.expose),
            self.user.value if self.user else None,
            (health.cmd, health.interval, health.timeout, health.retries) if health else None,
        )


@dataclass(frozen=True)
class IndexDraft:
    """`indexes`; an extra index's CUDA versions (empty: every base) say which bases use it.
    Wheelhouses are absolute paths until they are written."""

    index_url: Fact | None = None
    extra: tuple[tuple[Fact, tuple[str, ...]], ...] = ()
    wheelhouse: tuple[Fact, ...] = ()


@dataclass(frozen=True)
class BaseDraft:
    """A `bases:` entry; `cuda` None is a CPU base, `kind` is runtime, devel or base."""

    name: str
    image: Fact
    python: Fact
    cuda: Fact | None
    platform: Fact | None = None
    apt: tuple[Fact, ...] = ()
    preinstalled: tuple[Fact, ...] = ()
    kind: str | None = None


@dataclass(frozen=True)
class DockerfileDraft:
    """One Dockerfile (with the Dockerfiles its base chain goes through), translated."""

    file: str
    base: BaseDraft
    requirements: tuple[Req, ...] = ()
    indexes: IndexDraft = IndexDraft()
    image: ImageDraft = ImageDraft()
    app: AppDraft | None = None
    steps: tuple[StepDraft, ...] = ()
    untranslated: tuple[Untranslated, ...] = ()
    warnings: tuple[Notice, ...] = ()


@dataclass(frozen=True)
class MatrixDraft:
    """The whole matrix before it is written: several Dockerfiles combined."""

    bases: tuple[BaseDraft, ...]
    axes: tuple[tuple[str, Fact], ...] = ()  # distribution -> its one value
    include: tuple[tuple[str, tuple[tuple[str, Fact], ...]], ...] = ()  # base -> its own pins
    requirements: tuple[Req, ...] = ()
    indexes: IndexDraft = IndexDraft()
    profiles: tuple[Fact, ...] = ()
    profile_paths: tuple[str, ...] = ()
    app: AppDraft | None = None
    image: ImageDraft = ImageDraft()
    steps: tuple[StepDraft, ...] = ()
    sources: tuple[str, ...] = field(default=())  # the Dockerfiles, as given
    untranslated: tuple[Untranslated, ...] = ()
    warnings: tuple[Notice, ...] = ()
