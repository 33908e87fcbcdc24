"""The committed matrix.schema.json (what editors and yaml-language-server read) is exactly what
`builder schema` prints, so a change to the matrix model cannot leave it behind."""

from __future__ import annotations

from tests.conftest import ROOT, run_cli

COMMITTED = ROOT / "matrix.schema.json"


def test_the_committed_schema_is_what_builder_schema_prints() -> None:
    done = run_cli("schema")
    assert done.code == 0, done.err
    assert done.out == COMMITTED.read_text(), (
        "matrix.schema.json is stale: regenerate it with `builder schema > matrix.schema.json`"
    )
