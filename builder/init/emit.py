"""A `MatrixDraft` as matrix.yaml text: every value on its own line, commented with its source.

Strings that YAML would read as something else (a number, a boolean, a version like 3.10)
are written as JSON strings, which are YAML too; versions always are. Nothing is dated, so the
same inputs give the same file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from builder.init.model import Fact, HealthDraft, MatrixDraft, StepDraft

_PLAIN = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./+=<>,!~@:-")


def q(text: str) -> str:
    """`text` as a YAML scalar that reads back as this string."""
    if text and set(text) <= _PLAIN and text[0] not in "-!@<>,=" and _reads_back(text):
        return text
    return json.dumps(text)


def _reads_back(text: str) -> bool:
    try:
        return bool(yaml.safe_load(text) == text)
    except yaml.YAMLError:
        return False


def v(text: str) -> str:
    """A version (always quoted, so `3.10` stays "3.10")."""
    return json.dumps(text)


def comment(fact: Fact | None) -> str:
    text = fact.comment() if fact is not None else ""
    return f"  # {' '.join(text.split())}" if text else ""


def emit(draft: MatrixDraft, out_dir: Path) -> str:
    """The matrix file's text."""
    sections = (
        _header(draft),
        ["version: 1"],
        _bases(draft),
        _axes(draft),
        _include(draft),
        _requirements(draft),
        _indexes(draft, out_dir),
        _profiles(draft),
        _app(draft),
        _image(draft),
        _steps(draft.steps),
        _footer(draft),
    )
    return (
        "\n".join(line for section in sections if section for line in [*section, ""]).rstrip()
        + "\n"
    )


def _header(draft: MatrixDraft) -> list[str]:
    names = ", ".join(draft.sources)
    return [
        f"# Written by `builder init` from {names}: review it before use.",
        "# Each value names the file and line it came from; `from the tag; verify` marks a fact",
        "# guessed from an image tag. What could not be translated as written is listed at the end.",
    ]


def _bases(draft: MatrixDraft) -> list[str]:
    lines = ["bases:"]
    for base in draft.bases:
        lines.append(f"  {base.name}:")
        lines.append(f"    image: {q(base.image.value)}{comment(base.image)}")
        lines.append(f"    python: {v(base.python.value)}{comment(base.python)}")
        if base.cuda is not None:
            lines.append(f"    cuda: {v(base.cuda.value)}{comment(base.cuda)}")
        else:
            lines.append("    cuda: null  # a CPU base")
        if base.platform is not None:
            lines.append(f"    platform: {q(base.platform.value)}{comment(base.platform)}")
        lines += _block("    apt", base.apt)
        lines += _block("    preinstalled", base.preinstalled)
    return lines


def _block(key: str, facts: Sequence[Fact]) -> list[str]:
    if not facts:
        return []
    pad = " " * (len(key) - len(key.lstrip()) + 2)
    return [f"{key}:", *(f"{pad}- {q(f.value)}{comment(f)}" for f in facts)]


def _axes(draft: MatrixDraft) -> list[str]:
    names = ", ".join(b.name for b in draft.bases)
    lines = ["axes:", f"  base: [{names}]"]
    lines += [f"  {name}: [{v(fact.value)}]{comment(fact)}" for name, fact in draft.axes]
    return lines


def _include(draft: MatrixDraft) -> list[str]:
    if not draft.include:
        return []
    lines = ["include:  # what only one Dockerfile pins"]
    for base, pins in draft.include:
        lines.append(f"  - base: {base}")
        lines += [f"    {name}: {v(fact.value)}{comment(fact)}" for name, fact in pins]
    return lines


def _requirements(draft: MatrixDraft) -> list[str]:
    if not draft.requirements:
        return ["requirements: []"]
    return ["requirements:", *(f"  - {q(r.text)}{comment(r.fact)}" for r in draft.requirements)]


