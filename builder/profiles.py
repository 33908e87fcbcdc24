"""Model requirement profiles: what a model's code needs, each rule with its source.

A profile is a YAML file `<name>.yaml`. Profiles ship in `builder/data/profiles/`; a matrix adds its
own from the directories in `profile_paths` (a user profile with the name of a shipped one
replaces it). The format (also in `builder/data/profiles/README.md`):

    name: wan2.2                   # required; equals the file name without .yaml
    extends: wan2.1                # optional parent; its rules are inherited
    source: https://...            # required; the model's requirements, the default source
    python: ">=3.10"               # Python range (a PEP 440 specifier)
    requirements:                  # PEP 508 requirements the model's code needs
      - requirement: transformers>=4.49.0,<=4.51.3
        kind: requirements         # requirements | code (errors), readme | maintainer (warnings)
        source: Wan-Video/Wan2.2@<40-hex commit>:requirements.txt:6   # required on every rule
        quote: transformers>=4.49.0,<=4.51.3     # that line, verbatim (required with `kind`)
        optional: false            # optional: checked when installed, not required
        alternatives: [opencv-python-headless]   # other distributions of the same modules
    imports: [torch, cv2]          # modules that must import
    optional_imports: [flash_attn] # modules whose import failure is a warning
    gpu_at_import: false           # importing the model's code needs a GPU
    min_gpu_memory_gb: 24
    generate_variant: wan2.2-a14b  # one of resources.GENERATE_VARIANTS, or null
    loads_bin_weights: false       # loads `.bin` (pickle) weights through transformers
    known_bad:                     # combinations the model is known to break with
      - when: {transformers: ">=4.52", torch: "<2.6"}
        reason: why it breaks
        hint: what to do           # optional
        source: https://...

Each of `python`, `gpu_at_import`, `min_gpu_memory_gb`, `generate_variant` and
`loads_bin_weights` is a plain value (its source is the profile's `source`) or
`{value: ..., source: ...}`. Through `extends`, a child's requirements replace the parent's
rules for the same distribution, lists (`imports`, `optional_imports`, `known_bad`) add up, and a
value the child states (even null) replaces the parent's.

A rule with a `kind` cites its source as `owner/repo@commit:path:line` (a full 40-hex commit)
with the line itself as `quote`; its kind sets the severity of its findings: a requirements file
or the code is an error, a README install line or a maintainer's word is a warning ("tested
with"). One file may state several rules for one distribution when their kinds differ (code needs
`xformers`, the README was tested with `xformers==0.0.28`). A rule without `kind` (a user's own
profile, a `builder scan` draft) takes free text as its source and is held as a requirement.

Problems are `InputError`s located as `file:line:col: field: message`, like matrix.yaml's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from builder.errors import InputError, located
from builder.matrix import MODULE_NAME, PROFILE_NAME, Cell, Matrix
from builder.resources import GENERATE_VARIANTS
from builder.yamlnodes import (
    Problems,
    choice,
    compose,
    is_null,
    join,
    kind,
    mapping,
    optional,
    plain,
    position,
    read_file,
    scalar,
    sequence,
    strings,
    suggest,
)

SHIPPED = Path(__file__).resolve().parent / "data" / "profiles"
PROFILE_KEYS = (
    "name",
    "extends",
    "source",
    "python",
    "requirements",
    "imports",
    "optional_imports",
    "gpu_at_import",
    "min_gpu_memory_gb",
    "generate_variant",
    "loads_bin_weights",
    "known_bad",
)
RULE_KEYS = ("requirement", "kind", "source", "quote", "optional", "alternatives")
# Where a rule comes from; readme and maintainer rules say what was tested, not what is required.
SOURCE_KINDS = ("requirements", "code", "readme", "maintainer")
SOFT_KINDS = ("readme", "maintainer")
KNOWN_BAD_KEYS = ("when", "reason", "hint", "source", "severity", "profile")
SEVERITIES = ("error", "warning", "info")
HINT = "see builder/data/profiles/README.md for the profile format"
_NAME_AND_EXTRAS = re.compile(r"^\s*[A-Za-z0-9._-]+\s*(?:\[[^\]]*\])?\s*")
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_LINE = re.compile(r"^[1-9][0-9]*$")
CITATION_FORM = "owner/repo@<40-hex commit>:path:line"


@dataclass(frozen=True)
class Citation:
    """A rule's source as `owner/repo@commit:path:line`: one line of one file at one commit."""

    repo: str
    commit: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.repo}@{self.commit}:{self.path}:{self.line}"


