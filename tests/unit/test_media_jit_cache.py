"""The media probe's numba cache: a host directory (BUILDER_JIT_CACHE) mounted writable into
the media probe's container only, so a re-probe of the same librosa loads its gufuncs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.engine import Mount, RunOutcome
from builder.probe import ImageTarget
from builder.settings import from_environ
from tests.unit.test_pipeline import PASS


@dataclass
class RecordingEngine:
    mounts: list[Sequence[Mount]] = field(default_factory=list)

    def run(self, image: str, argv: Sequence[str], **kwargs: Any) -> RunOutcome:
        self.mounts.append(kwargs.get("mounts", ()))
        return PASS


def run_media(tmp_path: Path, options: Mapping[str, Any]) -> tuple[list[Mount], dict[str, Any]]:
    engine = RecordingEngine()
    inputs = tmp_path / "in"
    inputs.mkdir()
    target = ImageTarget(engine, "img", inputs, tmp_path, gpu=False)  # type: ignore[arg-type]
    target.run("media.py", options, 10, "1g")
    return list(engine.mounts[0]), json.loads((inputs / "media.json").read_text())


def test_the_jit_cache_is_mounted_writable_and_named_by_its_container_path(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "jit"
    mounts, options = run_media(tmp_path, {"jit_cache": str(cache)})
    assert cache.is_dir()
    assert Mount(cache, "/builder/jit-cache", read_only=False) in mounts
    assert [m for m in mounts if not m.read_only] == [Mount(cache, "/builder/jit-cache", False)]
    assert options["jit_cache"] == "/builder/jit-cache"


def test_a_jit_cache_that_cannot_be_made_is_left_out(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    mounts, options = run_media(tmp_path, {"jit_cache": str(blocker / "jit")})
    assert all(m.read_only for m in mounts)
    assert options["jit_cache"] is None


def test_the_jit_cache_lives_under_builders_cache_root_unless_its_variable_says(
    tmp_path: Path,
) -> None:
    root = from_environ({"BUILDER_CACHE_DIR": str(tmp_path), "PATH": ""})
    assert root.jit_cache == tmp_path / "jit"
    own = from_environ({"BUILDER_JIT_CACHE": str(tmp_path / "mine"), "PATH": ""})
    assert own.jit_cache == tmp_path / "mine"
