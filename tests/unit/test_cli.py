"""The CLI's contract: exit codes, --debug, SIGTERM."""

from __future__ import annotations

import pytest

from builder import cli, schema


def crash(*args: object) -> None:
    raise RuntimeError("a bug")


@pytest.mark.parametrize("debug", [False, True])
def test_debug_shows_the_traceback_of_an_internal_error_and_only_then(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], debug: bool
) -> None:
    monkeypatch.setattr(schema, "matrix_schema", crash)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--debug", "schema"] if debug else ["schema"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 4
    assert "internal error: RuntimeError: a bug" in err
    assert ("Traceback" in err) is debug


def test_debug_is_read_from_its_option_not_from_any_argument(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(schema, "matrix_schema", crash)
    with pytest.raises(SystemExit):
        cli.main(["schema", "--debug"])  # not an option of `schema`: a usage error
    assert "Traceback" not in capsys.readouterr().err