def parse_citation(text: str) -> Citation | str:
    """The citation in `text`, or what is wrong with it (a message)."""
    repo, at, rest = text.partition("@")
    if not at or not _REPO.match(repo):
        return f"expected {CITATION_FORM}, got {text!r}"
    commit, _, location = rest.partition(":")
    if not _COMMIT.match(commit):
        return f"commit {commit!r} is not a full 40-hex commit id ({CITATION_FORM})"
    path, _, line = location.rpartition(":")
    if not path or path.startswith("/") or not _LINE.match(line):
        return f"expected :path:line after the commit, got {location!r} ({CITATION_FORM})"
    return Citation(repo, commit, path, int(line))


@dataclass(frozen=True, kw_only=True)
class Rule:
    """A requirement of a profile, with where it comes from."""

    requirement: Requirement
    text: str  # as written, so messages show `>=4.49.0,<=4.51.3` in the author's order
    source: str
    profile: str  # the profile that states it (a parent's, when inherited)
    optional: bool = False
    alternatives: tuple[str, ...] = ()  # canonical names of distributions that stand in
    kind: str | None = None  # one of SOURCE_KINDS; None for a free-text (user) source
    quote: str = ""  # the cited line, verbatim

    @property
    def soft(self) -> bool:
        """A README install line or a maintainer's word: what was tested, not a requirement."""
        return self.kind in SOFT_KINDS

    @property
    def cited(self) -> str:
        """The source with the line it encodes, as findings show it."""
        return f'{self.source} "{self.quote.strip()}"' if self.quote else self.source

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.alternatives)

    @property
    def range(self) -> str:
        """The version range as written (`>=4.49.0,<=4.51.3`), or "" for any version."""
        return written_range(self.text)


def written_range(requirement: str) -> str:
    """The specifier part of a requirement as its author wrote it (packaging sorts it)."""
    bare = _NAME_AND_EXTRAS.sub("", requirement.split(";", 1)[0], count=1).strip()
    return bare.removeprefix("(").removesuffix(")").strip()


