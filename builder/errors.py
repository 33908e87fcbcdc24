"""The error taxonomy. Each class carries its exit code; only `cli.main` exits."""

from __future__ import annotations

OK = 0
CELLS_FAILED = 1
INVALID_INPUT = 2
ENGINE_UNAVAILABLE = 3
INTERNAL = 4


class BuilderError(Exception):
    """An expected failure: one line of what failed, one line of what to do."""

    exit_code = INTERNAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InputError(BuilderError):
    """Bad user input: usage, matrix file, profile, lock file."""

    exit_code = INVALID_INPUT


class EngineUnavailable(BuilderError):
    """The container engine cannot be reached or lacks a needed feature."""

    exit_code = ENGINE_UNAVAILABLE


def located(path: object, line: int, column: int, field: str, message: str) -> str:
    """Format a problem as `file:line:col: field: message` (1-based line and column)."""
    where = f"{path}:{line}:{column}"
    return f"{where}: {field}: {message}" if field else f"{where}: {message}"
