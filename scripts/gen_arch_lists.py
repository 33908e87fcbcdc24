"""Measure the compiled CUDA architecture list of every torch CUDA wheel PyPI serves.

    .venv/bin/python scripts/gen_arch_lists.py [-o builder/data/torch_arch.yaml] [--from 2.4]

What `torch._C._cuda_getArchFlags()` returns (`torch.cuda.get_arch_list()` splits it) is a
string compiled into `torch/lib/libtorch_python.so`, e.g. `sm_50 sm_60 sm_70 sm_75 sm_80
sm_86 sm_90` (a PTX entry reads `compute_XX`). Without downloading a whole wheel (0.5-0.9 GB)
this script reads, with HTTP Range requests, the end of each wheel (the zip's central
directory, zip64 too), then just two members: `torch/version.py` (the CUDA the wheel is built
with) and `libtorch_python.so` (7-30 MB compressed), inflated here. The string is found by
the cuda probe's own reader (`validate/cuda.py` `arch_flags_in_binary`), so the table and
what the probe reads inside an image cannot disagree on the parsing.

Rows are written measured: true, with the wheel's file name and its sha256 from PyPI's JSON.
Builds PyPI does not carry (the per-CUDA indexes at download.pytorch.org, unreachable here)
are kept from the existing table's `measured: false` rows, each citing its source.
Members are cached under /var/tmp/builder-fleet (`--cache`), so a re-run is offline.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import importlib.util
import json
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packaging.utils import parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPI_JSON = "https://pypi.org/pypi/torch/json"
DEFAULT_OUT = ROOT / "builder" / "data" / "torch_arch.yaml"
DEFAULT_CACHE = Path("/var/tmp/builder-fleet")
LIBRARY = "torch/lib/libtorch_python.so"
VERSION_PY = "torch/version.py"
PYTHON_TAG = "cp311"
TAIL = 1 << 16  # bytes read from a wheel's end: the end-of-central-directory records
TIMEOUT = 120
RETRIES = 5

_CUDA = importlib.util.spec_from_file_location("_probe_cuda", ROOT / "validate" / "cuda.py")
assert _CUDA and _CUDA.loader
probe = importlib.util.module_from_spec(_CUDA)
_CUDA.loader.exec_module(probe)


# ---------------------------------------------------------------- a wheel read by ranges


def fetch(url: str, start: int | None = None, end: int | None = None) -> bytes:
    """The bytes [start, end] of url (both inclusive), or all of it; a dropped connection or
    a failed name lookup is retried (the proxy here has both now and then)."""
    for attempt in range(RETRIES):
        try:
            return _fetch_once(url, start, end)
        except (urllib.error.URLError, OSError) as exc:
            if attempt == RETRIES - 1 or getattr(exc, "code", 500) < 500:
                raise
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


def _fetch_once(url: str, start: int | None, end: int | None) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "builder gen_arch_lists"})
    if start is not None:
        request.add_header("Range", f"bytes={start}-{'' if end is None else end}")
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        data: bytes = answer.read()
        if start is not None and answer.status != 206:
            raise RuntimeError(f"{url}: the server ignored the Range header ({answer.status})")
    return data


@dataclass(frozen=True)
class Member:
    name: str
    method: int  # 0 stored, 8 deflated
    compressed: int
    size: int
    offset: int  # of its local file header


def _zip64_extra(extra: bytes, want: list[str]) -> dict[str, int]:
    """The zip64 extended information field (0x0001): the 8-byte values that the 32-bit
    fields marked 0xFFFFFFFF stand for, in the order size, compressed, offset."""
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, at)
        if tag == 1:
            values = struct.unpack_from(f"<{len(want)}Q", extra, at + 4)
            return dict(zip(want, values, strict=True))
        at += 4 + length
    return {}


def central_directory(url: str, size: int) -> dict[str, Member]:
    """Every member of the zip at url, from its central directory (zip64 or not)."""
    start = max(0, size - TAIL)
    tail = fetch(url, start, size - 1)
    end = tail.rfind(b"PK\x05\x06")
    if end < 0:
        raise RuntimeError(f"{url}: no end of central directory record in the last {TAIL} bytes")
    count, cd_size, cd_offset = struct.unpack_from("<HLL", tail, end + 10)
    locator = end - 20
    if tail[locator : locator + 4] == b"PK\x06\x07":
        (record,) = struct.unpack_from("<Q", tail, locator + 8)
        z64 = tail[record - start :] if record >= start else fetch(url, record, record + 55)
        if z64[:4] != b"PK\x06\x06":
            raise RuntimeError(f"{url}: bad zip64 end of central directory record")
        count, _, cd_size, cd_offset = struct.unpack_from("<QQQQ", z64, 24)
    directory = (
        tail[cd_offset - start : cd_offset - start + cd_size]
        if cd_offset >= start
        else fetch(url, cd_offset, cd_offset + cd_size - 1)
    )
    return _members(directory, count)


def _members(directory: bytes, count: int) -> dict[str, Member]:
    out: dict[str, Member] = {}
    at = 0
    for _ in range(count):
        fields = struct.unpack_from("<4s6H3L5H2L", directory, at)
        if fields[0] != b"PK\x01\x02":
            raise RuntimeError("bad central directory entry")
        method, compressed, size = fields[4], fields[8], fields[9]
        name_len, extra_len, comment_len, offset = fields[10], fields[11], fields[12], fields[16]
        name = directory[at + 46 : at + 46 + name_len].decode("utf-8")
        extra = directory[at + 46 + name_len : at + 46 + name_len + extra_len]
        fixed = (("size", size), ("compressed", compressed), ("offset", offset))
        big = [k for k, v in fixed if v == 0xFFFFFFFF]
        wide = _zip64_extra(extra, big) if big else {}
        out[name] = Member(
            name,
            method,
            wide.get("compressed", compressed),
            wide.get("size", size),
            wide.get("offset", offset),
        )
        at += 46 + name_len + extra_len + comment_len
    return out


def read_member(url: str, member: Member) -> bytes:
    """One member's bytes: its local header (for the real name and extra lengths), then
    its data, inflated."""
    header = fetch(url, member.offset, member.offset + 29)
    if header[:4] != b"PK\x03\x04":
        raise RuntimeError(f"{url}: no local file header at {member.offset}")
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    start = member.offset + 30 + name_len + extra_len
    raw = fetch(url, start, start + member.compressed - 1)
    data = raw if member.method == 0 else zlib.decompressobj(-15).decompress(raw)
    if len(data) != member.size:
        raise RuntimeError(f"{url}: {member.name} inflated to {len(data)} bytes, not {member.size}")
    return data


# ---------------------------------------------------------------- torch wheels on PyPI


@dataclass(frozen=True)
class Wheel:
    version: Version
    filename: str
    url: str
    sha256: str
    size: int


def pypi_wheels(index: dict[str, Any], lowest: Version) -> list[Wheel]:
    """The Linux x86_64 CPython 3.11 wheel of every final torch release from `lowest` on."""
    out = []
    for text, files in index["releases"].items():
        version = Version(text)
        if version < lowest or version.is_prerelease or version.is_devrelease:
            continue
        for f in files:
            if not f["filename"].endswith(".whl") or f.get("yanked"):
                continue
            _, _, _, tags = parse_wheel_filename(f["filename"])
            if any(t.interpreter == PYTHON_TAG and t.platform.endswith("_x86_64") for t in tags):
                url = urllib.parse.urljoin(PYPI_JSON, f["url"])
                out.append(Wheel(version, f["filename"], url, f["digests"]["sha256"], f["size"]))
                break
    return sorted(out, key=lambda w: w.version)


def cached(cache: Path, wheel: Wheel, member: str, read: Any) -> bytes:
    path = cache / wheel.sha256 / member.replace("/", "__")
    if path.is_file():
        return path.read_bytes()
    data: bytes = read()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".part").write_bytes(data)
    path.with_suffix(".part").replace(path)
    return data


def wheel_cuda(version_py: bytes) -> str | None:
    """`cuda` from torch/version.py (`cuda: Optional[str] = '12.1'`), None for CPU."""
    for node in ast.parse(version_py.decode("utf-8")).body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "cuda":
            value = ast.literal_eval(node.value) if node.value is not None else None  # type: ignore[attr-defined]
            return None if value is None else str(value)
    return None


def measure(wheel: Wheel, cache: Path) -> dict[str, Any] | None:
    """The table row of one wheel, or None for a CPU-only wheel."""
    members: dict[str, Member] = {}

    def listing() -> dict[str, Member]:
        if not members:
            members.update(central_directory(wheel.url, wheel.size))
        return members

    version_py = cached(
        cache, wheel, VERSION_PY, lambda: read_member(wheel.url, listing()[VERSION_PY])
    )
    cuda = wheel_cuda(version_py)
    if cuda is None:
        return None
    library = cached(cache, wheel, LIBRARY, lambda: read_member(wheel.url, listing()[LIBRARY]))
    flags = probe.arch_flags_in_binary(library)
    if flags is None:
        raise RuntimeError(f"{wheel.filename}: no arch list found in {LIBRARY}")
    major, minor = cuda.split(".")[:2]
    return {
        "torch": str(wheel.version),
        "cuda": f"cu{major}{minor}",
        "arch": flags.split(),
        "measured": True,
        "source": f"{wheel.filename} sha256:{wheel.sha256} ({LIBRARY})",
        "pypi_default": True,
    }


# ---------------------------------------------------------------- the table


HEADER = """\
# The compiled CUDA architectures of torch builds: what torch._C._cuda_getArchFlags() returns
# (torch.cuda.get_arch_list() splits it). sm_XY: SASS for compute capability X.Y; compute_XY:
# PTX that a newer GPU's driver can JIT. Used by `builder check` (builder/check/fleet.py).
#
# Generated by scripts/gen_arch_lists.py: rows with measured: true were read from the wheel
# PyPI serves (Linux x86_64, CPython 3.11; PyPI carries one CUDA build per release, its
# default), the string taken from torch/lib/libtorch_python.so with HTTP Range requests;
# `source` names the wheel file and its sha256 on PyPI. Rows with measured: false are builds
# only the per-CUDA indexes carry (https://download.pytorch.org/whl/cuXYZ); they cite the
# build script or release notes their list comes from, and are kept as they are on re-runs.
# A +PTX in a build script's TORCH_CUDA_ARCH_LIST is not taken as a compute_ entry: no measured
# build lists one, though 2.11+ cu130 is configured 12.0+PTX, and the fatbin of 2.11.0's
# libtorch_cuda.so (read once with validate/cuda.py's fatbin reader) holds SASS entries only.
"""


def load_cited(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return [r for r in rows.get("builds", []) if not r.get("measured")]


def write_table(path: Path, measured: list[dict[str, Any]], cited: list[dict[str, Any]]) -> None:
    key = {(r["torch"], r["cuda"]) for r in measured}
    rows = measured + [r for r in cited if (r["torch"], r["cuda"]) not in key]
    rows.sort(key=lambda r: (Version(r["torch"]), r["cuda"]))
    body = yaml.safe_dump(
        {"builds": [_flow(r) for r in rows]}, sort_keys=False, width=100, default_flow_style=None
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(HEADER + "\n" + body, encoding="utf-8")
    tmp.replace(path)


def _flow(row: dict[str, Any]) -> dict[str, Any]:
    order = ("torch", "cuda", "arch", "measured", "pypi_default", "arch_list", "source")
    return {k: row[k] for k in order if k in row}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--from", dest="lowest", default="2.4", help="lowest torch release")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("-j", "--jobs", type=int, default=4)
    args = parser.parse_args(argv)
    index = json.loads(fetch(PYPI_JSON))
    wheels = pypi_wheels(index, Version(args.lowest))
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda w: measure(w, args.cache), wheels))
    measured = [r for r in results if r is not None]
    for wheel, row in zip(wheels, results, strict=True):
        print(f"{wheel.filename}: {row['cuda'] + ' ' + ' '.join(row['arch']) if row else 'CPU'}")
    write_table(args.output, measured, load_cited(args.output))
    print(f"wrote {args.output}: {len(measured)} measured rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
