"""Progress output on stderr: plain lines, `+ cmd` echoes, timed steps, GitHub groups.

Results go to stdout (the commands print them); everything here goes to stderr.
"""

from __future__ import annotations

import shlex
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Log:
    """A step logger. `github` turns steps into `::group::` blocks."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    verbosity: int = 0
    color: bool = False
    github: bool = False
    tracebacks: bool = False  # --debug

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def info(self, message: str) -> None:
        if self.verbosity >= 0:
            print(message, file=self.stream, flush=True)

    def debug(self, message: str) -> None:
        if self.verbosity > 0:
            print(message, file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        print(self._paint(f"warning: {message}", "33"), file=self.stream, flush=True)

    def error(self, message: str, hint: str | None = None) -> None:
        print(self._paint(f"error: {message}", "31;1"), file=self.stream, flush=True)
        if hint:
            print(f"  hint: {hint}", file=self.stream, flush=True)

    def crash(self, subject: str, exc: BaseException) -> str:
        """Say that `subject` hit a bug (with the traceback under --debug); return the reason
        its result carries, so one crash is one cell's `error`, never the end of the run."""
        reason = f"internal error (a bug in builder): {type(exc).__name__}: {exc}"
        self.error(f"{subject}: {reason}", None if self.tracebacks else "re-run with --debug")
        if self.tracebacks:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=self.stream)
        return reason

    def command(self, argv: Sequence[str]) -> None:
        """Echo a subprocess the way cibuildwheel does: `+ cmd`."""
        self.debug(self._paint("+ " + shlex.join(argv), "2"))

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        """Time a step; under GitHub Actions fold its output into a group."""
        start = time.monotonic()
        if self.github:
            print(f"::group::{title}", file=self.stream, flush=True)
        else:
            self.info(self._paint(f"==> {title}", "1"))
        try:
            yield
        finally:
            took = time.monotonic() - start
            if self.github:
                print("::endgroup::", file=self.stream, flush=True)
            self.info(self._paint(f"    {title}: {took:.1f}s", "2"))


def from_env(
    environ: dict[str, str],
    verbosity: int,
    stream: TextIO | None = None,
    *,
    tracebacks: bool = False,
) -> Log:
    """Build the logger from the environment the CLI passes in (no deep env reads)."""
    out = stream or sys.stderr
    color = out.isatty() and "NO_COLOR" not in environ
    return Log(out, verbosity, color, environ.get("GITHUB_ACTIONS") == "true", tracebacks)
