"""`builder init`: a matrix.yaml drafted from the Dockerfiles and requirements a team already has.

Stages, each returning data: read each Dockerfile with BuildKit's parser (`stages`) and follow
its base chain; read the chain's instructions (`translate`, RUN lines through bashlex in
`runs`, pip's command line and requirements files in `pip`); finish each Dockerfile's draft
(`finish`: the app, the steps, the requirements; `basefacts` reads the base's tag); combine
the Dockerfiles (`combine`); add `--requirements`, `--repo` (`fromscan`) and `--profile`; write
the commented matrix (`emit`), check that it loads, and write it atomically. A file that
already exists is not overwritten without `--force` (exit 2).

`--format json` prints one object:

    {
      "matrix": str,                        # the file written
      "profile": str | null,                # the profile drafted from --repo, if any
      "untranslated": [{"file": str, "line": int, "construct": str, "instead": str}],
      "warnings": [{"file": str | null, "line": int | null, "message": str}],
      "check": {"cells": [...]} | null      # with --check: `builder check --format json`
    }
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from builder.errors import BuilderError, InputError
from builder.files import write_atomic
from builder.init.basefacts import facts_for, repository
from builder.init.combine import combine
from builder.init.emit import emit
from builder.init.finish import ResolveRef, finish
from builder.init.fromscan import ScanDraft, draft_from_scan
from builder.init.model import AppDraft, Fact, MatrixDraft, Notice, Req, Source, Untranslated
from builder.init.pip import check_readable, read_requirements_file, read_spec
from builder.init.stages import Parsed, chain, read_dockerfile
from builder.init.translate import read_chain
from builder.matrix import parse_matrix
from builder.profiles import load_profiles
from builder.yamlnodes import suggest

__all__ = ["InitOptions", "InitResult", "ResolveRef", "draft", "run_init"]


@dataclass(frozen=True, kw_only=True)
class InitOptions:
    dockerfiles: tuple[str, ...]  # FILE, or FILE=TAG for a Dockerfile that builds TAG
    requirements: tuple[Path, ...] = ()
    repo: Path | None = None
    entries: tuple[Path, ...] = ()
    profiles: tuple[str, ...] = ()
    output: Path = Path("matrix.yaml")
    force: bool = False


@dataclass(frozen=True)
class InitResult:
    matrix: Path
    text: str
    untranslated: tuple[Untranslated, ...]
    warnings: tuple[Notice, ...]
    profile: tuple[Path, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "matrix": str(self.matrix),
            "profile": str(self.profile[0]) if self.profile else None,
            "untranslated": [u.to_json() for u in self.untranslated],
            "warnings": [w.to_json() for w in self.warnings],
        }

    def report(self) -> str:
        """The text for stderr: what could not be translated, then what to review."""
        lines = [f"not translated as written ({len(self.untranslated)}):"]
        lines += [f"  {u.text()}" for u in self.untranslated] or ["  nothing"]
        if self.warnings:
            lines.append(f"to review ({len(self.warnings)}):")
            lines += [f"  {w.text()}" for w in self.warnings]
        return "\n".join(lines)


def run_init(options: InitOptions, resolve: ResolveRef) -> InitResult:
    """Draft the matrix (and the --repo profile) and write them; nothing is written when
    anything fails."""
    result = draft(options, resolve)
    if result.profile is not None:
        write_atomic(*result.profile)
    write_atomic(result.matrix, result.text)
    return result


def draft(options: InitOptions, resolve: ResolveRef) -> InitResult:
    """Everything `run_init` writes, without writing it."""
    out_dir = options.output.parent
    _refuse_existing(options.output, options.force)
    shipped = tuple(load_profiles(()))
    _known_profiles(options.profiles, shipped)
    parsed = [_read(spec) for spec in options.dockerfiles]
    drafts = [
        finish(_walk(p, parsed, out_dir), _facts(p, parsed), resolve) for p in _leaves(parsed)
    ]
    matrix = replace(combine(drafts), sources=tuple(p.display for p in parsed))
    matrix = _with_requirement_files(matrix, options.requirements)
    profile = None
    if options.repo is not None:
        scanned = _scan(matrix, options, shipped)
        profile_path = out_dir / "profiles" / f"{scanned.profile_name}.yaml"
        _refuse_existing(profile_path, options.force)
        _check_profile(scanned)
        matrix = _with_scan(matrix, scanned, options.repo, out_dir)
        profile = (profile_path, scanned.profile_text)
    matrix = replace(
        matrix,
        profiles=(
            *(Fact(p, (Source("--profile", 0),)) for p in options.profiles),
            *matrix.profiles,
        ),
    )
    text = emit(matrix, out_dir)
    _loads(emit(replace(matrix, profile_paths=()), out_dir), options.output)
    return InitResult(options.output, text, matrix.untranslated, matrix.warnings, profile)


def _refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise InputError(
            f"{path}: already exists; not overwritten",
            hint="pass --force to replace it, or -o another path",
        )


def _known_profiles(names: Sequence[str], shipped: Sequence[str]) -> None:
    for name in names:
        if name not in shipped:
            raise InputError(
                f"--profile {name}: unknown profile{suggest(name, list(shipped))}",
                hint=f"known profiles: {', '.join(shipped)}",
            )


def _read(spec: str) -> Parsed:
    """`FILE`, or `FILE=TAG` (the Dockerfile builds TAG, which another one names in FROM)."""
    path, eq, tag = spec.rpartition("=")
    if eq and path and repository(tag) is not None and not Path(spec).exists():
        return read_dockerfile(Path(path), path, tag)
    return read_dockerfile(Path(spec), spec)


def _leaves(parsed: Sequence[Parsed]) -> list[Parsed]:
    """The Dockerfiles no other one builds FROM: each makes a base of the matrix."""
    built = _built(parsed)
    below = {f for p in parsed for f in chain(p, built).files[:-1]}
    return [p for p in parsed if p.display not in below]


def _built(parsed: Sequence[Parsed]) -> Mapping[str, Parsed]:
    return {p.builds: p for p in parsed if p.builds}


def _walk(parsed: Parsed, every: Sequence[Parsed], out_dir: Path) -> Any:
    found = chain(parsed, _built(every))
    return read_chain(found, out_dir, dict(found.args))


def _facts(parsed: Parsed, every: Sequence[Parsed]) -> Any:
    return facts_for(chain(parsed, _built(every)).root.image)


def _with_requirement_files(matrix: MatrixDraft, files: Sequence[Path]) -> MatrixDraft:
    """`--requirements FILE`: every line (with its -r and -c files) as a requirement."""
    reqs = list(matrix.requirements)
    notes = list(matrix.untranslated)
    extra = list(matrix.indexes.extra)
    for path in files:
        check_readable(path)
        lines, _ = read_requirements_file(path)
        for line in lines:
            where = Source(str(line.path) if line.path != path else str(path), line.line)
            if line.spec is not None and line.spec.text and line.spec.name:
                if line.spec.text not in {r.text for r in reqs}:
                    reqs.append(Req(Fact(line.spec.text, (where,)), line.spec.name))
            elif line.option is not None and line.option[0] == "extra_index_url":
                extra.append((Fact(line.option[1], (where,)), ()))
            elif line.option is not None and line.option[0] == "constraint":
                name = read_spec(line.option[1]).name or ""
                reqs.append(Req(Fact(line.option[1], (where,), note="a constraint"), name))
            else:
                problem = line.invalid or (line.spec.problem if line.spec else "an option")
                notes.append(Untranslated(where, "a requirements line", f"left out: {problem}"))
    indexes = replace(matrix.indexes, extra=tuple(extra))
    return replace(matrix, requirements=tuple(reqs), untranslated=tuple(notes), indexes=indexes)


def _scan(matrix: MatrixDraft, options: InitOptions, shipped: Sequence[str]) -> ScanDraft:
    assert options.repo is not None
    declared: set[str] = {canonicalize_name(r.name) for r in matrix.requirements if r.name}
    declared |= {str(canonicalize_name(name)) for name, _ in matrix.axes}
    declared |= {str(canonicalize_name(name)) for _, pins in matrix.include for name, _ in pins}
    preinstalled: dict[str, str] = {}
    for base in matrix.bases:
        for fact in base.preinstalled:
            name, _, version = fact.value.partition("==")
            preinstalled.setdefault(canonicalize_name(name), version)
    python = matrix.bases[0].python.value
    return draft_from_scan(options.repo, options.entries, python, declared, preinstalled, shipped)


def _check_profile(scanned: ScanDraft) -> None:
    """The drafted profile must load as profiles do (else it is a bug here)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"{scanned.profile_name}.yaml").write_text(
            scanned.profile_text, encoding="utf-8"
        )
        try:
            load_profiles((Path(tmp),))
        except InputError as exc:
            raise BuilderError(f"the drafted profile does not load: {exc.message}") from None


def _with_scan(matrix: MatrixDraft, scanned: ScanDraft, repo: Path, out_dir: Path) -> MatrixDraft:
    app = matrix.app
    if app is None and repo.resolve().is_relative_to(out_dir.resolve()):
        relative = repo.resolve().relative_to(out_dir.resolve())
        app = AppDraft(path=Fact(str(relative), (Source(f"--repo {repo}", 0),)))
    return replace(
        matrix,
        requirements=(*matrix.requirements, *scanned.requirements),
        profiles=(*matrix.profiles, Fact(scanned.profile_name, (Source(f"--repo {repo}", 0),))),
        profile_paths=("profiles",),
        app=app,
        warnings=(*matrix.warnings, *scanned.warnings),
    )


def _loads(text: str, output: Path) -> None:
    """The matrix must load as `builder check` will read it (else it is a bug here)."""
    try:
        parse_matrix(text, output)
    except InputError as exc:
        raise BuilderError(
            f"the matrix builder init drafted does not load:\n{exc.message}",
            hint="please report this with the Dockerfile",
        ) from None
