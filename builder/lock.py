"""Hashed per-cell locks in `constraints/<cell-id>.txt`.

A lock is pip-compile's format (`name==version \\` then `--hash=` lines, `# via` notes) under a
header that records the command that regenerates it and a digest of the cell's inputs, so a
stale lock is detected. Packages the base image already carries (`preinstalled`) are isolated
by default: the image's virtual environment does not see the base's site-packages, so the lock
alone decides what is installed and `lock-match` can hold the image to it exactly. With
`reuse_preinstalled` they are reused instead: exact constraints of the resolution, marked
`# from base` (with what only they need), and never installed a second time.

A `Resolver` writes the body: `UvResolver` here, `piptools.PipToolsResolver` in containers;
the CLI builds one and passes it down, and its name goes into the header.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from packaging.utils import canonicalize_name

from builder import __version__, proc
from builder.errors import InputError
from builder.files import ensure_dir, read_text, write_atomic
from builder.log import Log
from builder.matrix import Cell, Matrix
from builder.platforms import PLATFORMS
from builder.settings import Settings

FROM_BASE = "# from base"  # the note on a lock block the base image provides (not installed)
CONSTRAINTS = "constraints.txt"  # reused base packages and `-c` lines: the resolver's `-c` file
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\;]+)")
_DIGEST_LINE = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})$", re.M)
_BODY_LINE = re.compile(r"^# body-sha256: ([0-9a-f]{64})$", re.M)
_RESOLVER_LINE = re.compile(r"^# resolver: ([^;\s]+);", re.M)


@dataclass(frozen=True)
class Locked:
    """One pinned distribution and its block of lines in the lock (pin, hashes, notes)."""

    name: str  # canonical
    version: str
    block: str
    hashes: tuple[str, ...] = ()

    @property
    def from_base(self) -> bool:
        """The base image provides it (`reuse_preinstalled`): checked, never installed."""
        return FROM_BASE in self.block


@dataclass(frozen=True)
class LockFile:
    text: str
    header: str
    inputs_sha256: str | None
    body_sha256: str | None = None  # what the header says the body's digest is
    resolver: str = "uv"  # the name of the resolver that wrote it (older locks: uv)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def body(self) -> str:
        return self.text[len(self.header) :]

    @property
    def edited(self) -> bool:
        """The body no longer matches the digest its header records (edited by hand)."""
        return self.body_sha256 != body_digest(self.body)


def body_digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class LockDiff:
    """What changed between two locks of a cell: the pin-bump pull request's story."""

    added: tuple[tuple[str, str], ...] = ()
    removed: tuple[tuple[str, str], ...] = ()
    changed: tuple[tuple[str, str, str], ...] = ()  # (name, old, new)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_json(self) -> dict[str, list[dict[str, str]]]:
        return {
            "added": [{"name": n, "version": v} for n, v in self.added],
            "removed": [{"name": n, "version": v} for n, v in self.removed],
            "changed": [{"name": n, "old": o, "new": v} for n, o, v in self.changed],
        }

    def lines(self) -> list[str]:
        return (
            [f"+ {n}=={v}" for n, v in self.added]
            + [f"- {n}=={v}" for n, v in self.removed]
            + [f"~ {n} {o} -> {v}" for n, o, v in self.changed]
        )


@dataclass(frozen=True)
class LockResult:
    """The outcome of locking one cell."""

    cell_id: str
    path: Path
    ok: bool
    diff: LockDiff = field(default_factory=LockDiff)
    error: str | None = None
    changed: bool = False
    seed: Path | None = None  # the lock a new cell started from (its diff is against it)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.cell_id,
            "path": str(self.path),
            "ok": self.ok,
            "changed": self.changed,
            "error": self.error,
            "seed": None if self.seed is None else str(self.seed),
            "diff": self.diff.to_json(),
        }

    def summary(self) -> str:
        if not self.ok:
            return f"FAIL {self.cell_id}: cannot resolve\n" + _indent(self.error or "")
        state = "updated" if self.changed else "unchanged"
        if self.seed is not None:
            state += f" (pins kept from {self.seed.name} where the requirements allow)"
        body = _indent("\n".join(self.diff.lines())) if self.diff else ""
        return f"ok   {self.cell_id}: {self.path} {state}" + (f"\n{body}" if body else "")


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


