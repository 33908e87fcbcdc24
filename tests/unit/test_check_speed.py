"""What keeps `builder check` fast: each index probed once per run, an unreachable one left
out (and reported once, naming its cells), resolutions cached unless the network failed, and
cells resolved concurrently. Fakes only: no network, no uv, no timing."""

from __future__ import annotations

import http.server
import io
import itertools
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder import cli
from builder.check import CellReport, Options, check_cells
from builder.check.health import IndexHealth, urllib_probe
from builder.check.metadata import PYPI, IndexCache
from builder.lock import Resolution
from builder.log import Log
from builder.matrix import Cell, Matrix, parse_matrix
from builder.settings import Settings

DOWN = "https://down.example/whl/cu121"
UP = "https://up.example/whl/cu124"
MATRIX = f"""\
version: 1
bases:
  old: {{image: x, python: "3.10", cuda: "12.1"}}
  new: {{image: y, python: "3.11", cuda: "12.4"}}
axes: {{base: [old, new], torch: ["2.4.1"], transformers: ["4.47.0", "4.51.3"]}}
indexes:
  extra_index_urls:
    - {{url: "{DOWN}", cuda: "12.1"}}
    - {{url: "{UP}", cuda: "12.4"}}
"""
CONFLICT = (
    "Because transformers==4.47.0 depends on tokenizers>=0.21,<0.22 and you require "
    "tokenizers==0.20.3, we can conclude that your requirements are unsatisfiable."
)
NETWORK = (
    "error: Request failed after 3 retries\n  Caused by: Failed to fetch: "
    "`https://pypi.org/simple/tokenizers/`\n  Caused by: Connection refused"
)


def matrix(tmp_path: Path) -> Matrix:
    return parse_matrix(MATRIX, tmp_path / "matrix.yaml")


class Probes:
    """A `Probe` that counts what it is asked: `DOWN` does not answer, the rest do."""

    def __init__(self) -> None:
        self.asked: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, url: str) -> str | None:
        with self._lock:
            self.asked[url] += 1
        return "Name or service not known" if url == DOWN else None


class Resolver:
    """A resolver answering `error` (or a body of the cell's pins), recording each call."""

    def __init__(self, error: str | None = None) -> None:
        self.error = error
        self.calls: list[Cell] = []
        self._lock = threading.Lock()

    def __call__(self, cell: Cell, settings: Settings, offline: bool) -> Resolution:
        with self._lock:
            self.calls.append(cell)
        if self.error is not None:
            return Resolution(ok=False, error=self.error)
        return Resolution(ok=True, body="".join(f"{p.requirement}\n" for p in cell.pins))


def no_project(url: str, accept: str) -> tuple[bytes, str] | None:
    """A `Fetch` for an index that has none of the projects asked for (never the network)."""
    assert not url.startswith(DOWN), f"fetched from an index the probe found down: {url}"
    return None


def options(tmp_path: Path, resolver: Resolver, probe: Probes, jobs: int = 4) -> Options:
    return Options(
        settings=Settings(metadata_cache=tmp_path / "cache"),
        resolver=resolver,
        fetch=no_project,
        probe=probe,
        jobs=jobs,
    )


def codes(report: CellReport) -> list[str]:
    return [f.code for f in report.findings]


