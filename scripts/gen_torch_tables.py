"""Write builder/data/torch_tables.yaml from PyPI's metadata (weekly: torch-tables.yml).

    python scripts/gen_torch_tables.py [-o FILE] [--index URL] [--ca-bundle FILE]
                                       [--allow-fewer-rows]

Three tables, one row per release, each row with its source:

- `torch_cuda`: torch release -> the CUDA of PyPI's default Linux x86_64 wheel (the one without
  a +cuXYZ label), read from its Requires-Dist by `builder.check.rules.declared_cuda`, the same
  reader `builder check` applies to a resolved torch;
- `torchvision`, `torchaudio`: release -> the torch its Requires-Dist asks for.

Releases come from the JSON API (`<index>/pypi/<name>/json`). A release's Requires-Dist comes
from one of its Linux x86_64 wheels (else any wheel): its PEP 658 core metadata
(`<wheel url>.metadata`) first, then the per-release JSON API, and where neither answers (a
mirror that lacks both), the wheel's `*.dist-info/METADATA` read with HTTP range requests (the
zip's central directory and that one member: about 2 MB of a 500 MB torch wheel). No wheel is
downloaded.

Like cog's compatgen, it refuses to write a table with fewer rows than the committed one (a
half-answering index must not drop rows): exit 1 unless `--allow-fewer-rows`. A release whose
metadata cannot be read keeps its committed row; a new one fails the run. When no row changed,
the file (and its date) is left alone, so the weekly job opens no pull request.
"""

from __future__ import annotations

import argparse
import datetime
import email.parser
import email.policy
import io
import json
import re
import sys
import urllib.parse
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.check.metadata import Fetch, MetadataError, urllib_fetch
from builder.check.rules import declared_cuda
from builder.files import write_atomic
from builder.scan.wheels import RangeFetch, urllib_ranged

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "builder" / "data" / "torch_tables.yaml"
INDEX = "https://pypi.org"
# The oldest release of each table: torch 2.0 and the companions built for it.
FIRST = {"torch": Version("2.0"), "torchvision": Version("0.15"), "torchaudio": Version("2.0")}
TABLES = {"torch": "torch_cuda", "torchvision": "torchvision", "torchaudio": "torchaudio"}
# The marker environment the default wheel is installed in (CPython 3.12 on Linux x86_64).
MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
_PYTHONS = ("cp312", "cp311", "cp310", "cp313", "cp314")  # the wheels tried first


class Refused(Exception):
    """The tables cannot be written (exit 1)."""


@dataclass(frozen=True)
class Wheel:
    filename: str
    url: str


@dataclass(frozen=True)
class Metadata:
    """A release's Requires-Dist and where it was read."""

    requires: tuple[str, ...]
    source: str


# ---------------------------------------------------------------- reading PyPI


def releases(fetch: Fetch, index: str, name: str) -> dict[Version, list[Wheel]]:
    """Final, non-yanked releases from FIRST[name] on, with their wheels (best first)."""
    url = f"{index}/pypi/{name}/json"
    answer = fetch(url, "application/json")
    if answer is None:
        raise Refused(f"{url}: not found")
    data = json.loads(answer[0])
    out: dict[Version, list[Wheel]] = {}
    for text, files in data["releases"].items():
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        wheels = [
            Wheel(f["filename"], urllib.parse.urljoin(url, f["url"]))
            for f in files
            if f["filename"].endswith(".whl") and not f.get("yanked")
        ]
        if wheels and not version.is_prerelease and version >= FIRST[name]:
            out[version] = sorted(wheels, key=_preference)
    return dict(sorted(out.items()))


def _preference(wheel: Wheel) -> tuple[int, int, str]:
    """Linux x86_64 wheels first (CPython 3.12, 3.11, ...), then pure ones, then the rest."""
    try:
        tags = parse_wheel_filename(wheel.filename)[3]
    except InvalidWheelFilename:
        return (3, 0, wheel.filename)
    platforms = {t.platform for t in tags}
    interpreters = {t.interpreter for t in tags}
    python = next((i for i, p in enumerate(_PYTHONS) if p in interpreters), len(_PYTHONS))
    if any(p.endswith("x86_64") and p.startswith(("manylinux", "linux")) for p in platforms):
        return (0, python, wheel.filename)
    return (1 if platforms == {"any"} else 2, python, wheel.filename)