def lock_path(matrix: Matrix, cell: Cell) -> Path:
    return matrix.constraints_dir / f"{cell.id}.txt"


def python_platform(cell: Cell) -> str:
    return PLATFORMS[cell.base.platform].uv_tag


def parse_lock(text: str) -> list[Locked]:
    """The pinned packages of a lock, each with its block of lines, in file order."""
    out: list[Locked] = []
    block: list[str] = []
    current: tuple[str, str] | None = None

    def flush() -> None:
        if current is not None:
            body = "".join(block)
            hashes = tuple(re.findall(r"--hash=(sha256:[0-9a-f]{64})", body))
            out.append(Locked(current[0], current[1], body, hashes))

    for line in text.splitlines(keepends=True):
        match = _PIN.match(line)
        if match:
            flush()
            current, block = (canonicalize_name(match[1]), match[2]), [line]
        elif current is not None and line.startswith((" ", "\t")):
            block.append(line)
    flush()
    return out


def read_lock(path: Path) -> LockFile | None:
    """The lock at `path`, or None when there is none; unreadable locks are bad input."""
    if not path.exists() and not path.is_symlink():
        return None
    text = read_text(path, "lock")
    lines = text.splitlines(keepends=True)
    count = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    header = "".join(lines[:count])
    inputs, body = _DIGEST_LINE.search(header), _BODY_LINE.search(header)
    resolver = _RESOLVER_LINE.search(header)
    return LockFile(
        text,
        header,
        inputs[1] if inputs else None,
        body[1] if body else None,
        resolver[1] if resolver else "uv",
    )