def test_an_unreachable_index_is_probed_once_per_run_and_reported_once_naming_its_cells(
    tmp_path: Path,
) -> None:
    m, probe, resolver, err = matrix(tmp_path), Probes(), Resolver(), io.StringIO()
    log = Log(stream=err, verbosity=-1)  # warnings only
    reports = check_cells(m, m.cells, options(tmp_path, resolver, probe), log)
    assert probe.asked == {DOWN: 1, UP: 1, PYPI: 1}  # four cells on four threads, one probe each
    warnings = [line for line in err.getvalue().splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and DOWN in warnings[0] and "Name or service not known" in warnings[0]
    old = [c.id for c in m.cells if c.base.name == "old"]
    new = [c.id for c in m.cells if c.base.name == "new"]
    assert all(cell_id in err.getvalue() for cell_id in old)
    assert not any(cell_id in err.getvalue() for cell_id in new)
    by_id = {r.id: r for r in reports}
    for cell_id in old:  # each cell it left short says so, naming it
        (finding,) = [f for f in by_id[cell_id].findings if f.code == "index-unreachable"]
        assert DOWN in finding.message and finding.severity == "error"
    assert all("index-unreachable" not in codes(by_id[cell_id]) for cell_id in new)
    asked = {c.id: c.indexes.extra_index_urls for c in resolver.calls}
    assert asked == {**dict.fromkeys(old, ()), **dict.fromkeys(new, (UP,))}


def test_the_next_run_probes_again_and_reuses_the_resolution_made_without_the_index(
    tmp_path: Path,
) -> None:
    m, probe, resolver = matrix(tmp_path), Probes(), Resolver()
    for _ in range(2):
        reports = check_cells(m, m.cells, options(tmp_path, resolver, probe))
    assert probe.asked[DOWN] == 2  # once per run: the index may be back
    assert len(resolver.calls) == 4  # the second run resolved nothing
    old = [r for r in reports if r.id.startswith("old")]
    assert all("index-unreachable" in codes(r) for r in old)


def test_a_cell_whose_main_index_does_not_answer_is_not_resolved_at_all(tmp_path: Path) -> None:
    m, resolver = matrix(tmp_path), Resolver()

    def pypi_down(url: str) -> str | None:
        return "Connection refused" if url == PYPI else None

    opts = Options(
        settings=Settings(metadata_cache=tmp_path), resolver=resolver, probe=pypi_down, fetch=None
    )
    (report,) = check_cells(m, m.cells[:1], opts)
    assert resolver.calls == []
    (finding,) = [f for f in report.findings if f.code == "index-unreachable"]
    assert PYPI in finding.message and "matrix's own pins" in finding.message


def test_a_network_failure_is_never_cached(tmp_path: Path) -> None:
    m, resolver = matrix(tmp_path), Resolver(NETWORK)
    cell = m.cells[-1]
    for _ in range(2):
        (report,) = check_cells(m, [cell], options(tmp_path, resolver, Probes()))
        assert codes(report)[:1] == ["index-unreachable"]
    assert len(resolver.calls) == 2  # asked again: the network may be back


def test_a_genuine_conflict_is_cached_by_its_inputs(tmp_path: Path) -> None:
    m, resolver = matrix(tmp_path), Resolver(CONFLICT)
    first, second = m.cells[-2:]  # other transformers pins: other inputs
    for _ in range(2):
        reports = check_cells(m, [first], options(tmp_path, resolver, Probes()))
        assert codes(reports[0])[:1] == ["unresolvable"]
    assert len(resolver.calls) == 1  # the same inputs fail the same way
    check_cells(m, [second], options(tmp_path, resolver, Probes()))
    assert len(resolver.calls) == 2


def test_cells_resolve_concurrently(tmp_path: Path) -> None:
    m, inner = matrix(tmp_path), Resolver()
    in_flight = threading.Barrier(len(m.cells), timeout=30)  # broken unless all wait at once
    arrivals = itertools.count()  # next() is atomic: one number per call

    def resolver(cell: Cell, settings: Settings, offline: bool) -> Resolution:
        if next(arrivals) < len(m.cells):  # each cell's own resolution, not a fix's re-check
            in_flight.wait()
        return inner(cell, settings, offline)

    opts = Options(
        settings=Settings(metadata_cache=tmp_path),
        resolver=resolver,
        offline=True,
        jobs=len(m.cells),
    )
    reports = check_cells(m, m.cells, opts, Log(verbosity=-1, stream=io.StringIO()))
    assert all("internal-error" not in codes(r) for r in reports)
    assert len(inner.calls) == len(m.cells)


def test_check_passes_its_jobs_option_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builder.check

    seen: list[int] = []

    def fake(matrix: Matrix, cells: object, options: Options, log: object) -> list[CellReport]:
        seen.append(options.jobs)
        return []

    monkeypatch.setattr(builder.check, "check_cells", fake)
    path = tmp_path / "matrix.yaml"
    path.write_text(MATRIX)
    state = {"argv": (), "debug": False}
    result = CliRunner().invoke(cli.cli, ["check", "-m", str(path), "-j", "7"], obj=state)
    assert result.exit_code == 0, result.output
    assert seen == [7]


def test_a_probe_that_hangs_counts_as_no_answer_after_its_timeout() -> None:
    release = threading.Event()

    def hangs(url: str) -> str | None:
        release.wait()
        return None

    health = IndexHealth(hangs, timeout=0.01)
    try:
        assert health.problem(DOWN) == "no answer within 0.01s"
        assert health.unreachable() == {DOWN: "no answer within 0.01s"}
    finally:
        release.set()


class _Index(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response({"/up/": 200, "/missing/": 404, "/broken/": 503}[self.path])
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def index() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_probe_counts_any_http_answer_below_500_as_an_index_that_answers(index: str) -> None:
    probe = urllib_probe(None, timeout=5)
    assert probe(f"{index}/up/") is None
    assert probe(f"{index}/missing/") is None  # it answered: uv says what is wrong
    assert probe(f"{index}/broken/") == "HTTP 503 Service Unavailable"
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert probe(f"http://127.0.0.1:{port}/") == "Connection refused"
    assert probe("file:///nowhere/") is None  # a local index: uv reports on it


def test_threads_asking_for_the_same_project_at_once_share_one_fetch(tmp_path: Path) -> None:
    entered, release, start = threading.Event(), threading.Event(), threading.Barrier(8)
    asked: list[str] = []

    def slow(url: str, accept: str) -> tuple[bytes, str] | None:
        asked.append(url)
        entered.set()
        release.wait(timeout=30)
        return None

    index = IndexCache("https://index.example/simple/", tmp_path, slow)

    def ask() -> None:
        start.wait(timeout=30)
        index.project("demo")

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    assert entered.wait(timeout=30)
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert asked == ["https://index.example/simple/demo/"]


def test_both_of_uvs_offline_misses_are_misses_not_conflicts() -> None:
    from builder.check.resolution import _genuine_conflict

    for text in (
        "Because torch==2.4.0 needs to be downloaded from a registry and we are in offline "
        "mode, we can conclude that your requirements are unsatisfiable.",
        "Because torch was not found in the cache, your requirements are unsatisfiable.",
    ):
        assert not _genuine_conflict(text)
    assert _genuine_conflict("Because a==1 depends on b>2, your requirements are unsatisfiable.")
