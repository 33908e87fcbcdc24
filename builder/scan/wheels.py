"""The import names each resolved distribution provides, read from its wheel's file list.

A wheel is a zip file whose central directory, at its end, lists every file: with HTTP range
requests only that directory is read (tens of kilobytes, a megabyte for torch), never the
wheel (gigabytes for torch and the nvidia-* libraries). The wheel is found on the project's
PEP 691 page; the answer, `names.wheel_modules` of the file list, is cached for good in
`<metadata cache>/modules/<name>/<version>.json` (a release's files never change). Offline,
only the cache answers; a distribution without a wheel (sdist only) or not reached is
unknown (None), and its imports are guessed by the caller.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder import __version__
from builder.check.metadata import (
    DEFAULT_MAX_AGE,
    PYPI,
    Fetch,
    MetadataError,
    read_cached,
    urllib_fetch,
)
from builder.errors import InputError
from builder.files import write_atomic
from builder.scan.names import wheel_modules

# (url, "bytes=A-B" or "bytes=-N") -> (body, Content-Range header), or None when the server
# does not answer ranges (it would send the whole file).
RangeFetch = Callable[[str, str], tuple[bytes, str] | None]
_PAGE_ACCEPT = "application/vnd.pypi.simple.v1+json"
_TAIL = 256 * 1024  # the first read from the end: the central directory of most wheels
_MIN_READ = 64 * 1024
_MAX_DIRECTORY = 64 * 1024 * 1024  # a central directory larger than this is not read


class ModuleIndex(Protocol):
    """dist -> the import names its wheel provides (None: unknown), for resolved pins."""

    def modules(self, pins: Mapping[str, str]) -> dict[str, tuple[str, ...] | None]: ...


@dataclass(frozen=True)
class WheelModules:
    """Wheel file lists from an index (PyPI by default), through a disk cache."""

    cache_dir: Path  # <metadata cache>/modules
    fetch: Fetch | None = None  # project pages; None: offline, the cache only
    ranged: RangeFetch | None = None
    index_url: str = PYPI
    max_age: float = DEFAULT_MAX_AGE  # for "no wheel" answers; found ones are kept for good
    workers: int = 16

    def modules(self, pins: Mapping[str, str]) -> dict[str, tuple[str, ...] | None]:
        names = sorted(pins)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            found = list(pool.map(lambda name: self.one(name, pins[name]), names))
        return dict(zip(names, found, strict=True))

    def one(self, name: str, version: str) -> tuple[str, ...] | None:
        key = canonicalize_name(name)
        path = self.cache_dir / key / f"{_safe(version)}.json"
        data = read_cached(path, None)
        if isinstance(data, dict) and isinstance(data.get("modules"), list):
            return tuple(str(m) for m in data["modules"])
        online = self.fetch is not None and self.ranged is not None
        if not online or (isinstance(data, dict) and read_cached(path, self.max_age)):
            return None  # offline, or "no wheel" said less than max_age ago
        try:
            answer = self._fetch(key, version)
        except MetadataError:
            return None  # the network: asked again next time
        _store(path, answer)
        modules = answer.get("modules")
        return tuple(modules) if isinstance(modules, list) else None

    def _fetch(self, key: str, version: str) -> dict[str, Any]:
        assert self.fetch is not None and self.ranged is not None
        page = urllib.parse.urljoin(self.index_url.rstrip("/") + "/", f"{key}/")
        answer = self.fetch(page, _PAGE_ACCEPT)
        wheels = _wheels(answer[0], page, version) if answer else []
        for filename, url in wheels[:2]:
            files = remote_namelist(url, self.ranged)
            if files is not None:
                return {"modules": list(wheel_modules(files)), "wheel": filename}
        return {"modules": None, "reason": "no wheel read" if wheels else "no wheel"}


def _safe(version: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+!_-]", "_", version)


def _store(path: Path, data: Mapping[str, Any]) -> None:
    with contextlib.suppress(InputError):  # an unwritable cache costs a fetch next time
        write_atomic(path, json.dumps(data, separators=(",", ":")))


def _wheels(body: bytes, page: str, version: str) -> list[tuple[str, str]]:
    """(filename, url) of the release's wheels, pure ones first, then the smallest."""
    try:
        files = json.loads(body)["files"]
        wanted = Version(version)
    except (ValueError, KeyError, TypeError, InvalidVersion):
        return []
    found = []
    for entry in files if isinstance(files, list) else ():
        filename = str(entry.get("filename", "")) if isinstance(entry, dict) else ""
        if not filename.endswith(".whl") or entry.get("yanked"):
            continue
        try:
            _, release, _, tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            continue
        if release == wanted:
            pure = all(t.platform == "any" for t in tags)
            url = urllib.parse.urljoin(page, str(entry.get("url", "")))
            found.append((not pure, int(entry.get("size") or 0), filename, url))
    return [(filename, url) for _, _, filename, url in sorted(found)]


