"""The result cache key follows everything that can change a verdict, profile content included."""

from __future__ import annotations

from pathlib import Path

from builder.backends import VenvBackend
from builder.log import Log
from builder.matrix import load_matrix
from builder.pipeline import Session, ValidateOptions, cache_key
from builder.settings import Settings

MATRIX = """version: 1
bases:
  b: {image: "debian:bookworm", python: "3.11"}
axes:
  base: [b]
profiles: [mine]
profile_paths: [profiles]
probes: [imports]
"""
PROFILE = "name: mine\nsource: tests\nimports: [{module}]\n"


def key_for(root: Path) -> str:
    matrix = load_matrix(root / "matrix.yaml")
    options = ValidateOptions(engine="venv", output=root / "out", cache_dir=root / "cache")
    log = Log(verbosity=-1)
    backend = VenvBackend(matrix=matrix, settings=Settings(), log=log)
    session = Session(matrix=matrix, options=options, settings=Settings(), log=log, backend=backend)
    return cache_key(session, matrix.cells[0], None)


def test_editing_a_user_profile_changes_the_cache_key(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    profile = tmp_path / "profiles" / "mine.yaml"
    profile.write_text(PROFILE.format(module="json"))
    before = key_for(tmp_path)
    assert key_for(tmp_path) == before
    profile.write_text(PROFILE.format(module="no_such_module"))
    assert key_for(tmp_path) != before