@dataclass(frozen=True, kw_only=True)
class KnownBad:
    """A combination of versions that is known to break, and why.

    `profile` narrows a row of the shared table to profiles with given facts, e.g.
    `{loads_bin_weights: [true]}` or `{generate_variant: [wan2.2-a14b]}`.
    """

    when: tuple[tuple[str, SpecifierSet], ...]
    reason: str
    source: str
    hint: str = ""
    severity: str = "error"
    profile: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @classmethod
    def from_data(cls, data: Mapping[str, Any], source_prefix: str = "") -> KnownBad:
        """A row from plain (already validated) data."""
        return cls(
            when=tuple(
                (canonicalize_name(k), SpecifierSet(str(v))) for k, v in data["when"].items()
            ),
            reason=" ".join(str(data["reason"]).split()),
            source=source_prefix + " ".join(str(data["source"]).split()),
            hint=" ".join(str(data.get("hint") or "").split()),
            severity=str(data.get("severity") or "error"),
            profile=tuple(
                (k, tuple(v) if isinstance(v, list) else (v,))
                for k, v in (data.get("profile") or {}).items()
            ),
        )


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A profile with everything it inherits folded in (see the module docstring)."""

    name: str
    path: Path
    source: str
    chain: tuple[str, ...]  # this profile, then its parents
    python: SpecifierSet = field(default_factory=SpecifierSet)
    requirements: tuple[Rule, ...] = ()
    imports: tuple[str, ...] = ()
    optional_imports: tuple[str, ...] = ()
    gpu_at_import: bool = False
    min_gpu_memory_gb: float | None = None
    generate_variant: str | None = None
    loads_bin_weights: bool = False
    known_bad: tuple[KnownBad, ...] = ()
    sources: tuple[tuple[str, str], ...] = ()  # (fact, "profile: source") for stated facts

    def source_of(self, fact: str) -> str:
        return dict(self.sources).get(fact, f"{self.name}: {self.source}")

    def rule(self, name: str) -> Rule | None:
        """The first rule for a distribution (see `rules_for` when kinds differ)."""
        return next(iter(self.rules_for(name)), None)

    def rules_for(self, name: str) -> tuple[Rule, ...]:
        wanted = canonicalize_name(name)
        return tuple(r for r in self.requirements if r.name == wanted)


# ---------------------------------------------------------------- reading one file


@dataclass(frozen=True)
class _Raw:
    """One file as written: facts it states, before `extends` is followed."""

    path: Path
    name: str
    extends: str | None
    extends_node: yaml.Node | None
    source: str
    facts: tuple[tuple[str, Any, str], ...]  # (fact, value, source) for each stated fact
    requirements: tuple[Rule, ...]
    imports: tuple[str, ...]
    optional_imports: tuple[str, ...]
    known_bad: tuple[KnownBad, ...]


def _text(node: yaml.Node, where: str, problems: Problems) -> str | None:
    """Free text (sources, reasons, hints): never rendered into a Dockerfile, so any string."""
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":str") and node.value.strip():
        return " ".join(str(node.value).split())
    problems.add(node, where, f"expected text, got {kind(node)}")
    return None


def _python(node: yaml.Node, where: str, problems: Problems) -> SpecifierSet | None:
    text = scalar(node, where, problems)
    try:
        return SpecifierSet(text) if text is not None else None
    except InvalidSpecifier:
        problems.add(node, where, f"invalid Python range {text!r} (expected like '>=3.10')")
        return None


def _bool(node: yaml.Node, where: str, problems: Problems) -> bool | None:
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":bool"):
        return bool(plain(node, where, problems))
    problems.add(node, where, f"expected true or false, got {kind(node)}")
    return None


def _gigabytes(node: yaml.Node, where: str, problems: Problems) -> float | None:
    value = plain(node, where, problems) if isinstance(node, yaml.ScalarNode) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    problems.add(node, where, f"expected a positive number of GiB, got {kind(node)}")
    return None


def _variant(node: yaml.Node, where: str, problems: Problems) -> str | None:
    if is_null(node):
        return None
    text = scalar(node, where, problems)
    if text is not None and text not in GENERATE_VARIANTS:
        problems.add(
            node,
            where,
            f"unknown variant {text!r}{suggest(text, GENERATE_VARIANTS)} "
            f"(one of {', '.join(GENERATE_VARIANTS)}, or null)",
        )
        return None
    return text


_FACTS: Mapping[str, Callable[[yaml.Node, str, Problems], Any]] = {
    "python": _python,
    "gpu_at_import": _bool,
    "min_gpu_memory_gb": _gigabytes,
    "generate_variant": _variant,
    "loads_bin_weights": _bool,
}


def _fact(
    key: str,
    node: yaml.Node,
    problems: Problems,
    default_source: str,
) -> tuple[str, Any, str]:
    """A fact as (key, value, source), from `value` or `{value: ..., source: ...}`."""
    source = default_source
    if isinstance(node, yaml.MappingNode):
        fields = mapping(node, key, problems, ("value", "source"))
        if "value" not in fields:
            problems.add(node, join(key, "value"), "missing required key")
            return key, None, source
        if "source" in fields:
            source = _text(fields["source"][1], join(key, "source"), problems) or source
        node = fields["value"][1]
    return key, _FACTS[key](node, key, problems), source


def _rule(node: yaml.Node, where: str, problems: Problems, profile: str) -> Rule | None:
    fields = mapping(node, where, problems, RULE_KEYS)
    for required in ("requirement", "source"):
        if required not in fields and isinstance(node, yaml.MappingNode):
            problems.add(node, join(where, required), "missing required key")
    if not {"requirement", "source"} <= fields.keys():
        return None
    text = scalar(fields["requirement"][1], join(where, "requirement"), problems)
    source = _text(fields["source"][1], join(where, "source"), problems)
    try:
        requirement = Requirement(text or "")
    except InvalidRequirement as exc:
        problems.add(
            fields["requirement"][1],
            join(where, "requirement"),
            f"invalid requirement {text!r}: {str(exc).splitlines()[0]}",
        )
        return None
    soft = optional(fields, "optional", where, problems, _bool) or False
    alternatives = optional(fields, "alternatives", where, problems, strings) or ()
    source_kind = optional(fields, "kind", where, problems, choice, SOURCE_KINDS)
    quote = optional(fields, "quote", where, problems, _quote)
    _cited(node, fields, where, source, problems)
    if text is None or source is None:
        return None
    return Rule(
        requirement=requirement,
        text=text,
        source=source,
        profile=profile,
        optional=bool(soft),
        alternatives=tuple(canonicalize_name(a) for a in alternatives),
        kind=source_kind,
        quote=quote or "",
    )


def _cited(
    node: yaml.Node,
    fields: Mapping[str, tuple[yaml.Node, yaml.Node]],
    where: str,
    source: str | None,
    problems: Problems,
) -> None:
    """A rule with a `kind` cites `owner/repo@commit:path:line` and quotes that line; a source
    that starts like a citation must be one, so that a short commit is caught."""
    for key, other, does in (("kind", "quote", "quotes the line it cites"), ("quote", "kind", "")):
        if key in fields and other not in fields:
            why = f"a rule with a `{key}` {does or 'states its kind of source'}"
            problems.add(node, join(where, other), f"missing required key ({why})")
    before, at, _ = (source or "").partition("@")
    if source is None or not ("kind" in fields or (at and _REPO.match(before))):
        return
    parsed = parse_citation(source)
    if isinstance(parsed, str):
        problems.add(fields["source"][1], join(where, "source"), parsed)


def _quote(node: yaml.Node, where: str, problems: Problems) -> str | None:
    """The cited line as written: one line, verbatim (its indentation too)."""
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":str") and node.value.strip():
        if "\n" not in node.value.strip("\n"):
            return str(node.value).strip("\n")
        problems.add(node, where, "a quote is one line of the source")
        return None
    problems.add(node, where, f"expected the source line as text, got {kind(node)}")
    return None


def _known_bad(node: yaml.Node, where: str, problems: Problems, prefix: str) -> KnownBad | None:
    """One `known_bad` row; also used for the shared table in builder/data/known_issues.yaml."""
    fields = mapping(node, where, problems, KNOWN_BAD_KEYS)
    for required in ("when", "reason", "source"):
        if required not in fields and isinstance(node, yaml.MappingNode):
            problems.add(node, join(where, required), "missing required key")
    before = len(problems.items)
    if "when" in fields:
        when = mapping(fields["when"][1], join(where, "when"), problems)
        for name, (_, value) in when.items():
            _specifier(value, join(join(where, "when"), name), problems)
    for key in ("reason", "hint", "source"):
        if key in fields:
            _text(fields[key][1], join(where, key), problems)
    optional(fields, "severity", where, problems, choice, SEVERITIES)
    if "profile" in fields:
        mapping(fields["profile"][1], join(where, "profile"), problems, tuple(_FACTS))
    if len(problems.items) > before or not {"when", "reason", "source"} <= fields.keys():
        return None
    return KnownBad.from_data(plain(node, where, problems), prefix)


def _specifier(node: yaml.Node, where: str, problems: Problems) -> None:
    text = scalar(node, where, problems)
    try:
        if text is not None:
            SpecifierSet(text)
    except InvalidSpecifier:
        problems.add(node, where, f"invalid version specifier {text!r} (expected like '<2.6')")


def _compose(path: Path, problems: Problems) -> yaml.Node:
    node = compose(read_file(path, "profile"), path, problems)
    if node is None:
        raise InputError(f"{path}:1:1: empty profile", hint=HINT)
    return node


def read_profile(path: Path) -> _Raw:
    """Read and validate one profile file (without following `extends`)."""
    problems = Problems(path, hint=HINT)
    node = _compose(path, problems)
    top = mapping(node, "", problems, PROFILE_KEYS)
    for required in ("name", "source"):
        if required not in top and isinstance(node, yaml.MappingNode):
            problems.add(node, required, "missing required key")
    name = (
        scalar(top["name"][1], "name", problems, PROFILE_NAME, "profile name")
        if "name" in top
        else None
    )
    if name is not None and name != path.stem:
        problems.add(top["name"][1], "name", f"{name!r} does not match the file name {path.name!r}")
    source = _text(top["source"][1], "source", problems) if "source" in top else None
    raw = _sections(top, problems, path, name or path.stem, source or "")
    problems.raise_if_any()
    return raw


def _sections(
    top: Mapping[str, tuple[yaml.Node, yaml.Node]],
    problems: Problems,
    path: Path,
    name: str,
    source: str,
) -> _Raw:
    def items(key: str) -> list[tuple[str, yaml.Node]]:
        nodes = sequence(top[key][1], key, problems) if key in top else []
        return [(f"{key}[{i}]", n) for i, n in enumerate(nodes)]

    def modules(key: str) -> tuple[str, ...]:
        return strings(top[key][1], key, problems, MODULE_NAME, "module name") if key in top else ()

    extends_node = top["extends"][1] if "extends" in top else None
    extends = (
        scalar(extends_node, "extends", problems, PROFILE_NAME, "profile name")
        if extends_node is not None
        else None
    )
    rules = [_rule(n, where, problems, name) for where, n in items("requirements")]
    _distinct(items("requirements"), rules, problems)
    bad = [_known_bad(n, where, problems, f"{name}: ") for where, n in items("known_bad")]
    stated = (_fact(k, top[k][1], problems, source) for k in _FACTS if k in top)
    facts = tuple((key, value, f"{name}: {origin}") for key, value, origin in stated)
    return _Raw(
        path=path,
        name=name,
        extends=extends,
        extends_node=extends_node,
        source=source,
        facts=facts,
        requirements=tuple(r for r in rules if r),
        imports=modules("imports"),
        optional_imports=modules("optional_imports"),
        known_bad=tuple(b for b in bad if b),
    )


def _distinct(
    nodes: Sequence[tuple[str, yaml.Node]], rules: Sequence[Rule | None], problems: Problems
) -> None:
    """One rule per distribution and kind of source: a second is a mistake, not a refinement."""
    first: dict[tuple[str, str | None], str] = {}
    for (where, node), rule in zip(nodes, rules, strict=True):
        if rule is None:
            continue
        key = (rule.name, rule.kind)
        if key in first:
            what = f"{rule.kind} rule" if rule.kind else "rule"
            problems.add(
                node, where, f"a second {what} for {rule.name} (the first is {first[key]})"
            )
        first.setdefault(key, where)


def read_known_bad(path: Path) -> tuple[KnownBad, ...]:
    """The `known_bad` rows of a data file (the shared table), validated like a profile's."""
    problems = Problems(path, hint=HINT)
    node = _compose(path, problems)
    top = mapping(node, "", problems)
    rows = sequence(top["known_bad"][1], "known_bad", problems) if "known_bad" in top else []
    found = [_known_bad(x, f"known_bad[{i}]", problems, "") for i, x in enumerate(rows)]
    problems.raise_if_any()
    return tuple(b for b in found if b)


