"""matrix.yaml, version 1: the one reader (`load_matrix`) and the frozen data it returns.

Every problem is reported as `file:line:col: dotted.field: message`, all of them at once,
as an `InputError` (exit 2). Scalars keep their source text, so `python: 3.10` stays "3.10".
How the YAML is read (aliases, tags, dates, size and depth limits) is `builder.yamlnodes`'s
policy. Limits of its own: at most MAX_CELLS cells (the axes' product, counted before
expanding), cell ids of at most MAX_ID characters (a longer one is cut and given a hash of
the whole, so it stays unique), an `app.path` and `app.files` inside the matrix's directory,
an `app.git.rev` that is a full commit, and index and git URLs without credentials (they
belong in the netrc file named by BUILDER_NETRC). `requirements` entries `-r FILE` and
`-c FILE` are expanded here by `builder.requirements` (pip's rules), each line keeping its
origin; `requirements_matrix` makes the one-cell matrix of `builder check -r FILE`.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import hashlib
import itertools
import math
import os
import re
import shlex
import string
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from docker_image.digest import InvalidDigest
from docker_image.reference import InvalidReference, Reference
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.errors import InputError
from builder.platforms import PLATFORMS
from builder.requirements import Declared, read_requirements
from builder.resources import PROBES as PROBE_SCRIPTS
from builder.resources import SERVE_PROBE
from builder.yamlnodes import (
    UNSAFE,
    Problems,
    boolean,
    choice,
    compose,
    is_null,
    join,
    kind,
    mapping,
    marks,
    optional,
    plain,
    read_file,
    scalar,
    sequence,
    strings,
    suggest,
)

PROBES = tuple(PROBE_SCRIPTS)  # the probe names, in run order
# Run when a matrix names no probes; `model-dir` needs a `model_dir` option, so it is opt-in.
DEFAULT_PROBES = PROBES[:-1]
PROBE_NAMES = (*PROBES, SERVE_PROBE)  # every probe a matrix may name
GPU_MODES = ("required", "optional", "none")
# Distributions users pin most; an axis name close to one of these but not equal is a typo.
WELL_KNOWN = (
    "torch",
    "torchvision",
    "torchaudio",
    "transformers",
    "diffusers",
    "numpy",
    "tokenizers",
    "accelerate",
    "peft",
    "xformers",
    "flash-attn",
    "decord",
    "opencv-python",
    "safetensors",
    "huggingface-hub",
    "sentencepiece",
    "librosa",
    "soundfile",
    "imageio",
    "imageio-ffmpeg",
    "xfuser",
    "optimum-quanto",
    "gradio",
    "triton",
    "onnxruntime",
    "einops",
)
TOP_KEYS = (
    "version",
    "bases",
    "axes",
    "exclude",
    "include",
    "requirements",
    "indexes",
    "profiles",
    "profile_paths",
    "probes",
    "gpu",
    "app",
    "registry",
    "runners",
    "image",
    "steps",
    "fleet",
)
BASE_KEYS = (
    "image",
    "python",
    "cuda",
    "platform",
    "apt",
    "preinstalled",
    "reuse_preinstalled",
    "fleet",  # read by the fleet section (`_fleets`): it narrows the top-level fleet
)
AUTO = "auto"  # `preinstalled: auto`: read from the base image itself
INDEX_KEYS = ("index_url", "extra_index_urls", "wheelhouse", "ca_bundle")
APP_KEYS = ("path", "git", "files", "entry_modules")
APP_GIT_KEYS = ("url", "rev")
RUNNER_KEYS = ("cpu", "gpu")
IMAGE_KEYS = ("env", "workdir", "entrypoint", "cmd", "expose", "user", "healthcheck")
HEALTHCHECK_KEYS = ("cmd", "interval", "timeout", "retries")
STEP_KEYS = ("name", "at", "run", "secrets")
STEP_POINTS = ("after-apt", "after-deps", "after-app")
STEP_SECRETS = ("cacert", "netrc", "hf_token")
MAX_CELLS = 1024  # cells in one matrix, counted from the axes before expanding
MAX_ID = 120  # characters in a cell id (an image tag may have 128)
MAX_REFERENCE = 1024  # characters in an image reference; distribution's limits sum to less
PROBE_OPTION_TYPES: Mapping[str, type | tuple[type, ...]] = {"timeout": (int, float), "memory": str}
SERVE_MODES = ("runpod", "http", "command")
# probes.serve keys that belong to some modes only
SERVE_MODE_KEYS: Mapping[str, tuple[str, ...]] = {
    "input": ("runpod",),
    "url": ("http",),
    "request": ("http",),
    "argv": ("command",),
    "expect": ("http", "command"),
}
SERVE_KEYS = ("mode", "timeout", "memory", *SERVE_MODE_KEYS)
SERVE_REQUEST_KEYS = ("method", "path", "url", "json")
SERVE_EXPECT_KEYS = ("status", "keys", "exit_code", "output")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
_REQUEST_PATH = re.compile(r"^/\S*$", re.ASCII)

BASE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$", re.ASCII)
_DIST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$", re.ASCII)
_APT = re.compile(r"^[a-z0-9][a-z0-9+.-]+(?:=[A-Za-z0-9.+:~-]+)?$", re.ASCII)
_PYTHON = re.compile(r"^3\.\d{1,2}$", re.ASCII)
_CUDA = re.compile(r"^\d{1,2}\.\d{1,2}(?:\.\d{1,3})?$", re.ASCII)
# What an index URL may hold: RFC 3986's characters less those a shell reads (it lands
# unquoted in a RUN line); its structure is then checked by urllib.parse.
_URL = re.compile(r"^(?:https?|file)://[A-Za-z0-9._~:/@%+,=#!-]+$", re.ASCII)
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$", re.ASCII)
MEMORY = re.compile(r"^\d+(?:\.\d+)?[kmgKMG]?$", re.ASCII)
GIT_COMMIT = re.compile(r"^[0-9a-f]{40}$", re.ASCII | re.IGNORECASE)
SHORT_COMMIT = re.compile(r"^[0-9a-f]{4,39}$", re.ASCII | re.IGNORECASE)
SCP_LIKE = re.compile(r"^(?:ssh://|[\w.-]+@[\w.-]+:)", re.ASCII)  # git's ssh URL forms
PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$", re.ASCII)
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$", re.ASCII)
_ID_UNSAFE = re.compile(r"[^a-z0-9_.-]+", re.ASCII)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$", re.ASCII)
_WORKDIR = re.compile(r"^/[A-Za-z0-9._/-]*$", re.ASCII)
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$", re.ASCII)
_DURATION = re.compile(r"^[1-9][0-9]{0,5}(?:ms|s|m|h)$", re.ASCII)
# A step's `run` is shell on purpose, so only what would break out of its RUN line or the
# template is refused: line breaks, NUL, Jinja delimiters, and a trailing backslash (which
# would continue the RUN onto the Dockerfile's next line).
_STEP_UNSAFE = re.compile(r"[\n\r\x00]|\{\{|\{%|\{#|\}\}|%\}|#\}|\\$", re.ASCII)
_SPEC_WORDS = (
    ("===", "eq"),
    ("==", "eq"),
    ("~=", "compat"),
    (">=", "ge"),
    ("<=", "le"),
    ("!=", "ne"),
    (">", "gt"),
    ("<", "lt"),
)


# ---------------------------------------------------------------- the data


@dataclass(frozen=True, kw_only=True)
class Base:
    """A named base image and the facts the matrix states about it."""

    name: str
    image: str
    python: str
    cuda: str | None
    platform: str = "linux/amd64"
    apt: tuple[str, ...] = ()
    preinstalled: tuple[tuple[str, str], ...] = ()  # (canonical name, version)
    preinstalled_auto: bool = False  # `auto`: `preinstalled` is read from the image (baseimage)
    reuse_preinstalled: bool = False  # the venv sees the base's packages, the lock pins them

    @property
    def policy(self) -> str:
        """How the base's own packages are treated, as locks and reports say it."""
        return "reused" if self.reuse_preinstalled else "isolated"


@dataclass(frozen=True, kw_only=True)
class Pin:
    """One axis value: `name` pinned by `specifier` (`==2.4.0` or a range)."""

    name: str
    specifier: str

    @property
    def requirement(self) -> str:
        return f"{self.name}{self.specifier}"