def inputs_digest(cell: Cell, resolver: str) -> str:
    """A digest of everything that decides the lock's content."""
    wheels = sorted(p.name for w in cell.indexes.wheelhouse for p in w.glob("*.whl"))
    data = {
        "requirements": list(cell.requirement_lines()),
        "index_url": cell.indexes.index_url,
        "extra_index_urls": list(cell.indexes.extra_index_urls),
        "wheelhouse": wheels,
        "base": cell.base.image,
        "python": cell.base.python,
        "platform": cell.base.platform,
        # "isolated" alone, as before reuse existed, so that isolated locks stay fresh
        "preinstalled": [cell.base.policy, *c] if (c := cell.constraint_lines()) else "isolated",
        "resolver": resolver,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def header(matrix_path: Path, cell: Cell, digest: str, resolver: str, body: str) -> str:
    pins = [f"{n}=={v}" for n, v in cell.base.preinstalled]
    more = f", and {len(pins) - 12} more" if len(pins) > 12 else ""  # the digest has them all
    pre = ", ".join(pins[:12]) + more or "none declared"
    read = " read from the image" if cell.base.preinstalled_auto else ""
    treated = f"{cell.base.policy}: " + (
        "the venv sees them and the lock pins them (# from base)"
        if cell.base.reuse_preinstalled
        else "the image's venv does not see them"
    )
    return (
        f"# Generated by builder {__version__} for cell {cell.id}; do not edit.\n"
        f"# To regenerate: builder lock -m {matrix_path.name} --cell {cell.id}\n"
        f"# inputs-sha256: {digest}\n"
        f"# body-sha256: {body_digest(body)}\n"
        f"# resolver: {resolver}; python {cell.base.python}; {cell.base.platform} "
        f"({python_platform(cell)})\n"
        f"# base: {cell.base.image}; its preinstalled packages{read} ({pre}) are {treated}\n"
    )


ENVIRONMENT_LINES = 4  # header lines from here on: resolver, Python, platform and base


def environment_lines(header_text: str) -> list[str]:
    """The header lines that say what a lock was resolved for, not which cell it is."""
    return header_text.splitlines()[ENVIRONMENT_LINES:]


def stale_reason(matrix: Matrix, cell: Cell) -> str | None:
    """Why the cell's lock cannot be used as it is, or None when it is fresh."""
    path = lock_path(matrix, cell)
    lock = read_lock(path)
    if lock is None:
        return f"no lock at {path}"
    if lock.inputs_sha256 is None:
        return f"{path} has no inputs-sha256 header (not written by builder)"
    if lock.edited:
        return (
            f"{path} was edited by hand: its body does not match the body-sha256 in its header"
            if lock.body_sha256
            else f"{path} has no body-sha256 header (written by an older builder)"
        )
    if lock.inputs_sha256 != inputs_digest(cell, lock.resolver):
        return f"{path} is stale: the cell's requirements, pins, indexes or base changed"
    return None


def require_fresh(matrix: Matrix, cells: Sequence[Cell]) -> None:
    """Refuse missing or stale locks, naming each, with the command that fixes them."""
    problems = [(c, r) for c in cells if (r := stale_reason(matrix, c))]
    if problems:
        lines = "\n".join(f"  {cell.id}: {reason}" for cell, reason in problems)
        raise InputError(
            f"{len(problems)} cell(s) need a fresh lock:\n{lines}",
            hint=f"run `builder lock -m {matrix.path}`",
        )


def diff_locks(old: str | None, new: str) -> LockDiff:
    before = {p.name: p.version for p in parse_lock(old or "")}
    after = {p.name: p.version for p in parse_lock(new)}
    return LockDiff(
        added=tuple((n, after[n]) for n in sorted(after.keys() - before.keys())),
        removed=tuple((n, before[n]) for n in sorted(before.keys() - after.keys())),
        changed=tuple(
            (n, before[n], after[n])
            for n in sorted(after.keys() & before.keys())
            if before[n] != after[n]
        ),
    )


# ---------------------------------------------------------------- resolvers, and uv's


@dataclass(frozen=True, kw_only=True)
class Resolution:
    ok: bool
    body: str = ""
    error: str | None = None


class Resolver(Protocol):
    """What `lock_cell` resolves a cell with; its name goes into the lock's header (and digest)."""

    @property
    def name(self) -> str: ...

    def resolve(
        self,
        cell: Cell,
        settings: Settings,
        *,
        previous: str | None,
        upgrade: bool,
        upgrade_packages: Sequence[str],
        cancel: threading.Event | None,
    ) -> Resolution:
        """The lock body (pins, hashes, notes) for the cell; `previous` pins kept where possible."""
        ...


@dataclass(frozen=True)
class UvResolver:
    """uv on the host, resolving for the cell's Python and platform. `check` resolves without
    hashes (it only reads versions), offline when asked."""

    name: ClassVar[str] = "uv"
    hashes: bool = True
    offline: bool = False

    def resolve(
        self,
        cell: Cell,
        settings: Settings,
        *,
        previous: str | None = None,
        upgrade: bool = False,
        upgrade_packages: Sequence[str] = (),
        cancel: threading.Event | None = None,
    ) -> Resolution:
        with tempfile.TemporaryDirectory(prefix="builder-lock-") as tmp:
            work = Path(tmp)
            write_inputs(work, cell)
            output = None
            if previous is not None:
                output = "previous.txt"
                (work / output).write_text(previous)
            argv = uv_command(
                cell,
                settings.uv,
                hashes=self.hashes,
                upgrade=upgrade,
                upgrade_packages=upgrade_packages,
                output=output,
            )
            env = uv_env(cell, settings, offline=self.offline)
            done = proc.run(argv, cwd=work, env=env, cancel=cancel)
            if done.returncode != 0:
                return Resolution(ok=False, error=explain_failure(done.stderr))
            body = (work / output).read_text() if output else done.stdout
            return Resolution(ok=True, body=body)


UV = UvResolver()


def write_inputs(work: Path, cell: Cell) -> None:
    """`requirements.in` for a resolver in `work`: the cell's requirements, and the reused
    base packages as a `-c` constraints file beside it (both uv and pip-compile read it)."""
    lines = list(cell.requirement_lines())
    if constraints := cell.constraint_lines():
        (work / CONSTRAINTS).write_text("\n".join(constraints) + "\n")
        lines.append(f"-c {CONSTRAINTS}")
    (work / "requirements.in").write_text("\n".join(lines) + "\n")


def mark_from_base(body: str, cell: Cell) -> str:
    """The body with `# from base` noted on each block the reused base provides: its declared
    packages, and what only they need (torch's nvidia-* wheels), read from the `# via` notes."""
    if not cell.base.reuse_preinstalled:
        return body
    blocks = parse_lock(body)
    needs = {b.name: _via(b.block) for b in blocks}
    declared = {name for name, _ in cell.base.preinstalled}
    reasons = {name: "" for name in needs if name in declared}
    grown = True
    while grown:  # a fixed point: mpmath is needed by sympy, which only torch needs
        grown = False
        for name, (direct, parents) in needs.items():
            if name not in reasons and not direct and parents and parents <= reasons.keys():
                reasons[name] = " (needed only by " + ", ".join(sorted(parents)) + ")"
                grown = True
    return "".join(
        b.block + (f"    {FROM_BASE}{reasons[b.name]}\n" if b.name in reasons else "")
        for b in blocks
    )


def _via(block: str) -> tuple[bool, frozenset[str]]:
    """(a direct requirement, the packages that need it) from a block's `# via` notes
    (`# via torch`, or `# via` then one `#   name` per line); `-c` lines need nothing."""
    entries = []
    for line in block.splitlines()[1:]:
        note = line.strip()
        if not note.startswith("#") or note.startswith(FROM_BASE):
            continue
        note = note.lstrip("#").strip()
        entries.append(note[4:] if note.startswith("via ") else "" if note == "via" else note)
    direct = any(e.startswith("-r ") for e in entries)
    needed = [e for e in entries if e and not e.startswith(("-r ", "-c "))]
    return direct, frozenset(canonicalize_name(e) for e in needed)


def resolve_uv(
    cell: Cell, settings: Settings, *, hashes: bool = True, offline: bool = False
) -> Resolution:
    """Resolve a cell from scratch with uv (what `check` asks for)."""
    return UvResolver(hashes=hashes, offline=offline).resolve(cell, settings)


def uv_command(
    cell: Cell,
    uv: str,
    *,
    hashes: bool,
    upgrade: bool = False,
    upgrade_packages: Sequence[str] = (),
    output: str | None = None,
) -> list[str]:
    argv = [
        uv,
        "pip",
        "compile",
        "requirements.in",
        "--quiet",
        "--no-header",
        "--python-version",
        cell.base.python,
        "--python-platform",
        python_platform(cell),
    ]
    if hashes:
        argv.append("--generate-hashes")
    argv += cell.indexes.pip_args()
    if upgrade:
        argv.append("--upgrade")
    for name in upgrade_packages:
        argv += ["--upgrade-package", name]
    if output:
        argv += ["--output-file", output]
    return argv


def uv_env(cell: Cell, settings: Settings, *, offline: bool = False) -> dict[str, str]:
    """The environment uv runs in: the CA policy, never a Python download, offline if asked."""
    env = dict(settings.environ)
    ca = settings.ca_for(cell.indexes.ca_bundle)
    if ca is not None:
        env["SSL_CERT_FILE"] = str(ca)
    if settings.netrc is not None:  # index credentials, never in a URL
        env["NETRC"] = str(settings.netrc)
    env.setdefault("UV_NATIVE_TLS", "1")
    env["UV_PYTHON_DOWNLOADS"] = "never"  # resolve for a version, never fetch one
    if offline:
        env["UV_OFFLINE"] = "1"
    return env


def explain_failure(stderr: str) -> str:
    """uv's explanation cut to what matters: the chain of conflicting requirements."""
    lines = [re.sub(r"^[\s×╰─▶│]+", "", line).rstrip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("hint:", "warning:"))]
    keep = [
        line
        for line in lines
        if re.match(
            r"(Because|And because|we can conclude|.*cannot be used|.*unsatisfiable|.*depends on"
            r"|.*no version|.*not found|.*requirements are unsatisfiable|error:|.*Failed)",
            line,
            re.IGNORECASE,
        )
    ]
    return "\n".join((keep or lines)[:12])


