"""What a pin bump sends BuildKit: each layer mounts only its own wheels, and every build runs
from a context slot whose path outlives the cell id, mirrored by hard links, so an unchanged
torch wheel is neither sent nor checksummed again."""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

from builder.build import context_slot, mirror, wheels_key
from builder.log import Log
from builder.matrix import load_matrix
from builder.render import render_cell
from tests.conftest import FIXTURES

CELL = "cu121-py310.transformers-4.51.3"


def render(tmp_path: Path, *extra_wheels: str) -> Path:
    """The render fixture's cu121 cell, with `extra_wheels` (empty files) in its wheelhouse."""
    project = tmp_path / "project"
    if not project.exists():
        shutil.copytree(FIXTURES / "render", project)
    for name in extra_wheels:
        (project / "wheels" / name).write_bytes(b"")
    matrix = load_matrix(project / "matrix.yaml")
    cell = next(c for c in matrix.cells if c.id == CELL)
    return render_cell(matrix, cell, tmp_path / "out", Log(verbosity=-1)).directory


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_each_layer_mounts_only_the_wheels_it_pins(tmp_path: Path) -> None:
    context = render(tmp_path, "transformers-4.51.3-py3-none-any.whl")
    assert listing(context / "wheelhouse" / "heavy") == [
        "torch-2.4.1-cp310-cp310-manylinux1_x86_64.whl"
    ]
    assert listing(context / "wheelhouse" / "pins") == ["transformers-4.51.3-py3-none-any.whl"]
    assert listing(context / "wheelhouse" / "rest") == []
    mounts = re.findall(
        r"FROM venv AS (\w+)|source=(wheelhouse/\w+)", context.joinpath("Dockerfile").read_text()
    )
    stages = [stage for stage, _ in mounts if stage]
    sources = [source for _, source in mounts if source]
    assert (
        sources
        == [f"wheelhouse/{stage}" for stage in stages]
        == [
            "wheelhouse/heavy",
            "wheelhouse/rest",
            "wheelhouse/pins",
        ]
    )


def test_a_wheel_added_for_a_pin_leaves_the_torch_layers_wheels_as_they_were(
    tmp_path: Path,
) -> None:
    before = render(tmp_path)
    heavy = [(p.name, p.stat().st_ino) for p in (before / "wheelhouse" / "heavy").iterdir()]
    after = render(tmp_path, "transformers-4.51.3-py3-none-any.whl")
    assert [(p.name, p.stat().st_ino) for p in (after / "wheelhouse" / "heavy").iterdir()] == heavy


def test_contexts_link_builders_copy_of_a_wheel_never_the_users_file(tmp_path: Path) -> None:
    """A link to the user's wheel would change its ctime, and uv unpacks a find-links wheel
    again when its ctime changes: the user's file keeps one link and its ctime; every render
    links the one copy, which keeps the user's mtime (what BuildKit compares)."""
    render(tmp_path)
    users = tmp_path / "project" / "wheels" / "torch-2.4.1-cp310-cp310-manylinux1_x86_64.whl"
    before = users.stat()
    first = render(tmp_path)
    (tmp_path / "project" / "wheels" / "transformers-4.51.3-py3-none-any.whl").write_bytes(b"")
    second = render(tmp_path)
    after = users.stat()
    assert (after.st_nlink, after.st_ctime_ns) == (1, before.st_ctime_ns)
    linked = [r / "wheelhouse" / "heavy" / users.name for r in (first, second)]
    copies = list((tmp_path / "out" / ".wheels").rglob(users.name))
    assert len(copies) == 1 and {p.stat().st_ino for p in linked} == {copies[0].stat().st_ino}
    assert copies[0].stat().st_mtime_ns == before.st_mtime_ns
    assert copies[0].read_bytes() == users.read_bytes()