@dataclass(frozen=True, kw_only=True)
class Indexes:
    """Where packages come from, already chosen for one cell's CUDA version."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    wheelhouse: tuple[Path, ...] = ()
    ca_bundle: Path | None = None

    def pip_args(self, wheelhouse: Sequence[str] | None = None) -> list[str]:
        """These indexes as pip/uv options; `wheelhouse` names the wheelhouses where the
        resolver sees them (a container's mounts), by default their paths here."""
        argv = ["--index-url", self.index_url] if self.index_url else []
        for url in self.extra_index_urls:
            argv += ["--extra-index-url", url]
        for path in wheelhouse if wheelhouse is not None else map(str, self.wheelhouse):
            argv += ["--find-links", path]
        return argv


@dataclass(frozen=True, kw_only=True)
class GitSource:
    """A repository at one full commit: the app's code, cloned by the host (never by the build)."""

    url: str
    rev: str  # 40 hex digits, lower case


@dataclass(frozen=True, kw_only=True)
class App:
    """Model code copied into the image, and the modules the probes must import: a local
    directory (`path`) or a repository at a commit (`git`), never both, plus `files` copied
    into its root on top (they win over a file of the same name)."""

    path: Path | None = None
    git: GitSource | None = None
    files: tuple[Path, ...] = ()
    entry_modules: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Healthcheck:
    """`image.healthcheck`: an exec-form command and Docker's timing options."""

    cmd: tuple[str, ...]
    interval: str | None = None
    timeout: str | None = None
    retries: int | None = None


@dataclass(frozen=True, kw_only=True)
class ImageConfig:
    """`image`: what the final image runs, as it is deployed. Every field is optional."""

    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    expose: tuple[int, ...] = ()
    user: str | None = None
    healthcheck: Healthcheck | None = None


@dataclass(frozen=True, kw_only=True)
class Step:
    """A `steps` entry: a shell command run at a named point of the build, with only the
    secrets it names."""

    name: str
    at: str
    run: str
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One combination of the matrix: a base plus pins, with everything shared."""

    id: str
    base: Base
    pins: tuple[Pin, ...]
    axes: tuple[tuple[str, str], ...]  # the raw axis values, in matrix order, for reports
    requirements: tuple[str, ...]
    indexes: Indexes
    profiles: tuple[str, ...]
    probes: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    gpu: str
    app: App | None
    line: int  # where the cell comes from in the matrix file (its axes or include entry)
    image: ImageConfig = ImageConfig()
    steps: tuple[Step, ...] = ()
    # (requirement, "file:line") for each of `requirements`: the matrix's line, or the line
    # of the requirements file a `-r` entry expanded to
    origins: tuple[tuple[str, str], ...] = ()
    constraints: tuple[str, ...] = ()  # lines of `-c` files: they limit versions, add nothing
    fleet: Fleet | None = None  # the GPUs the image will run on (its base's, else the matrix's)

    def requirement_lines(self) -> tuple[str, ...]:
        """What the resolver is asked for: shared requirements, then this cell's pins."""
        return self.requirements + tuple(p.requirement for p in self.pins)

    def constraint_lines(self) -> tuple[str, ...]:
        """Constraints the resolver must meet: the base's packages, exactly, when they are
        reused, then the lines of `-c` constraint files."""
        if not self.base.reuse_preinstalled:
            return self.constraints
        assert not self.base.preinstalled_auto or self.base.preinstalled, "auto not read yet"
        reused = tuple(f"{name}=={version}" for name, version in self.base.preinstalled)
        return reused + self.constraints

    def declared(self, name: str) -> tuple[str, str] | None:
        """(requirement, "file:line") of the first requirement line that names `name`."""
        wanted = canonicalize_name(name)
        for text, origin in self.origins:
            with contextlib.suppress(InvalidRequirement):
                if canonicalize_name(Requirement(text).name) == wanted:
                    return text, origin
        return None

    def pin(self, name: str) -> Pin | None:
        wanted = canonicalize_name(name)
        return next((p for p in self.pins if canonicalize_name(p.name) == wanted), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "base": self.base.name,
            "image": self.base.image,
            "python": self.base.python,
            "cuda": self.base.cuda,
            "platform": self.base.platform,
            "gpu": self.gpu,
            "axes": dict(self.axes),
            "pins": [p.requirement for p in self.pins],
            "requirements": list(self.requirements),
            "profiles": list(self.profiles),
            **({"source": {"url": g.url, "commit": g.rev}} if (g := self._git) else {}),
        }

    @property
    def _git(self) -> GitSource | None:
        return self.app.git if self.app else None


@dataclass(frozen=True, kw_only=True)
class Matrix:
    """A loaded, validated matrix file."""

    path: Path
    bases: tuple[Base, ...]
    cells: tuple[Cell, ...]
    registry: str | None = None
    runners: tuple[tuple[str, str], ...] = (("cpu", "ubuntu-latest"), ("gpu", "gpu"))
    profile_paths: tuple[Path, ...] = ()
    profile_marks: tuple[tuple[str, int, int], ...] = ()  # `profiles` entries: (name, line, col)
    source: str | None = None  # a matrix made in memory: the command that made it

    @property
    def root(self) -> Path:
        return self.path.parent

    def where(self, cell: Cell) -> str:
        """Where a cell comes from, for findings: `matrix.yaml:LINE`, or the command line
        that made a matrix in memory (`builder check -r requirements.txt --python 3.10`)."""
        return self.source or f"{self.path.name}:{cell.line}"

    def profile_mark(self, name: str) -> tuple[int, int, str]:
        """Where the `profiles` list names `name`, as (line, column, field), for messages."""
        for i, (entry, line, column) in enumerate(self.profile_marks):
            if entry == name:
                return line, column, f"profiles[{i}]"
        return 1, 1, "profiles"

    @property
    def constraints_dir(self) -> Path:
        return self.root / "constraints"


# ---------------------------------------------------------------- sections


def _requirement(node: yaml.Node, where: str, problems: Problems) -> str | None:
    text = scalar(node, where, problems)
    if text is None:
        return None
    try:
        Requirement(text)
    except InvalidRequirement as exc:
        problems.add(node, where, f"invalid requirement {text!r}: {str(exc).splitlines()[0]}")
        return None
    return text


_INCLUDE = re.compile(r"^(-r|-c)\s+(\S.*)$")  # a `requirements` entry naming a file


def _requirements(
    node: yaml.Node, problems: Problems, root: Path
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """`requirements`: PEP 508 lines, and `-r FILE` / `-c FILE` entries (relative to the
    matrix) expanded into their files' lines by pip's rules (`builder.requirements`).
    Returns each requirement with where it comes from, and the constraint lines."""
    origins: list[tuple[str, str]] = []
    constraints: list[str] = []
    for i, item in enumerate(sequence(node, "requirements", problems)):
        where = f"requirements[{i}]"
        text = scalar(item, where, problems)
        include = _INCLUDE.match(text) if text is not None else None
        if include is not None:
            declared = _included(item, where, problems, root, include[1], include[2].strip())
            origins += ((line.text, line.origin) for line in declared.requirements)
            constraints += (line.text for line in declared.constraints)
        elif text is not None and text.startswith("-"):
            problems.add(
                item,
                where,
                f"unsupported entry {text!r} (expected a PEP 508 line, `-r FILE` or `-c FILE`)",
            )
        elif text is not None and _requirement(item, where, problems):
            origins.append((text, f"{problems.path.name}:{item.start_mark.line + 1}"))
    return tuple(origins), tuple(constraints)


def _included(
    node: yaml.Node, where: str, problems: Problems, root: Path, flag: str, name: str
) -> Declared:
    """A `-r`/`-c` entry's file and its includes (nothing, when they have problems); index
    options there are refused, since the matrix's `indexes` decide them (per CUDA)."""
    try:
        declared = read_requirements(root, name, constraints=flag == "-c")
    except InputError as exc:
        problems.add(node, where, exc.message, exc.hint)
        return Declared()
    for option in declared.indexes:
        problems.add(
            node,
            where,
            f"{option.origin}: {option.flag} in a requirements file: a matrix's indexes "
            "are its `indexes` section",
            hint="move it to indexes.index_url, indexes.extra_index_urls (a URL, or {url, "
            "cuda}) or indexes.wheelhouse",
        )
    return Declared() if declared.indexes else declared


def _pin_specifier(node: yaml.Node, where: str, problems: Problems) -> str | None:
    """An axis value: a bare version means `==version`, else a full specifier."""
    text = scalar(node, where, problems)
    if text is None:
        return None
    if ";" in text or text.strip() != text or not all(p.strip() for p in text.split(",")):
        problems.add(node, where, f"invalid version or specifier {text!r}")
        return None
    try:
        if text[0] in string.digits:
            return f"=={Version(text)}"
        SpecifierSet(text)
        return text.replace(" ", "")
    except (InvalidVersion, InvalidSpecifier):
        problems.add(
            node,
            where,
            f"invalid version or specifier {text!r} "
            "(use a version like 2.4.0 or a specifier like >=4.49,<4.52)",
        )
        return None


def _preinstalled(
    node: yaml.Node, where: str, problems: Problems
) -> tuple[tuple[str, str], ...] | str:
    """A list of name==version, or `auto`."""
    if isinstance(node, yaml.ScalarNode) and node.value == AUTO and node.tag.endswith(":str"):
        return AUTO
    out = []
    for i, item in enumerate(sequence(node, where, problems)):
        text = scalar(item, join(where, i), problems)
        if text is None:
            continue
        name, sep, version = text.partition("==")
        try:
            if not sep or not _DIST.match(name.strip()):
                raise InvalidVersion(text)
            out.append((canonicalize_name(name.strip()), str(Version(version.strip()))))
        except InvalidVersion:
            problems.add(item, join(where, i), f"expected name==version, got {text!r}")
    return tuple(out)


def _image(node: yaml.Node, where: str, problems: Problems, repository: bool = False) -> str | None:
    """An image reference by distribution's grammar (`name[:tag][@digest]`); a `repository`
    (the matrix's `registry`, which cell tags are added to) has neither tag nor digest."""
    text = scalar(node, where, problems)
    if text is None:
        return None
    if len(text) > MAX_REFERENCE:
        problems.add(node, where, f"invalid image reference: longer than {MAX_REFERENCE}")
        return None
    try:
        reference = Reference.parse(text)
    except (InvalidReference, InvalidDigest) as exc:
        problems.add(node, where, f"invalid image reference {text!r}: {exc}")
        return None
    if repository and (reference["tag"] or reference["digest"]):
        problems.add(
            node, where, f"invalid repository {text!r}: no :tag or @digest (cell ids are tags)"
        )
        return None
    return text


def _base(name: str, node: yaml.Node, where: str, problems: Problems) -> Base | None:
    fields = mapping(node, where, problems, BASE_KEYS)
    for required in ("image", "python"):
        if required not in fields and isinstance(node, yaml.MappingNode):
            problems.add(node, join(where, required), "missing required key")
    image = python = None
    if "image" in fields:
        image = _image(fields["image"][1], join(where, "image"), problems)
    if "python" in fields:
        python = scalar(
            fields["python"][1],
            join(where, "python"),
            problems,
            _PYTHON,
            'Python version (expected like "3.10"; quote it in YAML)',
        )
    cuda = None
    if "cuda" in fields and not is_null(fields["cuda"][1]):
        cuda = scalar(
            fields["cuda"][1],
            join(where, "cuda"),
            problems,
            _CUDA,
            'CUDA version (expected like "12.1", or null for CPU)',
        )
    platform = optional(fields, "platform", where, problems, choice, list(PLATFORMS), "platform")
    platform = platform or "linux/amd64"
    apt = optional(fields, "apt", where, problems, strings, _APT, "Debian package name") or ()
    pre = optional(fields, "preinstalled", where, problems, _preinstalled) or ()
    reuse = optional(fields, "reuse_preinstalled", where, problems, boolean) or False
    if reuse and not pre:
        problems.add(
            fields["reuse_preinstalled"][1],
            join(where, "reuse_preinstalled"),
            "nothing to reuse: declare `preinstalled` (name==version list, or auto)",
        )
    if image is None or python is None:
        return None
    return Base(
        name=name,
        image=image,
        python=python,
        cuda=cuda,
        platform=platform,
        apt=apt,
        preinstalled=() if isinstance(pre, str) else pre,
        preinstalled_auto=pre == AUTO,
        reuse_preinstalled=reuse,
    )


def _bases(node: yaml.Node, problems: Problems) -> dict[str, Base | None]:
    """Each declared base by name; None for one that has problems (already reported)."""
    out: dict[str, Base | None] = {}
    fields = mapping(node, "bases", problems)
    if isinstance(node, yaml.MappingNode) and not fields and not node.value:
        problems.add(node, "bases", "at least one base is required")
    for name, (key_node, value_node) in fields.items():
        if not BASE_NAME.match(name):
            problems.add(
                key_node, join("bases", name), "base names use lowercase letters, digits and '-'"
            )
            continue
        out[name] = _base(name, value_node, join("bases", name), problems)
    return out


@dataclass(frozen=True)
class _Entry:
    """A partial cell (axes combination, include or exclude entry) with its position."""

    values: tuple[tuple[str, str], ...]  # (key, raw value)
    nodes: Mapping[str, yaml.Node]
    line: int
    paths: Mapping[str, str]  # key -> dotted path of its value, for messages

    def get(self, key: str) -> str | None:
        return dict(self.values).get(key)


def _axis_name(key_node: yaml.Node, where: str, problems: Problems, known: Sequence[str]) -> bool:
    name = key_node.value
    if name == "base":
        return True
    if not _DIST.match(name):
        problems.add(key_node, where, "an axis is `base` or a distribution name")
        return False
    close = difflib.get_close_matches(canonicalize_name(name), known, n=1, cutoff=0.75)
    if canonicalize_name(name) not in known and close:
        problems.add(key_node, where, f"unknown key (did you mean '{close[0]}'?)")
        return False
    return True


def _axes(
    node: yaml.Node, problems: Problems, known: Sequence[str]
) -> list[tuple[str, list[yaml.Node]]]:
    out = []
    fields = mapping(node, "axes", problems)
    if isinstance(node, yaml.MappingNode) and not node.value:
        problems.add(node, "axes", "at least one axis is required")
    for name, (key_node, value_node) in fields.items():
        where = join("axes", name)
        if not _axis_name(key_node, where, problems, known):
            continue
        values = sequence(value_node, where, problems)
        if isinstance(value_node, yaml.SequenceNode) and not values:
            problems.add(value_node, where, "an axis needs at least one value")
        out.append((name, values))
    return out


def _entries(node: yaml.Node, where: str, problems: Problems) -> list[_Entry]:
    out = []
    for i, item in enumerate(sequence(node, where, problems)):
        fields = mapping(item, join(where, i), problems)
        if isinstance(item, yaml.MappingNode) and not fields and not item.value:
            problems.add(item, join(where, i), "an entry needs at least one key")
        values = []
        for key, (_, value_node) in fields.items():
            text = scalar(value_node, join(join(where, i), key), problems)
            if text is not None:
                values.append((key, text))
        out.append(
            _Entry(
                tuple(values),
                {k: v for k, (_, v) in fields.items()},
                item.start_mark.line + 1,
                {k: join(join(where, i), k) for k in fields},
            )
        )
    return out


def _combine(axes: list[tuple[str, list[yaml.Node]]], problems: Problems) -> list[_Entry]:
    """The Cartesian product of the axes, in file order."""
    columns = []
    for name, values in axes:
        column = []
        for i, node in enumerate(values):
            text = scalar(node, join(join("axes", name), i), problems)
            if text is not None:
                column.append((name, text, node, join(join("axes", name), i)))
        columns.append(column)
    out = []
    for combo in itertools.product(*columns):
        line = min(n.start_mark.line for _, _, n, _ in combo) + 1 if combo else 1
        out.append(
            _Entry(
                tuple((k, v) for k, v, _, _ in combo),
                {k: n for k, _, n, _ in combo},
                line,
                {k: p for k, _, _, p in combo},
            )
        )
    return out


def _matches(entry: _Entry, combo: Mapping[str, str]) -> bool:
    return all(combo.get(k) == v for k, v in entry.values)


def expand(
    axis_names: Sequence[str], combos: list[_Entry], exclude: list[_Entry], include: list[_Entry]
) -> list[_Entry]:
    """GitHub Actions semantics: exclude first, then each include entry is merged into every
    combination whose original axis values it matches (it may overwrite values added by an
    earlier include, never original ones); an entry that matches none becomes a new cell."""
    kept = [c for c in combos if not any(_matches(e, dict(c.values)) for e in exclude)]
    cells = [(dict(c.values), dict(c.nodes), c.line, dict(c.paths)) for c in kept]
    originals = [dict(c.values) for c in kept]
    for entry in include:
        hit = False
        for (values, nodes, _, paths), original in zip(cells, originals, strict=True):
            if all(original.get(k) == v for k, v in entry.values if k in axis_names):
                values.update(entry.values)
                nodes.update(entry.nodes)
                paths.update(entry.paths)
                hit = True
        if not hit:
            cells.append((dict(entry.values), dict(entry.nodes), entry.line, dict(entry.paths)))
            originals.append({})
    return [_Entry(tuple(v.items()), n, line, p) for v, n, line, p in cells]


def _check_excludes(exclude: list[_Entry], axis_names: Sequence[str], problems: Problems) -> None:
    for i, entry in enumerate(exclude):
        for key, _ in entry.values:
            if key not in axis_names:
                problems.add(
                    entry.nodes[key],
                    f"exclude[{i}].{key}",
                    f"not an axis of this matrix{suggest(key, axis_names)}",
                )


def _spec_slug(specifier: str) -> str:
    for op, word in _SPEC_WORDS:
        specifier = specifier.replace(op, word)
    return specifier.replace(",", "-")


def cell_id(base: str, pins: Sequence[Pin]) -> str:
    """`<base>.<name>-<version>...`, readable, and safe as a file name and an image tag."""
    parts = [base]
    for pin in pins:
        value = (
            pin.specifier[2:]
            if pin.specifier.startswith("==") and "," not in pin.specifier
            else _spec_slug(pin.specifier)
        )
        parts.append(f"{canonicalize_name(pin.name)}-{value}")
    full = _ID_UNSAFE.sub("_", ".".join(parts).lower())
    if len(full) <= MAX_ID:
        return full
    # Cut, but keep it unique: two long ids that share a prefix still differ in the hash.
    digest = hashlib.sha256(full.encode("utf-8")).hexdigest()[:16]
    return f"{full[: MAX_ID - len(digest) - 1]}-{digest}"


# ---------------------------------------------------------------- shared sections


def _url(node: yaml.Node, where: str, problems: Problems) -> str | None:
    """An index URL: characters safe in a RUN line, a host (for http and https), no
    credentials (check prints the URL and the Dockerfile's RUN lines hold it)."""
    text = scalar(node, where, problems, _URL, "URL")
    if text is None:
        return None
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        problems.add(node, where, f"invalid URL {text!r}: {exc}")
        return None
    if parts.username is not None or parts.password is not None:
        problems.add(
            node,
            where,
            "credentials in the URL would be printed and written into the Dockerfile",
            hint="put index credentials in a netrc file and pass its path as BUILDER_NETRC "
            "(a BuildKit secret, never in a layer)",
        )
        return None
    if parts.scheme != "file" and not parts.hostname:
        problems.add(node, where, f"invalid URL {text!r}: no host")
        return None
    return text


def _index_urls(
    node: yaml.Node,
    where: str,
    problems: Problems,
) -> tuple[tuple[str, tuple[str | None, ...] | None], ...]:
    """extra_index_urls: a URL, or {url, cuda} where cuda is a version, a list, or null (CPU)."""
    out: list[tuple[str, tuple[str | None, ...] | None]] = []
    for i, item in enumerate(sequence(node, where, problems)):
        at = join(where, i)
        if isinstance(item, yaml.ScalarNode):
            url = _url(item, at, problems)
            if url:
                out.append((url, None))
            continue
        fields = mapping(item, at, problems, ("url", "cuda"))
        if "url" not in fields:
            problems.add(item, join(at, "url"), "missing required key")
            continue
        url = _url(fields["url"][1], join(at, "url"), problems)
        cudas: tuple[str | None, ...] = (None,)
        if "cuda" in fields and not is_null(fields["cuda"][1]):
            cuda_node = fields["cuda"][1]
            cudas = (
                strings(cuda_node, join(at, "cuda"), problems, _CUDA, "CUDA version")
                if isinstance(cuda_node, yaml.SequenceNode)
                else (scalar(cuda_node, join(at, "cuda"), problems, _CUDA, "CUDA version"),)
            )
        if url:
            out.append((url, cudas))
    return tuple(out)


@dataclass(frozen=True)
class _IndexSpec:
    index_url: str | None
    extra: tuple[tuple[str, tuple[str | None, ...] | None], ...]
    wheelhouse: tuple[Path, ...]
    ca_bundle: Path | None

    def for_cuda(self, cuda: str | None) -> Indexes:
        def fits(cudas: tuple[str | None, ...] | None) -> bool:
            return cudas is None or any(_same_cuda(c, cuda) for c in cudas)

        extra = tuple(url for url, cudas in self.extra if fits(cudas))
        return Indexes(
            index_url=self.index_url,
            extra_index_urls=extra,
            wheelhouse=self.wheelhouse,
            ca_bundle=self.ca_bundle,
        )


def _same_cuda(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.split(".")[:2] == b.split(".")[:2]


def _local_path(
    node: yaml.Node, where: str, problems: Problems, root: Path, want_dir: bool
) -> Path | None:
    text = scalar(node, where, problems)
    if text is None:
        return None
    try:
        path = (root / text).resolve()
        ok = path.is_dir() if want_dir else path.is_file()
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
        problems.add(node, where, f"cannot use {text!r}: {getattr(exc, 'strerror', None) or exc}")
        return None
    if not ok:
        problems.add(node, where, f"{'directory' if want_dir else 'file'} not found: {path}")
        return None
    return path


def _indexes(node: yaml.Node, problems: Problems, root: Path) -> _IndexSpec:
    fields = mapping(node, "indexes", problems, INDEX_KEYS)
    index_url = None
    if "index_url" in fields:
        index_url = _url(fields["index_url"][1], "indexes.index_url", problems)
    extra = optional(fields, "extra_index_urls", "indexes", problems, _index_urls) or ()
    wheelhouse: list[Path] = []
    if "wheelhouse" in fields:
        for i, item in enumerate(sequence(fields["wheelhouse"][1], "indexes.wheelhouse", problems)):
            path = _local_path(item, f"indexes.wheelhouse[{i}]", problems, root, want_dir=True)
            if path:
                wheelhouse.append(path)
    ca = None
    if "ca_bundle" in fields and not is_null(fields["ca_bundle"][1]):
        ca = _local_path(
            fields["ca_bundle"][1], "indexes.ca_bundle", problems, root, want_dir=False
        )
    return _IndexSpec(index_url, extra, tuple(wheelhouse), ca)


def _probes(
    node: yaml.Node,
    problems: Problems,
) -> tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]:
    """`probes`: a list of names, or a mapping of name to options (null for none)."""
    if isinstance(node, yaml.SequenceNode):
        names = strings(node, "probes", problems)
        for i, name in enumerate(names):
            if name == SERVE_PROBE:
                message = "needs options (probes as a mapping: serve: {mode: ...})"
                problems.add(node.value[i], f"probes[{i}]", message)
            elif name not in PROBES:
                problems.add(node.value[i], f"probes[{i}]", f"unknown probe{suggest(name, PROBES)}")
        return tuple((n, ()) for n in names if n in PROBES)
    out = []
    for name, (_, value) in mapping(node, "probes", problems, PROBE_NAMES).items():
        options: tuple[tuple[str, Any], ...] = ()
        if name == SERVE_PROBE:
            options = _serve_options(value, join("probes", name), problems)
        elif not is_null(value):
            options = _probe_options(value, join("probes", name), problems)
        out.append((name, options))
    return tuple(out)


def _probe_options(node: yaml.Node, where: str, problems: Problems) -> tuple[tuple[str, Any], ...]:
    """A probe's options, built from the nodes: JSON-able values (see `yamlnodes.plain`)."""
    if not isinstance(node, yaml.MappingNode):
        problems.add(node, where, f"expected a mapping of options or null, got {kind(node)}")
        return ()
    options = []
    for key, (_, value_node) in mapping(node, where, problems).items():
        before = len(problems.items)
        value = plain(value_node, join(where, key), problems)
        problem = _option_problem(key, value) if len(problems.items) == before else None
        if problem:
            problems.add(value_node, join(where, key), problem)
        options.append((key, _freeze(value)))
    return tuple(sorted(options))


def _option_problem(key: str, value: Any) -> str | None:
    wanted = PROBE_OPTION_TYPES.get(key)
    if wanted and (not isinstance(value, wanted) or isinstance(value, bool)):
        return f"expected {_type_name(wanted)}"
    if key == "timeout" and value <= 0:
        return "must be positive"
    if key == "memory" and not MEMORY.match(value):
        return "expected a size like 2g or 512m"
    if isinstance(value, str) and UNSAFE.search(value):
        return "unsafe value"
    return None


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _freeze(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _type_name(wanted: type | tuple[type, ...]) -> str:
    names = [k.__name__ for k in (wanted if isinstance(wanted, tuple) else (wanted,))]
    return {"int": "a number", "str": "a string"}.get(names[0], names[0])


def _serve_options(node: yaml.Node, where: str, problems: Problems) -> tuple[tuple[str, Any], ...]:
    """`probes.serve`: the mode that runs the image's own command, and what counts as serving.
    Unknown keys and keys of another mode are refused; each mode's required key is checked."""
    fields = mapping(node, where, problems, SERVE_KEYS)
    if isinstance(node, yaml.MappingNode) and "mode" not in fields:
        problems.add(node, join(where, "mode"), "missing required key (runpod, http or command)")
    mode = optional(fields, "mode", where, problems, choice, SERVE_MODES)
    for key, (key_node, value_node) in fields.items():
        modes = SERVE_MODE_KEYS.get(key, SERVE_MODES)
        if mode and mode not in modes:
            problems.add(key_node, join(where, key), f"only for mode {' or '.join(modes)}")
        elif key in _SERVE_READERS:
            _SERVE_READERS[key](value_node, join(where, key), problems)
    required = {"http": "url", "command": "argv"}.get(mode or "")
    if required and required not in fields:
        problems.add(node, join(where, required), f"missing required key for mode {mode}")
    return _probe_options(node, where, problems) if fields else ()


def _serve_url(node: yaml.Node, where: str, problems: Problems) -> None:
    text = scalar(node, where, problems)
    parts = urllib.parse.urlsplit(text or "")
    if text is not None and (parts.scheme not in ("http", "https") or not parts.hostname):
        problems.add(node, where, f"expected an http:// or https:// URL, got {text!r}")


def _serve_input(node: yaml.Node, where: str, problems: Problems) -> None:
    value = plain(node, where, problems)
    if not isinstance(value, dict) or "input" not in value:
        problems.add(node, where, "expected a RunPod job: a mapping with an `input` key")


def _serve_request(node: yaml.Node, where: str, problems: Problems) -> None:
    fields = mapping(node, where, problems, SERVE_REQUEST_KEYS)
    optional(fields, "method", where, problems, choice, HTTP_METHODS)
    optional(fields, "path", where, problems, scalar, _REQUEST_PATH, "path (one starting with /)")
    optional(fields, "url", where, problems, _serve_url)
    optional(fields, "json", where, problems, plain)
    if "path" in fields and "url" in fields:
        problems.add(fields["url"][0], join(where, "url"), "give `path` or `url`, not both")


def _serve_expect(node: yaml.Node, where: str, problems: Problems) -> None:
    fields = mapping(node, where, problems, SERVE_EXPECT_KEYS)
    optional(fields, "status", where, problems, _integer, 100, 599)
    optional(fields, "exit_code", where, problems, _integer, 0, 255)
    optional(fields, "keys", where, problems, strings)
    pattern = optional(fields, "output", where, problems, scalar)
    try:
        re.compile(pattern or "")
    except re.error as exc:
        problems.add(fields["output"][1], join(where, "output"), f"invalid regex: {exc}")


_SERVE_READERS: Mapping[str, Callable[[yaml.Node, str, Problems], object]] = {
    "url": _serve_url,
    "input": _serve_input,
    "argv": lambda node, where, problems: _argv(node, where, problems),  # defined below
    "request": _serve_request,
    "expect": _serve_expect,
}


def _check_serve_command(
    node: yaml.Node, probes: tuple[tuple[str, Any], ...], image: ImageConfig, problems: Problems
) -> None:
    """The runpod and http modes run the image's own entrypoint and cmd: it must have one."""
    mode = dict(dict(probes).get(SERVE_PROBE, ())).get("mode")
    if mode not in ("runpod", "http") or image.cmd or image.entrypoint:
        return
    problems.add(
        mapping(node, "probes", problems)[SERVE_PROBE][1],
        join("probes", SERVE_PROBE),
        f"mode {mode} runs the image's own command, but `image` has no `cmd` or `entrypoint`",
        hint="set image.cmd (e.g. [python, -u, handler.py]), or use serve mode `command`",
    )


def _app(node: yaml.Node, problems: Problems, root: Path) -> App | None:
    """`app`: `path` (a directory here) or `git` (a repository at a commit), not both; then
    `files` on top of either, and the `entry_modules` the probes import."""
    fields = mapping(node, "app", problems, APP_KEYS)
    if "path" not in fields and "git" not in fields:
        if isinstance(node, yaml.MappingNode):
            problems.add(
                node,
                "app.path",
                "missing required key",
                hint="give `app.path` (a directory) or `app.git` ({url, rev})",
            )
        return None
    if "path" in fields and "git" in fields:
        problems.add(
            fields["git"][0],
            "app.git",
            "`app.path` and `app.git` are exclusive: the app is one or the other",
            hint="add local files on top of a clone with `app.files`",
        )
        return None
    path = git = None
    if "path" in fields:
        path = _inside(fields["path"][1], "app.path", problems, root, want_dir=True)
    else:
        git = _git_source(fields["git"][1], problems)
    files = optional(fields, "files", "app", problems, _app_files, root) or ()
    modules = (
        optional(fields, "entry_modules", "app", problems, strings, MODULE_NAME, "module name")
        or ()
    )
    if path is None and git is None:
        return None
    return App(path=path, git=git, files=files, entry_modules=modules)


def _inside(
    node: yaml.Node, where: str, problems: Problems, root: Path, want_dir: bool
) -> Path | None:
    """A local path inside the matrix's directory (what is copied into the image)."""
    path = _local_path(node, where, problems, root, want_dir=want_dir)
    if path is not None and not path.is_relative_to(root.resolve()):
        what = "the app directory is" if want_dir else "app files are"
        problems.add(
            node,
            where,
            f"{path} is outside the matrix's directory {root.resolve()} ({what} copied into "
            "the image)",
        )
        return None
    return path


def _app_files(node: yaml.Node, where: str, problems: Problems, root: Path) -> tuple[Path, ...]:
    """`app.files`: regular files inside the matrix's directory, copied into the app's root
    by their names (so two with one name would overwrite each other: refused)."""
    out: list[Path] = []
    names: dict[str, str] = {}
    for i, item in enumerate(sequence(node, where, problems)):
        at = join(where, i)
        path = _inside(item, at, problems, root, want_dir=False)
        if path is None:
            continue
        if path.name in names:
            problems.add(item, at, f"{path.name!r} is already copied from {names[path.name]}")
            continue
        names[path.name] = str(path)
        out.append(path)
    return tuple(out)


def _git_source(node: yaml.Node, problems: Problems) -> GitSource | None:
    """`app.git`: {url, rev}, an https:// or file:// URL and a full commit."""
    fields = mapping(node, "app.git", problems, APP_GIT_KEYS)
    for required in APP_GIT_KEYS:
        if required not in fields and isinstance(node, yaml.MappingNode):
            problems.add(node, f"app.git.{required}", "missing required key")
    if len(fields) < len(APP_GIT_KEYS) or not isinstance(node, yaml.MappingNode):
        return None
    url = _git_url(fields["url"][1], problems)
    rev = _git_rev(fields["rev"][1], problems)
    return GitSource(url=url, rev=rev) if url and rev else None


def _git_url(node: yaml.Node, problems: Problems) -> str | None:
    """The index URL policy (safe characters, no credentials), and https:// or file:// only:
    ssh needs the user's keys, and http can be tampered with on the way."""
    if isinstance(node, yaml.ScalarNode) and SCP_LIKE.match(str(node.value)):
        problems.add(
            node,
            "app.git.url",
            f"{node.value!r}: ssh URLs are not supported (builder clones without your keys)",
            hint="use the repository's https:// URL",
        )
        return None
    url = _url(node, "app.git.url", problems)
    if url and urllib.parse.urlsplit(url).scheme not in ("https", "file"):
        problems.add(
            node,
            "app.git.url",
            f"{url!r}: only https:// and file:// repositories are supported",
            hint="use the repository's https:// URL",
        )
        return None
    return url


def _git_rev(node: yaml.Node, problems: Problems) -> str | None:
    """A full 40-hex commit: a branch, tag or short sha can name another commit tomorrow."""
    text = scalar(node, "app.git.rev", problems)
    if text is None:
        return None
    if GIT_COMMIT.match(text):
        return text.lower()
    what = (
        "a short commit (it can become ambiguous)"
        if SHORT_COMMIT.match(text)
        else "a branch or tag name (it moves)"
    )
    problems.add(
        node,
        "app.git.rev",
        f"{text!r} is {what}: give a full 40-hex commit, so that the image is reproducible",
        hint=f"find it with `git rev-parse {shlex.quote(text)}` (or `git ls-remote URL`)",
    )
    return None


def _image_config(node: yaml.Node, problems: Problems) -> ImageConfig:
    """`image`: every key optional; every value lands in the final stage of the Dockerfile."""
    fields = mapping(node, "image", problems, IMAGE_KEYS)
    env: dict[str, str] = {}
    if "env" in fields:
        for key, (key_node, value_node) in mapping(fields["env"][1], "image.env", problems).items():
            if not ENV_NAME.match(key):
                problems.add(key_node, f"image.env.{key}", "invalid variable name")
            elif (value := _env_value(value_node, f"image.env.{key}", problems)) is not None:
                env[key] = value
    user = optional(fields, "user", "image", problems, scalar, _USER, "user name")
    if user == "root":
        problems.add(fields["user"][1], "image.user", "must not be root (leave it out for root)")
        user = None
    return ImageConfig(
        env=tuple(env.items()),
        workdir=optional(fields, "workdir", "image", problems, scalar, _WORKDIR, "absolute path"),
        entrypoint=optional(fields, "entrypoint", "image", problems, _argv),
        cmd=optional(fields, "cmd", "image", problems, _argv),
        expose=optional(fields, "expose", "image", problems, _ports) or (),
        user=user,
        healthcheck=optional(fields, "healthcheck", "image", problems, _healthcheck),
    )


def _env_value(node: yaml.Node, where: str, problems: Problems) -> str | None:
    """An env value: a string, or a number or boolean taken as its source text."""
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith((":int", ":float", ":bool")):
        return str(node.value)
    return scalar(node, where, problems)


def _argv(node: yaml.Node, where: str, problems: Problems) -> tuple[str, ...] | None:
    """A non-empty exec-form argument list."""
    before = len(problems.items)
    argv = strings(node, where, problems)
    if not argv and len(problems.items) == before:
        problems.add(node, where, "expected a non-empty list of strings")
    return argv if len(problems.items) == before and argv else None


def _integer(node: yaml.Node, where: str, problems: Problems, low: int, high: int) -> int | None:
    text = node.value if isinstance(node, yaml.ScalarNode) else None
    if not (node.tag.endswith(":int") and isinstance(text, str) and text.isdigit()):
        problems.add(node, where, f"expected a whole number, got {kind(node)}")
        return None
    if not low <= int(text) <= high:
        problems.add(node, where, f"{text} is out of range {low}-{high}")
        return None
    return int(text)


def _ports(node: yaml.Node, where: str, problems: Problems) -> tuple[int, ...]:
    ports = (
        _integer(n, join(where, i), problems, 1, 65535)
        for i, n in enumerate(sequence(node, where, problems))
    )
    return tuple(dict.fromkeys(p for p in ports if p is not None))


def _healthcheck(node: yaml.Node, where: str, problems: Problems) -> Healthcheck | None:
    fields = mapping(node, where, problems, HEALTHCHECK_KEYS)
    if "cmd" not in fields:
        if isinstance(node, yaml.MappingNode):
            problems.add(node, join(where, "cmd"), "missing required key")
        return None
    cmd = _argv(fields["cmd"][1], join(where, "cmd"), problems)
    durations = {
        key: optional(fields, key, where, problems, scalar, _DURATION, "duration (like 30s or 1m)")
        for key in ("interval", "timeout")
    }
    retries = None
    if "retries" in fields:
        retries = _integer(fields["retries"][1], join(where, "retries"), problems, 1, 1000)
    if cmd is None:
        return None
    return Healthcheck(cmd=cmd, retries=retries, **durations)


def _steps(node: yaml.Node, problems: Problems) -> tuple[Step, ...]:
    """`steps`: user build steps, in order; names unique."""
    steps: list[Step] = []
    seen: set[str] = set()
    for i, item in enumerate(sequence(node, "steps", problems)):
        step = _step(item, f"steps[{i}]", problems)
        if step is not None and step.name in seen:
            problems.add(item, f"steps[{i}].name", f"duplicate step name {step.name!r}")
        elif step is not None:
            seen.add(step.name)
            steps.append(step)
    return tuple(steps)


def _step(node: yaml.Node, where: str, problems: Problems) -> Step | None:
    fields = mapping(node, where, problems, STEP_KEYS)
    for required in ("name", "at", "run"):
        if required not in fields and isinstance(node, yaml.MappingNode):
            problems.add(node, join(where, required), "missing required key")
    name = optional(fields, "name", where, problems, scalar, BASE_NAME, "step name (a-z, 0-9, -)")
    at = optional(fields, "at", where, problems, choice, STEP_POINTS, "step point")
    run = optional(fields, "run", where, problems, _shell)
    listed = (
        sequence(fields["secrets"][1], f"{where}.secrets", problems) if "secrets" in fields else []
    )
    secrets = (
        choice(n, f"{where}.secrets[{j}]", problems, STEP_SECRETS, "secret")
        for j, n in enumerate(listed)
    )
    names = tuple(dict.fromkeys(s for s in secrets if s is not None))
    if name is None or at is None or run is None:
        return None
    return Step(name=name, at=at, run=run, secrets=names)


def _shell(node: yaml.Node, where: str, problems: Problems) -> str | None:
    """A step's shell command: any shell, but one line, and no Jinja delimiters or NUL."""
    if not isinstance(node, yaml.ScalarNode) or is_null(node) or node.tag.endswith(":bool"):
        problems.add(node, where, f"expected a string, got {kind(node)}")
        return None
    text = str(node.value).strip()
    if not text or _STEP_UNSAFE.search(text):
        problems.add(
            node,
            where,
            f"unsafe or empty command {text!r}: one line of shell, without NUL bytes, Jinja "
            "delimiters or a trailing backslash (join commands with && or ;)",
        )
        return None
    return text


# ---------------------------------------------------------------- fleet
#
# `fleet: {gpus: [rtx4090, h100, sm_120], driver: "550.54.15"}`: the GPUs an image will land on
# (names from builder/data/gpus.yaml, or a raw sm_XY) and the oldest NVIDIA driver among its
# hosts. A base may narrow it (`bases.X.fleet`): a subset of the GPUs, a driver no older.
# `builder check` (builder/check/fleet.py) and the cuda probe judge each cell against it.

GPU_TABLE = Path(__file__).resolve().parent / "data" / "gpus.yaml"
FLEET_KEYS = ("gpus", "driver")
RAW_SM = re.compile(r"^sm_([1-9][0-9]?)([0-9])$", re.ASCII)
_DRIVER = re.compile(r"^[1-9][0-9]{2,3}(?:\.[0-9]{1,3}){0,2}$", re.ASCII)


@dataclass(frozen=True, kw_only=True)
class FleetGpu:
    """One GPU of a fleet: a table name (`rtx5090`) or a raw `sm_120`."""

    name: str
    sm: str  # "sm_120"
    label: str  # "NVIDIA GeForce RTX 5090"; the sm itself for a raw entry
    source: str  # where its compute capability comes from

    @property
    def capability(self) -> tuple[int, int]:
        match = RAW_SM.match(self.sm)
        assert match, self.sm
        return int(match[1]), int(match[2])


@dataclass(frozen=True, kw_only=True)
class Fleet:
    """The GPUs a cell's image serves on, and the oldest driver among their hosts."""

    gpus: tuple[FleetGpu, ...] = ()
    driver: str | None = None

    def to_json(self) -> dict[str, Any]:
        gpus = [{"name": g.name, "sm": g.sm, "label": g.label} for g in self.gpus]
        return {"gpus": gpus, "driver": self.driver}


def load_gpu_table(path: Path = GPU_TABLE) -> dict[str, FleetGpu]:
    """builder/data/gpus.yaml: name -> the GPU with its sm_XY, label and source."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = {}
    for name, row in data["gpus"].items():
        major, minor = str(row["capability"]).split(".")
        sm = f"sm_{major}{minor}"
        out[name] = FleetGpu(name=name, sm=sm, label=row["label"], source=row["source"])
    return out


def driver_key(version: str) -> tuple[int, ...]:
    """A driver version as numbers: "550.54.15" < "580"."""
    return tuple(int(part) for part in version.split("."))


def _fleets(top: Mapping[str, tuple[yaml.Node, yaml.Node]], problems: Problems) -> dict[str, Any]:
    """`fleet` and each `bases.X.fleet` (a base's other keys are `_base`'s)."""
    nodes = _base_fleet_nodes(top["bases"][1])
    if "fleet" not in top and not nodes:
        return {"fleet": None, "fleets": {}}
    table = load_gpu_table()
    fleet = _fleet(top["fleet"][1], "fleet", problems, table, None) if "fleet" in top else None
    fleets = {
        name: _fleet(node, f"bases.{name}.fleet", problems, table, fleet) for name, node in nodes
    }
    return {"fleet": fleet, "fleets": {k: v for k, v in fleets.items() if v is not None}}


def _base_fleet_nodes(bases: yaml.Node) -> list[tuple[str, yaml.Node]]:
    """(base name, its `fleet` node) for every base that has one."""
    out = []
    for name_node, base in bases.value if isinstance(bases, yaml.MappingNode) else ():
        for key, value in base.value if isinstance(base, yaml.MappingNode) else ():
            if isinstance(key, yaml.ScalarNode) and key.value == "fleet":
                out.append((str(name_node.value), value))
    return out


def cell_fleet(shared: Mapping[str, Any], base: str) -> Fleet | None:
    """A cell's fleet: its base's, else the matrix's."""
    fleets: Mapping[str, Fleet] = shared.get("fleets") or {}
    return fleets.get(base) or shared.get("fleet")


def _fleet(
    node: yaml.Node,
    where: str,
    problems: Problems,
    table: Mapping[str, FleetGpu],
    parent: Fleet | None,
) -> Fleet | None:
    fields = mapping(node, where, problems, FLEET_KEYS)
    if isinstance(node, yaml.MappingNode) and not fields and not node.value:
        problems.add(node, where, "a fleet needs `gpus` or `driver`")
    gpus = parent.gpus if parent else ()
    if "gpus" in fields:
        gpus = _fleet_gpus(fields["gpus"][1], join(where, "gpus"), problems, table, parent)
    driver = optional(fields, "driver", where, problems, scalar, _DRIVER, "driver version")
    if driver and parent and parent.driver and driver_key(driver) < driver_key(parent.driver):
        problems.add(
            fields["driver"][1],
            join(where, "driver"),
            f"{driver} is older than the matrix's fleet.driver {parent.driver}: a base's "
            "fleet narrows the matrix's",
        )
    if not isinstance(node, yaml.MappingNode):
        return None
    return Fleet(gpus=gpus, driver=driver or (parent.driver if parent else None))


def _fleet_gpus(
    node: yaml.Node,
    where: str,
    problems: Problems,
    table: Mapping[str, FleetGpu],
    parent: Fleet | None,
) -> tuple[FleetGpu, ...]:
    """Table names or raw sm_XY, each once; under a parent fleet, only GPUs it has."""
    items = sequence(node, where, problems)
    if isinstance(node, yaml.SequenceNode) and not items:
        problems.add(node, where, "a fleet needs at least one GPU")
    out: dict[str, FleetGpu] = {}
    for i, item in enumerate(items):
        text = scalar(item, join(where, i), problems)
        gpu = _fleet_gpu(text, item, join(where, i), problems, table) if text else None
        if gpu is None:
            continue
        if gpu.name in out:
            problems.add(item, join(where, i), f"{gpu.name!r} is listed twice")
        elif parent and parent.gpus and gpu.sm not in {g.sm for g in parent.gpus}:
            names = ", ".join(g.name for g in parent.gpus)
            problems.add(
                item,
                join(where, i),
                f"{gpu.name} ({gpu.sm}) is not in the matrix's fleet ({names}): a base's "
                "fleet narrows the matrix's",
            )
        else:
            out[gpu.name] = gpu
    return tuple(out.values())


def _fleet_gpu(
    text: str, node: yaml.Node, where: str, problems: Problems, table: Mapping[str, FleetGpu]
) -> FleetGpu | None:
    if text in table:
        return table[text]
    if RAW_SM.match(text):
        return FleetGpu(name=text, sm=text, label=text, source="a compute capability in the matrix")
    problems.add(
        node,
        where,
        f"unknown GPU {text!r}{suggest(text, table)}",
        hint=f"name a GPU of builder/data/{GPU_TABLE.name} ({', '.join(sorted(table))}) or a compute "
        "capability as sm_XY (sm_89 for 8.9)",
    )
    return None


# ---------------------------------------------------------------- the reader


def load_matrix(path: Path) -> Matrix:
    """Read, validate and expand a matrix file. Raises InputError listing every problem."""
    if not os.path.lexists(path):
        raise InputError(
            f"{path}: matrix file not found",
            hint="pass -m FILE or run in a directory with matrix.yaml",
        )
    return parse_matrix(read_file(path, "matrix file"), path)


def parse_matrix(text: str, path: Path) -> Matrix:
    """Validate and expand matrix text; `path` names it in errors and anchors relative paths."""
    problems = Problems(path)
    root_node = compose(text, path, problems)
    if root_node is None:
        raise InputError(
            f"{path}:1:1: empty matrix file", hint="start with `version: 1`, `bases:` and `axes:`"
        )
    matrix = _build(root_node, problems, path)
    problems.raise_if_any()
    assert matrix is not None
    return matrix


def _build(root_node: yaml.Node, problems: Problems, path: Path) -> Matrix | None:
    top = mapping(root_node, "", problems, TOP_KEYS)
    for required in ("version", "bases", "axes"):
        if required not in top and isinstance(root_node, yaml.MappingNode):
            problems.add(root_node, required, "missing required key")
    if "version" in top:
        node = top["version"][1]
        if not (
            isinstance(node, yaml.ScalarNode) and node.tag.endswith(":int") and node.value == "1"
        ):
            problems.add(
                node,
                "version",
                f"unsupported version {node.value!r} (this builder reads 1)"
                if isinstance(node, yaml.ScalarNode)
                else "expected 1",
            )
    if not {"bases", "axes"} <= top.keys():
        return None
    shared = _shared(top, problems, path.parent)
    shared.update(_fleets(top, problems))
    bases = _bases(top["bases"][1], problems)
    known = sorted(
        {*WELL_KNOWN, *(canonicalize_name(Requirement(r).name) for r in shared["requirements"])}
    )
    axes = _axes(top["axes"][1], problems, known)
    axis_names = [name for name, _ in axes]
    exclude = _entries(top["exclude"][1], "exclude", problems) if "exclude" in top else []
    include = _entries(top["include"][1], "include", problems) if "include" in top else []
    _check_excludes(exclude, axis_names, problems)
    if _too_large(top, axes, problems):
        return None
    entries = expand(axis_names, _combine(axes, problems), exclude, include)
    cells = _cells(entries, bases, shared, problems, top["axes"][1])
    return Matrix(
        path=path,
        bases=tuple(b for b in bases.values() if b),
        cells=tuple(cells),
        registry=shared["registry"],
        runners=shared["runners"],
        profile_paths=shared["profile_paths"],
        profile_marks=shared["profile_marks"],
    )


def _too_large(
    top: Mapping[str, tuple[yaml.Node, yaml.Node]],
    axes: list[tuple[str, list[yaml.Node]]],
    problems: Problems,
) -> bool:
    """Refuse, before expanding, a matrix past MAX_CELLS: its axes' product, or an include
    or exclude list longer than that (each include entry may add a cell)."""
    before = len(problems.items)
    sizes = [len(values) for _, values in axes]
    product = math.prod(sizes)
    if product > MAX_CELLS:
        problems.add(
            top["axes"][1],
            "axes",
            f"the axes make {product} combinations ({' x '.join(map(str, sizes))}), more than "
            f"the {MAX_CELLS} cells a matrix may have (split it into several matrix files)",
        )
    for key in ("include", "exclude"):
        node = top[key][1] if key in top else None
        if isinstance(node, yaml.SequenceNode) and len(node.value) > MAX_CELLS:
            problems.add(node, key, f"{len(node.value)} entries, more than {MAX_CELLS}")
    return len(problems.items) > before


def _shared(
    top: Mapping[str, tuple[yaml.Node, yaml.Node]], problems: Problems, root: Path
) -> dict[str, Any]:
    """The sections every cell shares, each with its default."""

    def node(key: str) -> yaml.Node | None:
        return top[key][1] if key in top else None

    out: dict[str, Any] = {
        "requirements": (),
        "origins": (),
        "constraints": (),
        "index": _IndexSpec(None, (), (), None),
        "profiles": (),
        "probes": tuple((p, ()) for p in DEFAULT_PROBES),
        "gpu": "optional",
        "app": None,
        "registry": None,
        "runners": Matrix.runners,
        "profile_paths": (),
        "profile_marks": (),
        "image": ImageConfig(),
        "steps": (),
    }
    if (n := node("image")) is not None:
        out["image"] = _image_config(n, problems)
    if (n := node("steps")) is not None:
        out["steps"] = _steps(n, problems)
    if (n := node("requirements")) is not None:
        out["origins"], out["constraints"] = _requirements(n, problems, root)
        out["requirements"] = tuple(text for text, _ in out["origins"])
    if (n := node("indexes")) is not None:
        out["index"] = _indexes(n, problems, root)
    if (n := node("profiles")) is not None:
        out["profiles"] = strings(n, "profiles", problems, PROFILE_NAME, "profile name")
        out["profile_marks"] = marks(n)
    if (n := node("profile_paths")) is not None:
        paths = (
            _local_path(x, f"profile_paths[{i}]", problems, root, want_dir=True)
            for i, x in enumerate(sequence(n, "profile_paths", problems))
        )
        out["profile_paths"] = tuple(p for p in paths if p)
    if (n := node("probes")) is not None:
        out["probes"] = _probes(n, problems)
        _check_serve_command(n, out["probes"], out["image"], problems)
    if (n := node("gpu")) is not None:
        out["gpu"] = choice(n, "gpu", problems, GPU_MODES) or "optional"
    if (n := node("app")) is not None:
        out["app"] = _app(n, problems, root)
    if (n := node("registry")) is not None:
        out["registry"] = _image(n, "registry", problems, repository=True)
    if (n := node("runners")) is not None:
        fields = mapping(n, "runners", problems, RUNNER_KEYS)
        labels = {
            k: scalar(v, f"runners.{k}", problems, _LABEL, "runner label")
            for k, (_, v) in fields.items()
        }
        out["runners"] = tuple(
            {**dict(Matrix.runners), **{k: v for k, v in labels.items() if v}}.items()
        )
    return out


def _cells(
    entries: list[_Entry],
    bases: Mapping[str, Base | None],
    shared: Mapping[str, Any],
    problems: Problems,
    axes_node: yaml.Node,
) -> list[Cell]:
    cells: list[Cell] = []
    seen: dict[str, _Entry] = {}
    for entry in entries:
        cell = _cell(entry, bases, shared, problems)
        if cell is None:
            continue
        if cell.id in seen:
            problems.add(
                entry.nodes.get("base") or next(iter(entry.nodes.values())),
                "cells",
                f"duplicate cell id {cell.id!r} (also from line {seen[cell.id].line})",
            )
            continue
        seen[cell.id] = entry
        cells.append(cell)
    if not cells and not problems.items:
        problems.add(axes_node, "axes", "the matrix has no cells after exclude and include")
    return cells


def _cell(
    entry: _Entry, bases: Mapping[str, Base | None], shared: Mapping[str, Any], problems: Problems
) -> Cell | None:
    base_name = entry.get("base")
    if not entry.nodes:
        return None  # an empty entry, already reported
    if base_name is None:
        problems.add(
            next(iter(entry.nodes.values())),
            f"cell at line {entry.line}",
            "no `base` (an include entry that adds a cell must name its base)",
        )
        return None
    if base_name not in bases:
        problems.add(
            entry.nodes["base"],
            entry.paths["base"],
            f"unknown base {base_name!r}{suggest(base_name, list(bases))}",
        )
        return None
    base = bases[base_name]
    pins = []
    for key, _ in entry.values:
        if key == "base":
            continue
        if not _DIST.match(key):
            problems.add(entry.nodes[key], entry.paths[key], "not a distribution name")
            continue
        spec = _pin_specifier(entry.nodes[key], entry.paths[key], problems)
        if spec is not None:
            pins.append(Pin(name=key, specifier=spec))
    if base is None:
        return None
    index: _IndexSpec = shared["index"]
    return Cell(
        id=cell_id(base_name, pins),
        base=base,
        pins=tuple(pins),
        axes=entry.values,
        requirements=shared["requirements"],
        indexes=index.for_cuda(base.cuda),
        profiles=shared["profiles"],
        probes=shared["probes"],
        gpu=shared["gpu"],
        app=shared["app"],
        line=entry.line,
        image=shared["image"],
        steps=shared["steps"],
        origins=shared["origins"],
        constraints=shared["constraints"],
        fleet=cell_fleet(shared, base_name),
    )


def select_cells(matrix: Matrix, patterns: Sequence[str]) -> tuple[Cell, ...]:
    """The cells whose id equals or matches (glob) one of `patterns`; all when none given."""
    if not patterns:
        return matrix.cells
    chosen = [c for c in matrix.cells if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(c.id, p) for c in matrix.cells)]
    if unmatched:
        ids = [c.id for c in matrix.cells]
        raise InputError(
            f"--cell {unmatched[0]!r} matches no cell of {matrix.path}{suggest(unmatched[0], ids)}",
            hint="`builder matrix` lists the cell ids",
        )
    return tuple(chosen)


# ---------------------------------------------------------------- `builder check -r`

DEFAULT_PYTHON = "3.11"  # the cell's Python when `check -r` is given no --python
DEFAULT_IMAGE = "scratch"  # and its image without --base: a name that claims nothing


def requirements_matrix(
    files: Sequence[Path],
    *,
    image: str | None = None,
    python: str | None = None,
    cuda: str | None = None,
    platform: str | None = None,
    profiles: Sequence[str] = (),
    known_profiles: Sequence[str] = (),
) -> Matrix:
    """The one-cell matrix `builder check -r FILE ...` checks: the files read as a matrix's
    `-r` entries are (relative to the working directory), their index options as the
    cell's indexes, on a base made of the options (Python 3.11, CPU and linux/amd64 by
    default). Raises InputError naming every bad option, or the file line at fault."""
    python, platform = python or DEFAULT_PYTHON, platform or "linux/amd64"
    bad = _option_problems(image, python, cuda, platform, profiles, known_profiles)
    if bad:
        raise InputError(
            "\n".join(bad), hint=f"known profiles: {', '.join(known_profiles)}; see --help"
        )
    declared = [read_requirements(Path(), f) for f in files]
    lines = [line for d in declared for line in d.requirements]
    name = _options_base_name(python, cuda, platform)
    base = Base(
        name=name, image=image or DEFAULT_IMAGE, python=python, cuda=cuda, platform=platform
    )
    cell = Cell(
        id=cell_id(name, ()),
        base=base,
        pins=(),
        axes=(("base", name),),
        requirements=tuple(line.text for line in lines),
        indexes=_file_indexes(declared),
        profiles=tuple(profiles),
        probes=tuple((p, ()) for p in DEFAULT_PROBES),
        gpu="optional",
        app=None,
        line=1,
        origins=tuple((line.text, line.origin) for line in lines),
        constraints=tuple(line.text for d in declared for line in d.constraints),
    )
    command = " ".join(
        [
            "builder check",
            *(f"-r {shlex.quote(str(f))}" for f in files),
            f"--python {python}",
            *([f"--cuda {cuda}"] if cuda else []),
            *([f"--platform {platform}"] if platform != "linux/amd64" else []),
            *([f"--base {image}"] if image else []),
        ]
    )
    return Matrix(path=Path(files[0]), bases=(base,), cells=(cell,), source=command)


def _option_problems(
    image: str | None,
    python: str,
    cuda: str | None,
    platform: str,
    profiles: Sequence[str],
    known: Sequence[str],
) -> list[str]:
    """What is wrong with `check -r`'s base options, by the rules of a matrix's `bases`."""
    bad = []
    if image is not None and not _valid_reference(image):
        bad.append(f"--base {image!r}: invalid image reference (expected like python:3.11)")
    if not _PYTHON.match(python):
        bad.append(f"--python {python!r}: invalid Python version (expected like 3.11)")
    if cuda is not None and not _CUDA.match(cuda):
        bad.append(f"--cuda {cuda!r}: invalid CUDA version (expected like 12.1; none for CPU)")
    if platform not in PLATFORMS:
        bad.append(f"--platform {platform!r}: unsupported platform{suggest(platform, PLATFORMS)}")
    for name in profiles:
        if name not in known:
            bad.append(f"--profile {name!r}: unknown profile{suggest(name, known)}")
    return bad


def _valid_reference(text: str) -> bool:
    if len(text) > MAX_REFERENCE or UNSAFE.search(text) or text.split() != [text]:
        return False
    try:
        Reference.parse(text)
    except (InvalidReference, InvalidDigest):
        return False
    return True


def _options_base_name(python: str, cuda: str | None, platform: str) -> str:
    """`py310-cu121`, `py311-cpu`, `py311-cpu-arm64`: the base's (and the cell's) name."""
    accelerator = "cu" + "".join(cuda.split(".")[:2]) if cuda else "cpu"
    arch = "" if platform == "linux/amd64" else "-" + platform.removeprefix("linux/")
    return f"py{python.replace('.', '')}-{accelerator}{arch.replace('/', '-')}"


def _file_indexes(declared: Sequence[Declared]) -> Indexes:
    """The cell's indexes from the files' --index-url, --extra-index-url and --find-links
    (a local directory, relative to its file), checked as a matrix's `indexes` are."""
    problems: list[Problems] = []
    index_url: tuple[str, str] | None = None  # (url, origin)
    extra: list[str] = []
    wheelhouse: list[Path] = []
    for option in (o for d in declared for o in d.indexes):
        found = Problems(Path(option.file))
        problems.append(found)
        mark = yaml.Mark(option.file, 0, option.line - 1, 0, None, 0)
        node = yaml.ScalarNode("tag:yaml.org,2002:str", option.value, mark, mark)
        if option.flag == "--find-links":
            if "://" in option.value:
                found.add(node, option.flag, "only a local directory is supported")
            elif path := _local_path(
                node, option.flag, found, Path(option.file).parent, want_dir=True
            ):
                wheelhouse.append(path)
        elif (url := _url(node, option.flag, found)) is None:
            continue
        elif option.flag == "--extra-index-url":
            extra.append(url)
        elif index_url is not None:
            found.add(node, option.flag, f"given twice (also at {index_url[1]})")
        else:
            index_url = (url, option.origin)
    lines = [text for p in problems for _, _, text in p.items]
    if lines:
        hints = [h for p in problems for h in p.hints]
        raise InputError("\n".join(lines), hint="; ".join(hints) or None)
    return Indexes(
        index_url=index_url[0] if index_url else None,
        extra_index_urls=tuple(dict.fromkeys(extra)),
        wheelhouse=tuple(dict.fromkeys(wheelhouse)),
    )