def _indexes(draft: MatrixDraft, out_dir: Path) -> list[str]:
    index = draft.indexes
    if not (index.index_url or index.extra or index.wheelhouse):
        return []
    lines = ["indexes:"]
    if index.index_url is not None:
        lines.append(f"  index_url: {q(index.index_url.value)}{comment(index.index_url)}")
    if index.extra:
        lines.append("  extra_index_urls:")
        for fact, cudas in index.extra:
            if cudas:
                scope = ", ".join(v(c) for c in cudas)
                lines.append(f"    - {{url: {q(fact.value)}, cuda: [{scope}]}}{comment(fact)}")
            else:
                lines.append(f"    - {q(fact.value)}{comment(fact)}")
    wheels = [
        Fact(os.path.relpath(f.value, out_dir.resolve()), f.sources) for f in index.wheelhouse
    ]
    lines += _block("  wheelhouse", wheels)
    return lines


def _profiles(draft: MatrixDraft) -> list[str]:
    lines = _block("profiles", draft.profiles)
    if draft.profile_paths:
        lines += [f"profile_paths: [{', '.join(q(p) for p in draft.profile_paths)}]"]
    return lines


def _app(draft: MatrixDraft) -> list[str]:
    app = draft.app
    if app is None:
        return []
    lines = ["app:"]
    if app.path is not None:
        lines.append(f"  path: {q(app.path.value)}{comment(app.path)}")
    if app.git is not None:
        lines += [
            "  git:",
            f"    url: {q(app.git.url.value)}{comment(app.git.url)}",
            f"    rev: {q(app.git.rev.value)}{comment(app.git.rev)}",
        ]
    lines += _block("  files", app.files)
    return lines


def _image(draft: MatrixDraft) -> list[str]:
    image = draft.image
    lines: list[str] = []
    if image.env:
        lines.append("  env:")
        lines += [f"    {key}: {json.dumps(f.value)}{comment(f)}" for key, f in image.env]
    if image.workdir is not None:
        lines.append(f"  workdir: {q(image.workdir.value)}{comment(image.workdir)}")
    for key, found in (("entrypoint", image.entrypoint), ("cmd", image.cmd)):
        if found is not None:
            lines.append(f"  {key}: {json.dumps(list(found[0]))}  # {found[1]}")
    if image.expose:
        ports = ", ".join(str(p) for p, _ in image.expose)
        lines.append(f"  expose: [{ports}]  # {', '.join(str(s) for _, s in image.expose)}")
    if image.user is not None:
        lines.append(f"  user: {q(image.user.value)}{comment(image.user)}")
    if image.healthcheck is not None:
        lines += _healthcheck(image.healthcheck)
    return ["image:", *lines] if lines else []


def _healthcheck(health: HealthDraft) -> list[str]:
    lines = [f"  healthcheck:  # {health.source}", f"    cmd: {json.dumps(list(health.cmd))}"]
    lines += [f"    interval: {health.interval}"] if health.interval else []
    lines += [f"    timeout: {health.timeout}"] if health.timeout else []
    lines += [f"    retries: {health.retries}"] if health.retries else []
    return lines


def _steps(steps: Sequence[StepDraft]) -> list[str]:
    if not steps:
        return []
    lines = ["steps:"]
    for step in steps:
        lines += [f"  - name: {step.name}  # {step.source}", f"    at: {step.at}"]
        lines.append(f"    run: {json.dumps(step.run)}")
        if step.secrets:
            lines.append(f"    secrets: [{', '.join(step.secrets)}]")
    return lines


def _footer(draft: MatrixDraft) -> list[str]:
    if not draft.untranslated and not draft.warnings:
        return []
    lines = ["# Not translated as written (`builder init` lists these too):"]
    lines += [f"#   {' '.join(u.text().split())}" for u in draft.untranslated]
    if draft.warnings:
        lines.append("# To review:")
        lines += [f"#   {' '.join(w.text().split())}" for w in draft.warnings]
    return lines
