"""Running things: subprocesses that stop when the run is cancelled, and per-cell thread pools.

Plumbing. `parallel_map` keeps results in input order, turns one item's crash into that item's
result (never the end of the run), and on Ctrl-C or SIGTERM cancels what has not started and
tells running work to stop, so `run` kills its child and temporary directories are removed.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from builder.errors import BuilderError

T = TypeVar("T")
R = TypeVar("R")
POLL_SECONDS = 0.2


class Cancelled(Exception):
    """The run was interrupted while this child ran; it has been killed."""


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
) -> Completed:
    """Run a command to completion (output decoded with replacement); kill it if `cancel` is
    set meanwhile and raise Cancelled."""
    with subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    ) as process:
        while True:
            try:
                out, err = process.communicate(timeout=POLL_SECONDS if cancel else None)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    process.kill()
                    process.communicate()
                    raise Cancelled(argv[0]) from None
            except BaseException:
                process.kill()
                raise
    return Completed(process.returncode, decode(out), decode(err))


def decode(data: bytes) -> str:
    """A child's output as text, whatever bytes it wrote."""
    return data.decode("utf-8", errors="replace")


def parallel_map(
    work: Callable[[T, threading.Event], R],
    items: Sequence[T],
    jobs: int,
    crashed: Callable[[T, Exception], R],
) -> list[R]:
    """`work(item, cancel)` for each item, `jobs` at a time, results in input order.

    An item whose work raises a non-builder exception (a bug) gets `crashed(item, exc)` as its
    result. A BuilderError (bad input, the engine gone) or an interrupt ends the run: work not
    yet started is cancelled, running work is told to stop through `cancel`, and it re-raises.
    """
    cancel = threading.Event()

    def guarded(item: T) -> R:
        try:
            return work(item, cancel)
        except (BuilderError, Cancelled):
            raise
        except Exception as exc:
            return crashed(item, exc)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures: list[Future[R]] = [pool.submit(guarded, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            cancel.set()
            for future in futures:
                future.cancel()
            raise


class Budget:
    """Cores and memory that concurrent work holds while it runs (probes of one run, across
    its cells). A request for more than the whole budget gets all of it: that work runs alone."""

    def __init__(self, cores: int, memory: int) -> None:
        self.cores, self.memory = max(1, cores), max(1, memory)
        self._cores, self._memory = self.cores, self.memory  # free now
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, cores: int = 1, memory: int = 0) -> Iterator[None]:
        """Wait until `cores` and `memory` bytes are free, and hold them until the block ends."""
        cores, memory = min(max(0, cores), self.cores), min(max(0, memory), self.memory)
        with self._changed:
            self._changed.wait_for(lambda: self._cores >= cores and self._memory >= memory)
            self._cores -= cores
            self._memory -= memory
        try:
            yield
        finally:
            with self._changed:
                self._cores += cores
                self._memory += memory
                self._changed.notify_all()


def machine_budget() -> Budget:
    """This machine's cores and physical memory."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # not on Linux: no memory bound beyond the probes' own
        memory = 1 << 62
    return Budget(os.cpu_count() or 1, memory)
