"""Render each cell's multi-stage Dockerfile and its build context from `images/Dockerfile.j2`.

The context directory holds: Dockerfile, requirements/<layer>.txt (the cell's lock, split so
that torch and its CUDA libraries get a layer of their own), wheelhouse/ (hard links to the
wheels the lock pins from the matrix's wheelhouses) and app/ (the model code, if any).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from builder import __version__
from builder.errors import InputError
from builder.files import staged_dir
from builder.lock import Locked, lock_path, parse_lock, read_lock
from builder.log import Log
from builder.matrix import Cell, Matrix
from builder.resources import data_dir

# Heavy, slow-changing distributions: installed in their own layer, ahead of the rest.
HEAVY = re.compile(
    r"^(torch|torchvision|torchaudio|triton|pytorch-triton(-.*)?|nvidia-.*|cuda-.*)$", re.ASCII
)
APP_IGNORED = ("__pycache__", "*.pyc", ".git")
LABEL_PREFIX = "io.github.builder"
LAYERS = ("heavy", "rest", "pins")
IN_VENV = "rest"  # the layer installed into the venv itself; the others get a directory each
VENV = "/opt/venv"
DEFAULT_REPOSITORY = "builder/cells"


@dataclass(frozen=True)
class Layer:
    """A layer of the lock as the Dockerfile installs it: in a stage of its own, into the venv
    or into a directory that a .pth file puts on the venv's path; the final stage copies it."""

    name: str

    @property
    def target(self) -> str | None:
        """pip's `--target`, or None to install into the venv itself."""
        return None if self.name == IN_VENV else f"/opt/layers/{self.name}"

    @property
    def copied(self) -> str:
        """What the final stage copies from the layer's stage (to the same path)."""
        return self.target or VENV

    @property
    def compiled(self) -> str:
        """Where its bytecode is compiled."""
        return self.target or f"{VENV}/lib"


@dataclass(frozen=True, kw_only=True)
class DockerfileContext:
    """Everything the template reads; one per cell."""

    builder_version: str
    cell_id: str
    base_image: str
    python: str
    apt: tuple[str, ...]
    index_url: str | None
    extra_index_urls: tuple[str, ...]
    layers: tuple[Layer, ...]
    paths: tuple[str, ...]  # the layers' own directories, for the .pth file and PATH
    copies: tuple[tuple[str, str], ...]  # what the final stage copies: (stage, path)
    app: bool
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Rendered:
    """A rendered build context."""

    cell_id: str
    directory: Path
    lock_sha256: str | None

    @property
    def dockerfile(self) -> Path:
        return self.directory / "Dockerfile"


def split_layers(locked: list[Locked], pinned: Collection[str] = ()) -> dict[str, list[Locked]]:
    """Layers, least changing first: "heavy" (torch and its CUDA libraries), "rest", then "pins"
    (the cell's own axis pins, what a pin bump changes). Empty layers dropped, lock order kept."""
    layers: dict[str, list[Locked]] = {"heavy": [], "rest": [], "pins": []}
    for package in locked:
        heavy = HEAVY.match(package.name)
        layers["heavy" if heavy else "pins" if package.name in pinned else "rest"].append(package)
    return {name: items for name, items in layers.items() if items}


def labels(cell: Cell, lock_sha256: str | None) -> tuple[tuple[str, str], ...]:
    return (
        ("org.opencontainers.image.title", f"builder cell {cell.id}"),
        ("org.opencontainers.image.base.name", cell.base.image),
        (f"{LABEL_PREFIX}.cell", cell.id),
        (f"{LABEL_PREFIX}.lock-sha256", lock_sha256 or "none"),
        (f"{LABEL_PREFIX}.version", __version__),
    )


def image_tag(cell: Cell, registry: str | None) -> str:
    """`<registry repository>:<cell-id>`; the cell id is already a valid tag."""
    return f"{registry or DEFAULT_REPOSITORY}:{cell.id}"


def context_for(cell: Cell, names: tuple[str, ...], lock_sha256: str | None) -> DockerfileContext:
    layers = tuple(Layer(name) for name in names)
    copies = [(layer.name, layer.copied) for layer in layers]
    if IN_VENV not in names:  # the venv still comes from its own stage
        copies.append(("venv", VENV))
    return DockerfileContext(
        builder_version=__version__,
        cell_id=cell.id,
        base_image=cell.base.image,
        python=cell.base.python,
        apt=cell.base.apt,
        index_url=cell.indexes.index_url,
        extra_index_urls=cell.indexes.extra_index_urls,
        layers=layers,
        paths=tuple(layer.target for layer in layers if layer.target),
        copies=tuple(copies),
        app=cell.app is not None,
        labels=labels(cell, lock_sha256),
    )