def test_a_bump_builds_from_the_slot_its_cell_used_before(tmp_path: Path) -> None:
    first = tmp_path / "out" / "cell.transformers-1"
    second = tmp_path / "out" / "cell.transformers-2"
    for folder, version in ((first, "1"), (second, "2")):
        (folder / "wheelhouse" / "heavy").mkdir(parents=True)
        os.link(
            FIXTURES / "render" / "wheels" / "unrelated-1.0-py3-none-any.whl",
            folder / "wheelhouse" / "heavy" / "torch.whl",
        )
        (folder / "Dockerfile").write_text(f"FROM scratch\n# {version}\n")
    with context_slot(first) as slot:
        held = slot
    with context_slot(second) as slot:
        assert slot == held
        assert (slot / "Dockerfile").read_text().endswith("# 2\n")
        assert os.path.samefile(
            slot / "wheelhouse" / "heavy" / "torch.whl",
            second / "wheelhouse" / "heavy" / "torch.whl",
        )
    assert wheels_key(first / "wheelhouse") == wheels_key(second / "wheelhouse")


def test_a_slot_in_use_is_never_shared(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "cell"
    folder.mkdir(parents=True)
    (folder / "Dockerfile").write_text("FROM scratch\n")
    inside, release = threading.Event(), threading.Event()
    held: list[Path] = []

    def hold() -> None:
        with context_slot(folder) as slot:
            held.append(slot)
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(10)
    with context_slot(folder) as other:
        assert other != held[0]
    release.set()
    holder.join()
    with context_slot(folder) as again:  # free again
        assert again == held[0]


def test_mirror_makes_the_target_hold_exactly_the_source(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    (source / "app" / "pkg").mkdir(parents=True)
    (source / "app" / "pkg" / "mod.py").write_text("x = 1\n")
    (source / "app" / "link.py").symlink_to("pkg/mod.py")
    (source / "Dockerfile").write_text("new\n")
    (target / "gone" / "deep").mkdir(parents=True)
    (target / "gone" / "deep" / "file").write_text("stale\n")
    (target / "app").mkdir()
    (target / "app" / "pkg").write_text("a file where the source has a folder\n")
    (target / "Dockerfile").write_text("old\n")
    mirror(source, target)
    found = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    assert found == ["Dockerfile", "app", "app/link.py", "app/pkg", "app/pkg/mod.py"]
    assert (target / "Dockerfile").read_text() == "new\n"
    assert os.readlink(target / "app" / "link.py") == "pkg/mod.py"
    assert os.path.samefile(source / "app" / "pkg" / "mod.py", target / "app" / "pkg" / "mod.py")
    inode = (target / "app" / "pkg" / "mod.py").stat().st_ino
    mirror(source, target)  # unchanged: left as it was, stat and all
    assert (target / "app" / "pkg" / "mod.py").stat().st_ino == inode


def test_a_changed_file_never_looks_unchanged_to_buildkit(tmp_path: Path) -> None:
    """BuildKit resends a file only when its size or mtime changed: two renders of equal-sized
    requirement files within one clock tick must still differ in what it compares."""
    first, second, slot = tmp_path / "a", tmp_path / "b", tmp_path / "slot"
    for folder, version in ((first, "0"), (second, "1")):
        folder.mkdir()
        (folder / "pins.txt").write_text(f"diffusers==0.35.{version}\n")
        os.utime(folder / "pins.txt", ns=(1_000_000_000, 1_000_000_000))  # one tick
    mirror(first, slot)
    before = (slot / "pins.txt").stat()
    mirror(second, slot)
    after = (slot / "pins.txt").stat()
    assert (slot / "pins.txt").read_text() == "diffusers==0.35.1\n"
    assert after.st_size == before.st_size and after.st_mtime_ns != before.st_mtime_ns
    assert (second / "pins.txt").stat().st_mtime_ns == 1_000_000_000  # the render is untouched


def test_a_file_with_the_same_content_keeps_the_stat_buildkit_saw(tmp_path: Path) -> None:
    first, second, slot = tmp_path / "a", tmp_path / "b", tmp_path / "slot"
    for folder in (first, second):
        folder.mkdir()
        (folder / "rest.txt").write_text("numpy==1.26.4\n")
    mirror(first, slot)
    before = (slot / "rest.txt").stat()
    mirror(second, slot)
    assert (slot / "rest.txt").stat().st_mtime_ns == before.st_mtime_ns