def lock_cell(
    matrix: Matrix,
    cell: Cell,
    settings: Settings,
    *,
    upgrade: bool = False,
    upgrade_packages: Sequence[str] = (),
    resolver: Resolver = UV,
    cancel: threading.Event | None = None,
) -> LockResult:
    """Lock one cell: resolve, prepend the header, write atomically, diff against the old."""
    path = lock_path(matrix, cell)
    old = read_lock(path)
    seed = None if (old is not None or upgrade) else seed_lock(matrix, cell, resolver.name)
    start = old or (seed[1] if seed else None)
    result = resolver.resolve(
        cell,
        settings,
        previous=None if (start is None or upgrade) else start.text,
        upgrade=upgrade,
        upgrade_packages=upgrade_packages,
        cancel=cancel,
    )
    if not result.ok:
        return LockResult(cell.id, path, ok=False, error=result.error)
    body = mark_from_base(normalize(result.body), cell)
    name = resolver.name
    text = header(matrix.path, cell, inputs_digest(cell, name), name, body) + body
    changed = old is None or old.text != text
    if changed:
        write_atomic(path, text)
    diff = diff_locks(start.text if start else None, text)
    seed_path = seed[0] if seed else None
    return LockResult(cell.id, path, ok=True, diff=diff, changed=changed, seed=seed_path)


