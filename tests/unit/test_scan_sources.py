"""Where `builder scan` learns what requirements bring: uv's resolution (its `# via` graph,
its cache, what it drops) and the import names in each wheel's file list (read with range
requests). uv and the index are faked here; tests/integration/test_scan_real.py has the real
ones."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from builder.check.metadata import MetadataError
from builder.lock import Resolution
from builder.matrix import Cell, Indexes
from builder.scan import Graph, UvResolver, parse_resolution, wheel_modules
from builder.scan.wheels import WheelModules, remote_namelist
from builder.settings import Settings

SPLIT = """\
diffusers==0.35.1
    # via -r requirements.in
huggingface-hub==0.35.0
    # via
    #   diffusers
    #   transformers
tqdm==4.67.1
    # via huggingface-hub
transformers==4.51.3
    # via -r /tmp/x/requirements.in
"""
LINE_STYLE = """\
diffusers==0.35.1         # via -r requirements.in
huggingface-hub==0.35.0   # via diffusers, transformers
tqdm==4.67.1              # via huggingface-hub
transformers==4.51.3      # via -r requirements.in
"""


@pytest.mark.parametrize("body", [SPLIT, LINE_STYLE])
def test_the_via_notes_are_the_dependency_graph(body: str) -> None:
    graph = parse_resolution(body)
    assert dict(graph.pins) == {
        "diffusers": "0.35.1",
        "huggingface-hub": "0.35.0",
        "tqdm": "4.67.1",
        "transformers": "4.51.3",
    }
    assert graph.parents["huggingface-hub"] == {"diffusers", "transformers"}
    assert graph.parents["diffusers"] == frozenset()


def test_the_path_to_a_transitive_package_is_the_shortest_from_a_declared_one() -> None:
    graph = parse_resolution(SPLIT)
    assert graph.path(["diffusers", "transformers"], "tqdm") == (
        "diffusers",
        "huggingface-hub",
        "tqdm",
    )
    assert graph.path(["transformers"], "tqdm") == ("transformers", "huggingface-hub", "tqdm")
    assert graph.path(["transformers"], "diffusers") is None
    assert Graph().path(["x"], "y") is None


# --- UvResolver: cache, offline, drops ----------------------------------------------------------


class FakeUv:
    """Answers like uv: fails on the requirements named in `fails`, else pins what it is given."""

    def __init__(self, fails: dict[str, str] | None = None) -> None:
        self.fails = fails or {}
        self.calls: list[tuple[tuple[str, ...], bool]] = []

    def __call__(self, cell: Cell, settings: Settings, offline: bool) -> Resolution:
        self.calls.append((cell.requirements, offline))
        for name, error in self.fails.items():
            if any(r.startswith(name) for r in cell.requirements):
                return Resolution(ok=False, error=error)
        body = "".join(
            f"{r.split('>')[0]}==1.0\n    # via -r requirements.in\n" for r in cell.requirements
        )
        return Resolution(ok=True, body=body)


def resolver(tmp_path: Path, uv: FakeUv, offline: bool = False) -> UvResolver:
    return UvResolver(Settings(metadata_cache=tmp_path), offline=offline, compile=uv)


def test_a_resolution_is_cached_and_the_next_scan_reads_the_cache(tmp_path: Path) -> None:
    uv = FakeUv()
    first = resolver(tmp_path, uv).resolve(["torch>=2.4", "numpy"], "3.11", "linux/amd64")
    again = resolver(tmp_path, uv).resolve(["torch>=2.4", "numpy"], "3.11", "linux/amd64")
    assert (first.info.origin, again.info.origin, len(uv.calls)) == ("uv", "cache", 1)
    assert dict(again.graph.pins) == {"torch": "1.0", "numpy": "1.0"}
    other = resolver(tmp_path, uv).resolve(["torch>=2.4", "numpy"], "3.10", "linux/arm64")
    assert other.info.origin == "uv"  # another Python or platform is another resolution


def test_the_index_options_reach_uv_and_key_the_cache(tmp_path: Path) -> None:
    uv = FakeUv()
    seen: list[Indexes] = []

    def spy(cell: Cell, settings: Settings, offline: bool) -> Resolution:
        seen.append(cell.indexes)
        return uv(cell, settings, offline)

    mirror = Indexes(index_url="https://mirror.example/simple")
    fake = UvResolver(Settings(metadata_cache=tmp_path), compile=spy)
    fake.resolve(["rich"], "3.11", "linux/amd64", mirror)
    assert fake.resolve(["rich"], "3.11", "linux/amd64").info.origin == "uv"
    assert seen == [mirror, Indexes()]


def test_offline_a_cache_miss_runs_uv_offline(tmp_path: Path) -> None:
    uv = FakeUv()
    resolved = resolver(tmp_path, uv, offline=True).resolve(["rich"], "3.11", "linux/amd64")
    assert (resolved.info.ok, uv.calls) == (True, [(("rich",), True)])


def test_a_requirement_uv_cannot_take_is_dropped_and_the_rest_resolved(tmp_path: Path) -> None:
    error = (
        "error: No solution found when resolving dependencies\n"
        "  cause: Because decord has no wheels with a matching platform tag and you require "
        "decord, we can conclude that your requirements are unsatisfiable."
    )
    uv = FakeUv({"decord": error})
    resolved = resolver(tmp_path, uv).resolve(["torch", "decord"], "3.11", "linux/arm64")
    assert resolved.info.ok and dict(resolved.graph.pins) == {"torch": "1.0"}
    [(line, why)] = resolved.info.dropped
    assert line == "decord" and "you require decord" in why
    again = resolver(tmp_path, uv).resolve(["torch", "decord"], "3.11", "linux/arm64")
    assert again.info.origin == "cache" and again.info.dropped == resolved.info.dropped


def test_a_build_that_fails_drops_that_requirement(tmp_path: Path) -> None:
    uv = FakeUv({"flash-attn": "error: Failed to build `flash-attn==2.7.4`\n  cause: no torch"})
    resolved = resolver(tmp_path, uv).resolve(["flash-attn", "einops"], "3.11", "linux/amd64")
    assert [line for line, _ in resolved.info.dropped] == ["flash-attn"]


def test_an_unreachable_index_drops_nothing_and_is_not_cached(tmp_path: Path) -> None:
    error = "error: Failed to fetch: `https://pypi.org/simple/torch/`\n  you require torch"
    uv = FakeUv({"torch": error})
    resolved = resolver(tmp_path, uv).resolve(["torch"], "3.11", "linux/amd64")
    assert (resolved.info.ok, resolved.info.dropped, len(uv.calls)) == (False, (), 1)
    assert resolved.info.error == error
    assert not (tmp_path / "resolutions").exists()


def test_no_requirements_need_no_uv(tmp_path: Path) -> None:
    uv = FakeUv()
    resolved = resolver(tmp_path, uv).resolve([], "3.11", "linux/amd64")
    assert (resolved.info.ok, resolved.info.packages, uv.calls) == (True, 0, [])


def test_a_corrupt_cache_entry_is_a_miss(tmp_path: Path) -> None:
    uv = FakeUv()
    resolver(tmp_path, uv).resolve(["rich"], "3.11", "linux/amd64")
    [entry] = (tmp_path / "resolutions").iterdir()
    entry.write_text("{not json")
    assert resolver(tmp_path, uv).resolve(["rich"], "3.11", "linux/amd64").info.origin == "uv"


# --- import names from wheel file lists ---------------------------------------------------------


def test_a_wheel_s_file_list_gives_its_import_names() -> None:
    files = [
        "cv2/__init__.py",
        "cv2/data/haarcascade.xml",
        "google/protobuf/__init__.py",
        "google/protobuf/message.py",
        "six.py",
        "_cffi_backend.cpython-311-x86_64-linux-gnu.so",
        "nsonly/mod.py",
        "pkg.data/purelib/yaml/__init__.py",
        "pkg.data/scripts/tool",
        "pkg-1.0.dist-info/RECORD",
        "__editable__.pkg-1.0.pth",
        "not-a-name/__init__.py",
    ]
    assert wheel_modules(files) == (
        "_cffi_backend",
        "cv2",
        "google.protobuf",
        "nsonly.mod",
        "six",
        "yaml",
    )


def make_wheel(files: list[str], padding: int = 0) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("big.bin", b"\0" * padding)  # what is never read
        for name in files:
            archive.writestr(name, "")
    return buffer.getvalue()


class FakeServer:
    """An index page and wheel files, served the way PyPI serves them (ranges: 206)."""

    def __init__(self, wheels: dict[str, bytes], ranges: bool = True) -> None:
        self.wheels, self.ranges = wheels, ranges
        self.pages: list[str] = []
        self.read = 0

    def fetch(self, url: str, accept: str) -> tuple[bytes, str] | None:
        self.pages.append(url)
        files = [
            {"filename": name, "url": f"https://files.example/{name}", "size": len(data)}
            for name, data in self.wheels.items()
        ]
        files.append({"filename": "torch-2.4.0.tar.gz", "url": "x", "size": 1})
        return json.dumps({"files": files}).encode(), "application/vnd.pypi.simple.v1+json"

    def ranged(self, url: str, byte_range: str) -> tuple[bytes, str] | None:
        if not self.ranges:
            return None
        data = self.wheels[url.rsplit("/", 1)[1]]
        spec = byte_range.removeprefix("bytes=")
        if spec.startswith("-"):
            start, end = max(0, len(data) - int(spec[1:])), len(data)
        else:
            low, high = spec.split("-")
            start, end = int(low), int(high) + 1
        self.read += end - start
        return data[start:end], f"bytes {start}-{end - 1}/{len(data)}"


def index(tmp_path: Path, server: FakeServer) -> WheelModules:
    return WheelModules(tmp_path / "modules", fetch=server.fetch, ranged=server.ranged)


def test_the_names_are_read_from_the_end_of_the_wheel_only(tmp_path: Path) -> None:
    wheel = make_wheel(["torch/__init__.py", "torchgen/__init__.py"], padding=4_000_000)
    server = FakeServer({"torch-2.4.0-cp311-cp311-manylinux_2_28_x86_64.whl": wheel})
    assert index(tmp_path, server).one("torch", "2.4.0") == ("torch", "torchgen")
    assert server.read < 300_000 < len(wheel)


def test_a_central_directory_beyond_the_first_read_is_fetched_too(tmp_path: Path) -> None:
    names = [f"pkg/mod{n:05}_{'x' * 60}.py" for n in range(6000)] + ["pkg/__init__.py"]
    server = FakeServer({"pkg-1.0-py3-none-any.whl": make_wheel(names)})
    assert index(tmp_path, server).one("pkg", "1.0") == ("pkg",)


def test_found_names_are_cached_for_good_and_read_offline(tmp_path: Path) -> None:
    server = FakeServer({"rich-13.0-py3-none-any.whl": make_wheel(["rich/__init__.py"])})
    assert index(tmp_path, server).modules({"rich": "13.0"}) == {"rich": ("rich",)}
    offline = WheelModules(tmp_path / "modules")
    assert offline.modules({"rich": "13.0", "other": "1.0"}) == {"rich": ("rich",), "other": None}
    assert len(server.pages) == 1


def test_a_release_without_a_wheel_is_unknown_and_not_asked_again_today(tmp_path: Path) -> None:
    server = FakeServer({"rich-13.0-py3-none-any.whl": make_wheel(["rich/__init__.py"])})
    modules = index(tmp_path, server)
    assert modules.one("torch", "2.4.0") is None  # only an sdist of that version
    assert modules.one("torch", "2.4.0") is None
    assert len(server.pages) == 1


def test_a_server_that_ignores_ranges_is_never_read_whole(tmp_path: Path) -> None:
    server = FakeServer({"rich-13.0-py3-none-any.whl": make_wheel(["rich/__init__.py"])}, False)
    assert index(tmp_path, server).one("rich", "13.0") is None
    assert remote_namelist("https://files.example/x.whl", server.ranged) is None


def test_a_network_failure_is_unknown_and_asked_again_next_time(tmp_path: Path) -> None:
    def down(url: str, accept: str) -> tuple[bytes, str] | None:
        raise MetadataError(f"{url}: connection refused")

    modules = WheelModules(tmp_path / "modules", fetch=down, ranged=FakeServer({}).ranged)
    assert modules.one("rich", "13.0") is None
    assert not (tmp_path / "modules").exists()


def test_bytes_that_are_not_a_zip_are_unknown(tmp_path: Path) -> None:
    server = FakeServer({"rich-13.0-py3-none-any.whl": b"not a zip file at all" * 100})
    assert index(tmp_path, server).one("rich", "13.0") is None
