"""Which of a run's indexes answer, for `builder check`: a per-run table, shared by its cells.

Each index is probed once per run, on first need (a `HEAD` of its URL), and the answer is
kept for the rest of the run, for every cell and thread. The probe gets `timeout` seconds in
all, name lookup included (which no socket timeout bounds): an index that has not answered
by then counts as down. An index that is down is left out of resolutions and metadata fetches
instead of being retried by every cell (uv alone tries each request four times), and `check`
says so once for the run and in each cell it affected.
"""

from __future__ import annotations

import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from builder import __version__

DEFAULT_PROBE_TIMEOUT = 3.0

# index URL -> None when the index answers, else why it does not ("Name or service not known")
Probe = Callable[[str], str | None]


def urllib_probe(cafile: Path | None, timeout: float = DEFAULT_PROBE_TIMEOUT) -> Probe:
    """A `Probe` over urllib with the run's CA bundle: any HTTP answer below 500 is an index
    that answers (a 404 or 401 too: uv will say what is wrong with it); a 5xx, a refused or
    timed-out connection, a failed name lookup or TLS handshake is one that does not."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    agent = f"builder/{__version__} (check)"

    def probe(url: str) -> str | None:
        if not url.startswith(("http://", "https://")):
            return None  # a local index: uv reports what is wrong with it
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": agent})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context):
                return None
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code} {exc.reason}" if exc.code >= 500 else None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return _why(getattr(exc, "reason", None) or exc)

    return probe


def _why(reason: object) -> str:
    """`Name or service not known`, not `[Errno -2] Name or service not known`."""
    return str(getattr(reason, "strerror", None) or reason)


@dataclass
class IndexHealth:
    """The run's table of index answers: `problem(url)` probes an index the first time any
    cell or thread asks, and every later ask (concurrent ones wait) gets the same answer."""

    probe: Probe
    timeout: float = DEFAULT_PROBE_TIMEOUT
    _answers: dict[str, Future[str | None]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def problem(self, url: str) -> str | None:
        """Why `url` does not answer, or None when it does."""
        with self._lock:
            answer = self._answers.get(url)
            first = answer is None
            if answer is None:
                answer = self._answers[url] = Future()
        if first:
            answer.set_result(self._probe_once(url))
        return answer.result()

    def down(self, urls: tuple[str, ...]) -> dict[str, str]:
        """Those of `urls` that do not answer, with why, in the order given."""
        return {url: why for url in urls if (why := self.problem(url)) is not None}

    def unreachable(self) -> dict[str, str]:
        """The indexes probed so far that did not answer, with why."""
        with self._lock:
            done = [(u, a) for u, a in self._answers.items() if a.done()]
        return {url: why for url, answer in done if (why := answer.result()) is not None}

    def _probe_once(self, url: str) -> str | None:
        # A daemon thread, so that a name lookup stuck past the timeout never holds up the run
        # or its exit; its late answer is ignored.
        got: list[str | None] = []
        thread = threading.Thread(target=lambda: got.append(self._guarded(url)), daemon=True)
        thread.start()
        thread.join(self.timeout)
        return got[0] if got else f"no answer within {self.timeout:g}s"

    def _guarded(self, url: str) -> str | None:
        try:
            return self.probe(url)
        except Exception as exc:  # a probe that breaks cannot vouch for the index
            return f"probe failed: {type(exc).__name__}: {exc}"