# ---------------------------------------------------------------- extends, and the public API


def _merge(parent: Profile | None, raw: _Raw) -> Profile:
    base = parent or Profile(name=raw.name, path=raw.path, source=raw.source, chain=())
    stated = {key: value for key, value, _ in raw.facts}
    return replace(
        base,
        **stated,
        name=raw.name,
        path=raw.path,
        source=raw.source,
        chain=(raw.name, *base.chain),
        requirements=_replaced(base.requirements, raw.requirements),
        imports=tuple(dict.fromkeys((*base.imports, *raw.imports))),
        optional_imports=tuple(dict.fromkeys((*base.optional_imports, *raw.optional_imports))),
        known_bad=(*base.known_bad, *raw.known_bad),
        sources=tuple({**dict(base.sources), **{k: s for k, _, s in raw.facts}}.items()),
    )


def _replaced(inherited: Sequence[Rule], own: Sequence[Rule]) -> tuple[Rule, ...]:
    """The parent's rules with the child's in place of those for the same distribution (where
    the parent's first stood), then the child's other rules."""
    mine: dict[str, list[Rule]] = {}
    for rule in own:
        mine.setdefault(rule.name, []).append(rule)
    out: list[Rule] = []
    for rule in inherited:
        if rule.name not in mine:
            out.append(rule)
        elif not any(r.name == rule.name for r in out):
            out.extend(mine[rule.name])
    return (*out, *(r for r in own if r not in out))


