"""Several Dockerfiles' drafts as one matrix: a base each, what they share, what differs.

Each Dockerfile's base becomes a `bases:` entry (named like `runpod-cu124-py311`) and
`axes.base` lists them all. An exact pin of torch, transformers or diffusers that every
Dockerfile shares is an axis with that one value; a requirement line every Dockerfile has is
shared; what differs goes into an `include` entry per base when it is a plain pin (a name and
a specifier), else into the shared requirements with a warning. The app, the image and the
steps are shared by every cell: when the Dockerfiles disagree, the first one's are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet

from builder.init.basefacts import facts_for
from builder.init.finish import with_name
from builder.init.model import DockerfileDraft, Fact, IndexDraft, MatrixDraft, Notice, Req
from builder.matrix import BASE_NAME

AXES = ("torch", "transformers", "diffusers")


def combine(drafts: Sequence[DockerfileDraft]) -> MatrixDraft:
    """One matrix for every Dockerfile given (at least one)."""
    named = _named(drafts)
    notices: list[Notice] = []
    axes = _axes(named)
    shared, include = _requirements(named, {name for name, _ in axes}, notices)
    first = named[0]
    for other in named[1:]:
        _disagree(first, other, notices)
    return MatrixDraft(
        bases=tuple(d.base for d in named),
        axes=tuple(axes),
        include=tuple(include),
        requirements=tuple(shared),
        indexes=_indexes(named, notices),
        app=first.app,
        image=first.image,
        steps=first.steps,
        sources=tuple(d.file for d in named),
        untranslated=tuple(u for d in named for u in d.untranslated),
        warnings=(*(w for d in named for w in d.warnings), *notices),
    )


def _named(drafts: Sequence[DockerfileDraft]) -> list[DockerfileDraft]:
    taken: set[str] = set()
    out = []
    for draft in drafts:
        name = _base_name(draft)
        if name in taken:
            name = _slug(f"{name}-{draft.file.rsplit('/', 1)[-1]}")
        candidate, n = name, 2
        while candidate in taken:
            candidate, n = f"{name}-{n}", n + 1
        taken.add(candidate)
        out.append(with_name(draft, candidate))
    return out


def _base_name(draft: DockerfileDraft) -> str:
    """`runpod-cu124-py311`: the image's publisher, its CUDA and its Python."""
    base = draft.base
    parts = [facts_for(base.image.value).vendor]
    if base.cuda is not None:
        parts.append("cu" + base.cuda.value.replace(".", ""))
    parts.append("py" + base.python.value.replace(".", ""))
    return _slug("-".join(parts))


def _slug(text: str) -> str:
    out = "".join(c if c.isascii() and c.isalnum() else "-" for c in text.lower())
    slug = "-".join(p for p in out.split("-") if p)[:60].strip("-")
    return slug if BASE_NAME.match(slug) else "base"


def exact_version(text: str) -> str | None:
    """The version of a plain `name==version` line (no extras, marker, URL or wildcard)."""
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return None
    specs = list(req.specifier)
    if req.extras or req.marker or req.url or len(specs) != 1:
        return None
    spec = specs[0]
    return spec.version if spec.operator == "==" and "*" not in spec.version else None


def _axes(drafts: Sequence[DockerfileDraft]) -> list[tuple[str, Fact]]:
    out = []
    for name in AXES:
        found = [[r for r in d.requirements if r.name == name] for d in drafts]
        if not all(len(reqs) == 1 for reqs in found):
            continue
        versions = {exact_version(reqs[0].text) for reqs in found}
        if len(versions) == 1 and None not in versions:
            fact = found[0][0].fact
            out.append((name, replace(fact, value=str(versions.pop()))))
    return out