def read_metadata(
    fetch: Fetch, ranged: RangeFetch, index: str, name: str, version: Version, wheels: list[Wheel]
) -> Metadata | None:
    """The release's Requires-Dist: PEP 658, then the per-release JSON API, then ranges."""
    linux = [w for w in wheels if _preference(w)[0] == 0] or wheels
    for wheel in linux:
        answer = fetch(f"{wheel.url}.metadata", "*/*")
        if answer is not None:
            return Metadata(_requires(answer[0]), f"{wheel.filename} core metadata (PEP 658)")
    url = f"{index}/pypi/{name}/{version}/json"
    answer = fetch(url, "application/json")
    if answer is not None:
        info = json.loads(answer[0])["info"]
        return Metadata(tuple(info.get("requires_dist") or ()), f"PyPI JSON API {url}")
    for wheel in linux[:2]:
        body = remote_member(wheel.url, ranged, f"{name}-{version}.dist-info/METADATA")
        if body is not None:
            return Metadata(_requires(body), f"{wheel.filename} METADATA (HTTP range requests)")
    return None


def _requires(body: bytes) -> tuple[str, ...]:
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(body)
    return tuple(str(r) for r in message.get_all("Requires-Dist") or [])


def remote_member(url: str, ranged: RangeFetch, member: str) -> bytes | None:
    """One member of a remote zip, read with range requests; None when that fails."""
    try:
        with zipfile.ZipFile(_Ranges(url, ranged)) as archive:
            names = [n for n in archive.namelist() if n.lower() == member.lower()]
            names = names or [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            return archive.read(names[0]) if names else None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, MetadataError):
        return None


class _Ranges(io.RawIOBase):
    """A seekable view of a remote file that fetches only the byte ranges read."""

    _TAIL = 1024 * 1024  # the central directory of a torch wheel is about 1.6 MB

    def __init__(self, url: str, ranged: RangeFetch) -> None:
        super().__init__()
        self.url, self.ranged, self.position = url, ranged, 0
        answer = ranged(url, f"bytes=-{self._TAIL}")
        if answer is None:
            raise OSError(f"{url}: no range requests")
        match = re.search(r"/(\d+)\s*$", answer[1])
        self.size = int(match[1]) if match else len(answer[0])
        self.chunks = [(self.size - len(answer[0]), answer[0])]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        start = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, start + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        end = min(self.size, self.position + len(buffer))
        data = self._bytes(self.position, end) if end > self.position else b""
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)

    def _bytes(self, start: int, end: int) -> bytes:
        for offset, chunk in self.chunks:
            if offset <= start and end <= offset + len(chunk):
                return chunk[start - offset : end - offset]
        low = max(0, min(start, end - 256 * 1024))
        answer = self.ranged(self.url, f"bytes={low}-{end - 1}")
        if answer is None or len(answer[0]) != end - low:
            raise OSError(f"{self.url}: short range answer")
        self.chunks.append((low, answer[0]))
        return answer[0][start - low : end - low]


# ---------------------------------------------------------------- rows


def torch_row(meta: Metadata) -> dict[str, str | None]:
    """`cuda` (major.minor, or the major alone; None: the wheel declares no CUDA)."""
    found = declared_cuda(meta.requires, MARKERS)
    if found is None:
        return {"cuda": None, "declared": None, "source": meta.source}
    (major, minor), line = found
    cuda = f"{major}" if minor is None else f"{major}.{minor}"
    return {"cuda": cuda, "declared": line, "source": meta.source}


def companion_row(meta: Metadata) -> dict[str, str | None]:
    """`torch`: the specifier of the release's torch requirement (None: it declares none)."""
    for text in meta.requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.name.lower() == "torch" and (req.marker is None or req.marker.evaluate(MARKERS)):
            return {"torch": str(req.specifier) or None, "declared": text, "source": meta.source}
    return {"torch": None, "declared": None, "source": meta.source}


ROWS: Mapping[str, Callable[[Metadata], dict[str, str | None]]] = {
    "torch": torch_row,
    "torchvision": companion_row,
    "torchaudio": companion_row,
}