def _flatten(name: str, raws: Mapping[str, _Raw], seen: tuple[str, ...] = ()) -> Profile:
    raw = raws[name]
    if raw.extends is None:
        return _merge(None, raw)
    line, col = position(raw.extends_node.start_mark if raw.extends_node else None)
    if raw.extends in (*seen, name):
        cycle = " -> ".join((*seen, name, raw.extends))
        raise InputError(located(raw.path, line, col, "extends", f"cycle: {cycle}"), hint=HINT)
    if raw.extends not in raws:
        raise InputError(
            located(
                raw.path,
                line,
                col,
                "extends",
                f"unknown profile {raw.extends!r}{suggest(raw.extends, list(raws))}",
            ),
            hint=HINT,
        )
    return _merge(_flatten(raw.extends, raws, (*seen, name)), raw)


def load_profiles(paths: Sequence[Path] = ()) -> dict[str, Profile]:
    """Every profile, shipped ones first; a later directory's profile replaces a same-named one."""
    raws: dict[str, _Raw] = {}
    for directory in (SHIPPED, *paths):
        for path in sorted(directory.glob("*.yaml")):
            raw = read_profile(path)
            raws[raw.name] = raw
    return {name: _flatten(name, raws) for name in sorted(raws)}


def profiles_for(
    matrix: Matrix, cell: Cell, loaded: Mapping[str, Profile] | None = None
) -> list[Profile]:
    """The cell's profiles, each flattened through `extends`; unknown names are an InputError
    located in the matrix file."""
    known = load_profiles(matrix.profile_paths) if loaded is None else loaded
    missing = [name for name in cell.profiles if name not in known]
    if missing:
        line, column, where = matrix.profile_mark(missing[0])
        message = f"unknown profile {missing[0]!r}{suggest(missing[0], list(known))}"
        raise InputError(
            located(matrix.path, line, column, where, message),
            hint=f"known profiles: {', '.join(known)}; add your own to a directory named in "
            "`profile_paths`",
        )
    return [known[name] for name in cell.profiles]


def probe_requirements(matrix: Matrix, cell: Cell, probe: str) -> dict[str, Any]:
    """What the cell's profiles ask of one probe's options (`builder.pipeline` merges these):
    `imports` gets the modules, `generate` the variants, `model-dir` the GPU memory."""
    profiles = profiles_for(matrix, cell)
    if probe == "imports":
        required = dict.fromkeys(m for p in profiles for m in p.imports)
        optional = dict.fromkeys(
            m for p in profiles for m in p.optional_imports if m not in required
        )
        return {"imports": list(required), "optional_imports": list(optional)}
    if probe == "generate":
        variants = list(dict.fromkeys(p.generate_variant for p in profiles if p.generate_variant))
        return {"variants": variants, "required_variants": variants} if variants else {}
    if probe == "model-dir":
        memory = [p.min_gpu_memory_gb for p in profiles if p.min_gpu_memory_gb]
        return {"min_gpu_memory_gb": max(memory)} if memory else {}
    return {}