def seed_lock(matrix: Matrix, cell: Cell, resolver: str) -> tuple[Path, LockFile] | None:
    """The lock a cell without one starts from, so that a bump changes only what it asks for.
    A cell's id names its pins, so bumping one renames the cell and leaves its lock behind,
    named by no cell of the matrix: the newest such lock of the same resolver, Python,
    platform and base seeds the new one (its pins are uv's preferences), as `uv lock` keeps
    a project's other pins when one requirement changes. None: a fresh resolution. Only
    locks no cell names are read, so cells locked side by side never seed each other."""
    named = {lock_path(matrix, c).name for c in matrix.cells}
    wanted = environment_lines(header(matrix.path, cell, "", resolver, ""))
    found: list[tuple[int, Path, LockFile]] = []
    for path in matrix.constraints_dir.glob("*.txt"):
        if path.name in named or not path.is_file():
            continue
        try:
            lock = read_lock(path)
            mtime = path.stat().st_mtime_ns
        except (InputError, OSError):  # not a lock builder can read: never a seed
            continue
        if lock and not lock.edited and environment_lines(lock.header) == wanted:
            found.append((mtime, path, lock))
    if not found:
        return None
    _, path, lock = max(found, key=lambda entry: entry[:2])
    return path, lock


def normalize(body: str) -> str:
    """Drop resolver-specific header comments and option lines; keep pins, hashes and notes."""
    lines = body.splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(("#", "--", "-i ", "-f "))]
    text = "".join(kept).lstrip("\n")
    return text if text.endswith("\n") else text + "\n"


def check_upgrade_packages(matrix: Matrix, cells: Sequence[Cell], names: Sequence[str]) -> None:
    """Refuse `--upgrade-package NAME` when no selected cell's lock pins NAME."""
    pinned = {
        p.name
        for c in cells
        if (lock := read_lock(lock_path(matrix, c)))
        for p in parse_lock(lock.text)
    }
    unknown = [n for n in names if canonicalize_name(n) not in pinned]
    if unknown:
        raise InputError(
            f"--upgrade-package {unknown[0]}: no selected cell's lock pins {unknown[0]!r}",
            hint="check the spelling; a package that is not locked yet needs no upgrade, "
            "add it to `requirements` and run `builder lock`",
        )


def lock_cells(
    matrix: Matrix,
    cells: Sequence[Cell],
    settings: Settings,
    log: Log,
    *,
    upgrade: bool = False,
    upgrade_packages: Sequence[str] = (),
    resolver: Resolver = UV,
    jobs: int = 1,
) -> list[LockResult]:
    """Lock cells, `jobs` at a time; a cell that cannot be resolved (or crashes) never stops
    the others."""
    check_upgrade_packages(matrix, cells, upgrade_packages)
    ensure_dir(matrix.constraints_dir)

    def one(cell: Cell, cancel: threading.Event) -> LockResult:
        start = time.monotonic()
        result = lock_cell(
            matrix,
            cell,
            settings,
            upgrade=upgrade,
            upgrade_packages=upgrade_packages,
            resolver=resolver,
            cancel=cancel,
        )
        log.info(f"lock {cell.id}: {time.monotonic() - start:.1f}s")
        return result

    def crashed(cell: Cell, exc: Exception) -> LockResult:
        return LockResult(cell.id, lock_path(matrix, cell), ok=False, error=log.crash(cell.id, exc))

    return proc.parallel_map(one, cells, jobs, crashed)