def remote_namelist(url: str, ranged: RangeFetch) -> list[str] | None:
    """A remote zip file's member names, read with range requests; None when that fails."""
    try:
        with zipfile.ZipFile(_RemoteFile(url, ranged)) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, _NoRanges, OSError, EOFError, ValueError):
        return None


class _NoRanges(Exception):
    """The server does not answer range requests, or the directory is too large to read."""


class _RemoteFile(io.RawIOBase):
    """A seekable, read-only view of a remote file, fetched in ranges as it is read."""

    def __init__(self, url: str, ranged: RangeFetch) -> None:
        super().__init__()
        self.url, self.ranged = url, ranged
        answer = ranged(url, f"bytes=-{_TAIL}")
        if answer is None:
            raise _NoRanges(url)
        body, content_range = answer
        self.size = _total(content_range, len(body))
        self.chunks: list[tuple[int, bytes]] = [(self.size - len(body), body)]
        self.position = 0
        self.fetched = len(body)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        if end <= self.position:
            return b""
        data = self._bytes(self.position, end)
        self.position = end
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _bytes(self, start: int, end: int) -> bytes:
        for offset, chunk in self.chunks:
            if offset <= start and end <= offset + len(chunk):
                return chunk[start - offset : end - offset]
        low = max(0, min(start, end - _MIN_READ))
        if self.fetched + end - low > _MAX_DIRECTORY:
            raise _NoRanges(self.url)
        answer = self.ranged(self.url, f"bytes={low}-{end - 1}")
        if answer is None or len(answer[0]) != end - low:
            raise _NoRanges(self.url)
        self.chunks.append((low, answer[0]))
        self.fetched += end - low
        return answer[0][start - low : end - low]


def _total(content_range: str, fallback: int) -> int:
    match = re.search(r"/(\d+)\s*$", content_range or "")
    return int(match[1]) if match else fallback


def urllib_ranged(cafile: Path | None, timeout: float = 30.0, attempts: int = 3) -> RangeFetch:
    """A `RangeFetch` over urllib with an explicit CA bundle; a server that ignores the range
    (200 with the whole file) is not read. Failures are tried again, `attempts` times in all."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    agent = f"builder/{__version__} (scan)"

    def once(url: str, byte_range: str) -> tuple[bytes, str] | None:
        request = urllib.request.Request(url, headers={"Range": byte_range, "User-Agent": agent})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                if response.status != 206:
                    return None
                return response.read(), response.headers.get("Content-Range", "")
        except urllib.error.HTTPError as exc:
            raise MetadataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise MetadataError(f"{url}: {getattr(exc, 'reason', exc)}") from None

    def fetch(url: str, byte_range: str) -> tuple[bytes, str] | None:
        for attempt in range(attempts):
            try:
                return once(url, byte_range)
            except MetadataError:
                if attempt == attempts - 1:
                    raise
        return None

    return fetch


def wheel_index(cache_dir: Path, cafile: Path | None, offline: bool) -> WheelModules:
    """The real index: PyPI over urllib, or the cache alone when offline."""
    if offline:
        return WheelModules(cache_dir)
    return WheelModules(cache_dir, urllib_fetch(cafile), urllib_ranged(cafile))