def _requirements(
    drafts: Sequence[DockerfileDraft], axes: set[str], notices: list[Notice]
) -> tuple[list[Req], list[tuple[str, tuple[tuple[str, Fact], ...]]]]:
    lists = [[r for r in d.requirements if r.name not in axes] for d in drafts]
    common = set.intersection(*({r.text for r in reqs} for reqs in lists))
    shared = [r for r in lists[0] if r.text in common]
    include = []
    for draft, reqs in zip(drafts, lists, strict=True):
        own = [r for r in reqs if r.text not in common]
        pins, rest = _pins(own)
        for req in rest:
            if req.text not in {r.text for r in shared}:
                notices.append(
                    Notice(
                        f"{req.text}: only {draft.file} asks for it, and it is not a plain pin: "
                        "every cell installs it",
                        req.fact.sources[0] if req.fact.sources else None,
                    )
                )
                shared.append(req)
        if pins:
            include.append((draft.base.name, tuple(pins)))
    return shared, include


def _pins(reqs: Sequence[Req]) -> tuple[list[tuple[str, Fact]], list[Req]]:
    """Plain pins (`name` + specifier) as include values (one per name), and the rest."""
    specs: dict[str, tuple[SpecifierSet, Fact]] = {}
    rest = []
    for req in reqs:
        try:
            parsed = Requirement(req.text)
        except InvalidRequirement:
            rest.append(req)
            continue
        if parsed.extras or parsed.marker or parsed.url or not str(parsed.specifier):
            rest.append(req)
            continue
        before = specs.get(req.name)
        spec = parsed.specifier & before[0] if before else parsed.specifier
        specs[req.name] = (spec, before[1] if before else req.fact)
    pins = []
    for name, (spec, fact) in specs.items():
        version = exact_version(f"{name}{spec}")
        pins.append((name, replace(fact, value=version or str(spec))))
    return pins, rest


def _indexes(drafts: Sequence[DockerfileDraft], notices: list[Notice]) -> IndexDraft:
    index_url = next((d.indexes.index_url for d in drafts if d.indexes.index_url), None)
    for draft in drafts:
        other = draft.indexes.index_url
        if index_url and other and other.value != index_url.value:
            notices.append(
                Notice(
                    f"a second index URL {other.value}: the matrix has one; kept {index_url.value}"
                )
            )
    users: dict[str, tuple[Fact, list[DockerfileDraft]]] = {}
    for draft in drafts:
        for fact, _ in draft.indexes.extra:
            users.setdefault(fact.value, (fact, []))[1].append(draft)
    extra = [_scoped(fact, who, len(drafts), notices) for fact, who in users.values()]
    wheels = {f.value: f for d in drafts for f in d.indexes.wheelhouse}
    return IndexDraft(index_url=index_url, extra=tuple(extra), wheelhouse=tuple(wheels.values()))


def _scoped(
    fact: Fact, users: Sequence[DockerfileDraft], total: int, notices: list[Notice]
) -> tuple[Fact, tuple[str, ...]]:
    """An extra index for the bases of the Dockerfiles that used it, by their CUDA."""
    if len(users) == total:
        return fact, ()
    cudas = [d.base.cuda.value for d in users if d.base.cuda is not None]
    if len(cudas) == len(users):
        return fact, tuple(dict.fromkeys(cudas))
    notices.append(
        Notice(f"extra index {fact.value}: not every Dockerfile used it, but every cell will")
    )
    return fact, ()


def _disagree(first: DockerfileDraft, other: DockerfileDraft, notices: list[Notice]) -> None:
    differs = []
    if first.image.key() != other.image.key():
        differs.append("image")
    if (first.app is None) != (other.app is None) or (first.app and not first.app.same(other.app)):
        differs.append("app")
    if [(s.name, s.at, s.run) for s in first.steps] != [(s.name, s.at, s.run) for s in other.steps]:
        differs.append("steps")
    if differs:
        notices.append(
            Notice(
                f"{other.file}: its {', '.join(differs)} differ from {first.file}'s; every cell "
                f"shares one, so {first.file}'s are kept"
            )
        )