def table(
    fetch: Fetch, ranged: RangeFetch, index: str, name: str, old: Mapping[str, Any]
) -> dict[str, dict[str, str | None]]:
    """Every release's row; an unreadable release keeps its old row, a new one is refused."""
    found = releases(fetch, index, name)

    def one(item: tuple[Version, list[Wheel]]) -> Metadata | None:
        version, wheels = item
        try:
            return read_metadata(fetch, ranged, index, name, version, wheels)
        except MetadataError as exc:
            print(f"{name} {version}: {exc}", file=sys.stderr)
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        metas = list(pool.map(one, found.items()))
    rows: dict[str, dict[str, str | None]] = {}
    missing = []
    for version, meta in zip(found, metas, strict=True):
        key, before = str(version), old.get(str(version))
        row = ROWS[name](meta) if meta is not None else None
        if row is None or (before is not None and _same(row, before)):
            if before is None:
                missing.append(key)
                continue
            if row is None:
                print(f"{name} {version}: unreadable, the committed row kept", file=sys.stderr)
            row = dict(before)  # the same facts, perhaps read from another file: no change
        rows[key] = row
    if missing:
        raise Refused(f"{name}: no metadata could be read for {', '.join(missing)}")
    return rows


def _same(row: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """The same facts (a row read from another file of the release is not a change)."""
    return old is not None and {k: v for k, v in row.items() if k != "source"} == {
        k: v for k, v in old.items() if k != "source"
    }


# ---------------------------------------------------------------- the file


HEADER = """\
# Generated by scripts/gen_torch_tables.py from PyPI's metadata: do not edit by hand.
# .github/workflows/torch-tables.yml re-runs it weekly and opens a pull request with the change.
#
# torch_cuda: torch release -> the CUDA of PyPI's default Linux x86_64 wheel (no +cuXYZ label),
#   as its Requires-Dist declares it (`declared`): nvidia-cuda-runtime-cu12==X.Y.Z up to 2.10,
#   cuda-toolkit[...]==X.Y.Z from 2.11. `builder check` reads it when a torch's metadata is
#   not at hand, and for the newest torch that runs on a base's CUDA.
# torchvision, torchaudio: release -> the torch its Requires-Dist asks for (`torch`, a PEP 440
#   specifier; null: it names no torch).
# `source`: the file (or JSON API page) each row's Requires-Dist was read from.
"""


def render(
    tables: Mapping[str, Mapping[str, Mapping[str, str | None]]], date: str, index: str
) -> str:
    """The YAML file: one flow mapping per row, so a weekly diff shows one line per release."""
    lines = [HEADER, f"generated: {json.dumps(date)}", f"index: {json.dumps(index)}"]
    for key, rows in tables.items():
        lines.append(f"{key}:")
        for version, row in rows.items():
            fields = ", ".join(f"{k}: {json.dumps(v)}" for k, v in row.items())
            lines.append(f"  {json.dumps(version)}: {{{fields}}}")
    return "\n".join(lines) + "\n"


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def refuse_fewer(old: Mapping[str, Any], new: Mapping[str, Mapping[str, Any]]) -> None:
    shrunk = [
        f"{key}: {len(new[key])} rows, the committed table has {len(old.get(key) or {})}"
        for key in new
        if len(new[key]) < len(old.get(key) or {})
    ]
    if shrunk:
        raise Refused("fewer rows than the committed tables: " + "; ".join(shrunk))


def generate(
    fetch: Fetch, ranged: RangeFetch, output: Path, index: str, allow_fewer: bool, today: str
) -> bool:
    """Write the tables if a row changed; True when the file was written."""
    old = load(output)
    new = {
        key: table(fetch, ranged, index, name, old.get(key) or {}) for name, key in TABLES.items()
    }
    if not allow_fewer:
        refuse_fewer(old, new)
    if all((old.get(key) or {}) == rows for key, rows in new.items()):
        return False
    write_atomic(output, render(new, today, index))
    return True


def summary(output: Path) -> Iterable[str]:
    data = load(output)
    for key in TABLES.values():
        rows = data.get(key) or {}
        newest = list(rows)[-1] if rows else None
        yield f"{key}: {len(rows)} rows, newest {newest} {rows.get(newest, '')}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    parser.add_argument("--index", default=INDEX, help="PyPI's base URL (default %(default)s)")
    parser.add_argument("--ca-bundle", type=Path, help="CA bundle for a TLS-intercepting proxy")
    parser.add_argument("--allow-fewer-rows", action="store_true")
    args = parser.parse_args(argv)
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    try:
        written = generate(
            urllib_fetch(args.ca_bundle, timeout=60),
            urllib_ranged(args.ca_bundle, timeout=60),
            args.output,
            args.index.rstrip("/"),
            args.allow_fewer_rows,
            today,
        )
    except (Refused, MetadataError) as exc:
        print(f"gen_torch_tables: {exc}", file=sys.stderr)
        return 1
    print(f"{args.output}: {'written' if written else 'unchanged'}", file=sys.stderr)
    for line in summary(args.output):
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