def render_dockerfile(context: DockerfileContext) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(data_dir("images")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    text = env.get_template("Dockerfile.j2").render(**vars(context))
    return re.sub(r"\n{3,}", "\n\n", text)


def render_cell(
    matrix: Matrix, cell: Cell, output: Path, log: Log, *, secrets: Collection[Path] = ()
) -> Rendered:
    """Write `output/<cell-id>/` atomically (staged beside it, then swapped in). `secrets`
    are files (the CA bundle, the netrc) never copied into the context, nor is the matrix's
    `indexes.ca_bundle`, even when they sit in the app directory."""
    if cell.app is not None:
        _refuse_output_in_app(cell.app.path, output)
    lock = read_lock(lock_path(matrix, cell))
    if lock is None:
        log.warn(
            f"{cell.id}: no lock at {lock_path(matrix, cell)}; run `builder lock` "
            "before building (the Dockerfile assumes both layers)"
        )
    pinned = {canonicalize_name(p.name) for p in cell.pins}
    layers = split_layers(parse_lock(lock.text), pinned) if lock else {key: [] for key in LAYERS}
    context = context_for(cell, tuple(layers), lock.sha256 if lock else None)
    with staged_dir(output / cell.id) as staging:
        _write_context(staging, cell, context, layers)
        if cell.app is not None:
            kept = [*secrets, *([cell.indexes.ca_bundle] if cell.indexes.ca_bundle else [])]
            copy_app(cell.app.path, staging / "app", kept, log)
    return Rendered(cell.id, output / cell.id, lock.sha256 if lock else None)


def _refuse_output_in_app(app: Path, output: Path) -> None:
    """Rendering into the app directory would copy the output into itself, over and over."""
    if output.resolve().is_relative_to(app.resolve()):
        raise InputError(
            f"{output}: the output directory is inside the app directory {app}, which is "
            "copied into each build context",
            hint="pass -o with a directory outside the app directory (or move the app "
            "into a subdirectory)",
        )


def _write_context(
    root: Path, cell: Cell, context: DockerfileContext, layers: dict[str, list[Locked]]
) -> None:
    (root / "Dockerfile").write_text(render_dockerfile(context), encoding="utf-8")
    requirements = root / "requirements"
    requirements.mkdir()
    for name, packages in layers.items():
        body = "".join(_install_lines(p.block) for p in packages)
        # No header: a layer file must be identical across cells with the same pins, so that
        # BuildKit reuses the torch layer after a transformers bump.
        (requirements / f"{name}.txt").write_text(body, encoding="utf-8")
    pinned = {(p.name, p.version) for items in layers.values() for p in items}
    _link_wheels(cell.indexes.wheelhouse, pinned, root / "wheelhouse")


def copy_app(source: Path, target: Path, secrets: Iterable[Path], log: Log) -> None:
    """Copy the app directory's regular files and folders. A symlink that points inside it
    is copied as a link (made relative, so that it does in the image too); one that leaves
    it, a special file and any of `secrets` (compared by inode, so a hard link or a symlink
    to one is caught too) are left out with a warning."""
    root = source.resolve()
    secret_ids = {_inode(p) for p in secrets} - {None}
    links: list[tuple[Path, str]] = []

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = set(shutil.ignore_patterns(*APP_IGNORED)(directory, names))
        for name in sorted(set(names) - skipped):
            path = Path(directory) / name
            why = _left_out(path, root, secret_ids)
            if why or path.is_symlink():
                skipped.add(name)
            if why:
                log.warn(f"{path}: not copied into the build context: {why}")
            elif path.is_symlink():
                links.append((path, os.path.relpath(path.resolve(), path.parent)))
        return skipped

    shutil.copytree(root, target, symlinks=True, ignore=ignore)
    for link, points_to in links:
        os.symlink(points_to, target / link.relative_to(root))


def _left_out(path: Path, root: Path, secret_ids: set[tuple[int, int] | None]) -> str | None:
    """Why `path` stays out of the build context, or None to copy it."""
    if _inode(path) in secret_ids:
        return "it is a configured secret (CA bundle or netrc)"
    if path.is_symlink():
        resolved = _resolve(path)
        if resolved is None:
            return f"a symlink to {os.readlink(path)}, which loops"
        if not resolved.is_relative_to(root):
            return f"a symlink to {os.readlink(path)}, outside the app directory"
        return None
    if not (path.is_file() or path.is_dir()):
        return "not a regular file or directory"
    return None


def _resolve(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None


def _inode(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file `path` names, following links; None when there is none."""
    try:
        found = path.stat()
    except (OSError, RuntimeError):  # dangling, a loop, unreadable
        return None
    return (found.st_dev, found.st_ino)


def _install_lines(block: str) -> str:
    """A lock block without its `# via` notes, which name dependents that differ per cell."""
    return "".join(
        line for line in block.splitlines(keepends=True) if not line.lstrip().startswith("#")
    )


def _link_wheels(wheelhouses: tuple[Path, ...], pinned: set[tuple[str, str]], target: Path) -> None:
    """Hard-link (or copy) the wheelhouse files the lock pins; pip picks them by hash."""
    target.mkdir()
    for wheelhouse in wheelhouses:
        for wheel in sorted(wheelhouse.glob("*.whl")):
            try:
                name, version, _, _ = parse_wheel_filename(wheel.name)
            except InvalidWheelFilename:
                continue
            if (canonicalize_name(name), str(version)) not in pinned or (
                target / wheel.name
            ).exists():
                continue
            try:
                os.link(wheel, target / wheel.name)
            except OSError:
                shutil.copy2(wheel, target / wheel.name)
