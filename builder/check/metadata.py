"""Package metadata from a cell's indexes, cached on disk, for `builder check`.

Two documents per package, each trimmed to the fields `check` reads and cached under
`<cache>/<index-slug>/`, keyed by index URL and package:

- the project page (PEP 691 JSON, or PEP 503 HTML from indexes that only serve that): each
  file's name, Requires-Python and yanked flag in `<name>.json`, the wheels' URLs apart in
  `<name>.urls.json` (read only to fetch core metadata); fetched again once older than
  `max_age` seconds;
- a release's core metadata (PEP 658 `<wheel-url>.metadata`): its Requires-Dist, in
  `<name>/<version>.json`. A release never changes, so a found one is kept for good.

Cache files are written atomically (temp file + rename), so parallel checks never read half a
file. With no `fetch` (offline), only the cache answers, whatever its age. Recorded cache
directories double as a fake index for tests: the same interface reads them.
"""

from __future__ import annotations

import email.parser
import email.policy
import html.parser
import json
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from builder import __version__
from builder.check.health import IndexHealth
from builder.errors import InputError
from builder.files import write_atomic

PYPI = "https://pypi.org/simple/"
DEFAULT_MAX_AGE = 24 * 3600.0
_JSON = "application/vnd.pypi.simple.v1+json"
_SDIST_SUFFIXES = (".tar.gz", ".zip")
_ACCEPT = f"{_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"

# (url, accept) -> (body, content type), or None when the index has no such document (404).
Fetch = Callable[[str, str], tuple[bytes, str] | None]


class MetadataError(Exception):
    """The index could not be reached or answered with something unreadable."""


@dataclass(frozen=True)
class File:
    """One distribution file of a project, as its index lists it."""

    filename: str
    requires_python: str | None = None
    yanked: bool = False

    @property
    def raw_version(self) -> str | None:
        """The version as the file name spells it: cheap, for grouping thousands of files."""
        if self.filename.endswith(".whl"):
            parts = self.filename.split("-")
            return parts[1] if len(parts) >= 5 else None
        for suffix in _SDIST_SUFFIXES:
            if self.filename.endswith(suffix):
                stem = self.filename[: -len(suffix)]
                return stem.rsplit("-", 1)[1] if "-" in stem else None
        return None  # eggs, installers: never chosen by pip or uv

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @cached_property
    def tags(self) -> frozenset[Tag]:
        if not self.is_wheel:
            return frozenset()
        try:
            return parse_wheel_filename(self.filename)[3]
        except InvalidWheelFilename:
            return frozenset()

    @property
    def is_pure(self) -> bool:
        return self.is_wheel and all(t.platform == "any" for t in self.tags)

    def supports_python(self, python: str) -> bool:
        if not self.requires_python:
            return True
        try:
            return SpecifierSet(self.requires_python).contains(python, prereleases=True)
        except InvalidSpecifier:
            return True  # an unreadable Requires-Python is ignored by installers too

    def to_json(self) -> list[str | int | None]:
        return [self.filename, self.requires_python, int(self.yanked)]


@dataclass(frozen=True)
class Project:
    """A project's files on one index, grouped by release."""

    name: str
    files: tuple[File, ...]

    @cached_property
    def releases(self) -> Mapping[Version, tuple[File, ...]]:
        by_text: dict[str, list[File]] = {}
        for f in self.files:
            raw = f.raw_version
            if raw is not None:
                by_text.setdefault(raw, []).append(f)
        out: dict[Version, list[File]] = {}
        for raw, files in by_text.items():
            try:
                out.setdefault(Version(raw), []).extend(files)
            except InvalidVersion:
                continue
        return {v: tuple(fs) for v, fs in sorted(out.items())}

    def files_for(self, version: Version) -> tuple[File, ...]:
        return self.releases.get(version, ())

    def highest(self, specifier: SpecifierSet, python: str) -> Version | None:
        """The highest final release in `specifier` with a non-yanked file for `python`."""
        for version in reversed(list(self.releases)):
            if version.is_prerelease or version not in specifier:
                continue
            if any(not f.yanked and f.supports_python(python) for f in self.files_for(version)):
                return version
        return None


class Metadata(Protocol):
    """What `check` asks of an index; `None` means unknown (absent, offline or unreadable)."""

    def project(self, name: str) -> Project | None: ...

    def requires_dist(self, name: str, version: Version) -> tuple[str, ...] | None: ...


# ---------------------------------------------------------------- one index, cached


def read_cached(path: Path, max_age: float | None) -> Any:
    """A JSON cache file's content; None when it is missing, unreadable or older than `max_age`
    seconds (None: any age)."""
    try:
        if max_age is not None and time.time() - path.stat().st_mtime > max_age:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def slug(url: str) -> str:
    """A directory name for an index URL: `https://pypi.org/simple/` -> `pypi.org-simple`."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", url.split("://", 1)[-1]).strip("-") or "index"


@dataclass
class IndexCache:
    """One index (PEP 691/503 simple API), read through a disk cache."""

    url: str
    cache_dir: Path
    fetch: Fetch | None = None  # None: offline, the cache only
    max_age: float = DEFAULT_MAX_AGE
    errors: list[str] = field(default_factory=list, repr=False)  # what could not be fetched
    health: IndexHealth | None = field(default=None, repr=False)  # the run's table, if any
    _memo: dict[str, Project | None] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _asking: dict[str, threading.Lock] = field(default_factory=dict, repr=False)

    @property
    def online(self) -> bool:
        """Fetching is allowed, the run's probe found the index answering (asked only once a
        fetch is needed), and fetches have not failed so often that the index looks down."""
        if self.fetch is None or len(self.errors) >= 3:
            return False
        return self.health is None or self.health.problem(self.url) is None

    @property
    def root(self) -> Path:
        return self.cache_dir / slug(self.url)

    def answered(self, name: str) -> bool:
        """Whether this run already has the project's answer (asking again costs nothing)."""
        with self._lock:
            return canonicalize_name(name) in self._memo

    def project(self, name: str) -> Project | None:
        key = canonicalize_name(name)
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        with self._one_at_a_time(key):  # cells share packages: one fetch each, not one a cell
            with self._lock:
                if key in self._memo:
                    return self._memo[key]
            data = self._cached(self.root / f"{key}.json", self.max_age)
            if data is None and self.online:
                data = self._guarded(self._fetch_project, key)
            project = _project(key, data) if data else None
            with self._lock:
                self._memo[key] = project
        return project

    def _one_at_a_time(self, key: str) -> threading.Lock:
        """The lock that makes threads asking for the same document wait for one answer."""
        with self._lock:
            return self._asking.setdefault(key, threading.Lock())

    def requires_dist(self, name: str, version: Version) -> tuple[str, ...] | None:
        key = canonicalize_name(name)
        with self._one_at_a_time(f"{key}=={version}"):
            return self._requires_dist(key, version)

    def _requires_dist(self, key: str, version: Version) -> tuple[str, ...] | None:
        path = self.root / key / f"{version}.json"
        data = self._cached(path, None)
        if data is not None and data.get("requires_dist") is None:
            data = self._cached(path, self.max_age)  # "none published" is asked again later
        if data is None and self.online:
            fresh = self._guarded(self._fetch_core_metadata, key, version)
            if self.online:  # an answer, even "none published", not a network failure
                data = fresh or {"requires_dist": None}
                self._store(path, json.dumps(data))
        found = data.get("requires_dist") if data else None
        return tuple(found) if isinstance(found, list) else None

    def _guarded(
        self,
        fetch: Callable[..., dict[str, Any] | None],
        *args: Any,
    ) -> dict[str, Any] | None:
        try:
            return fetch(*args)
        except MetadataError as exc:
            with self._lock:
                self.errors.append(str(exc))
            return None

    def _store(self, path: Path, text: str) -> None:
        """Cache an answer; a cache that cannot be written only costs a fetch next time."""
        try:
            write_atomic(path, text)
        except InputError as exc:
            with self._lock:
                self.errors.append(f"metadata cache not written: {exc.message}")

    def _cached(self, path: Path, max_age: float | None) -> dict[str, Any] | None:
        """A cache file's content; stale ones count as missing unless offline."""
        data = read_cached(path, max_age if self.fetch is not None else None)
        return data if isinstance(data, dict) else None

    def _fetch_project(self, key: str) -> dict[str, Any]:
        """Fetch a project page and cache it: the files in `<name>.json`, and the wheels' URLs
        apart in `<name>.urls.json` (only core-metadata fetches need them)."""
        assert self.fetch is not None
        page = urllib.parse.urljoin(self.url.rstrip("/") + "/", f"{key}/")
        answer = self.fetch(page, _ACCEPT)
        if answer is None:
            data: dict[str, Any] = {"name": key, "missing": True}  # no asking again per check
        else:
            body, content_type = answer
            pairs = _parse_json(body, page) if "json" in content_type else _parse_html(body, page)
            urls = {f.filename: url for f, url in pairs if f.is_wheel}
            self._store(self.root / f"{key}.urls.json", json.dumps(urls, separators=(",", ":")))
            data = {"name": key, "files": [f.to_json() for f, _ in pairs]}
        self._store(self.root / f"{key}.json", json.dumps(data, separators=(",", ":")))
        return data

    def _fetch_core_metadata(self, key: str, version: Version) -> dict[str, Any] | None:
        assert self.fetch is not None
        project = self.project(key)
        urls = self._cached(self.root / f"{key}.urls.json", None) or {}
        wheels = [f for f in (project.files_for(version) if project else ()) if f.filename in urls]
        wheels.sort(key=lambda f: not f.is_pure)  # pure wheels carry the plainest metadata
        for wheel in wheels[:3]:
            answer = self.fetch(f"{urls[wheel.filename]}.metadata", "*/*")
            if answer is not None:
                return _core_metadata(answer[0])
        return None


def _project(key: str, data: Mapping[str, Any]) -> Project | None:
    if data.get("missing"):
        return None
    files = tuple(
        File(filename=f[0], requires_python=f[1], yanked=bool(f[2])) for f in data.get("files", ())
    )
    return Project(name=key, files=files)


def _parse_json(body: bytes, page: str) -> list[tuple[File, str]]:
    """PEP 691: `files` with `filename`, `url`, `requires-python` and `yanked`."""
    try:
        entries = json.loads(body)["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MetadataError(f"{page}: not a PEP 691 project page ({exc})") from None
    return [
        (
            File(
                filename=e["filename"],
                requires_python=e.get("requires-python") or None,
                yanked=bool(e.get("yanked")),
            ),
            urllib.parse.urljoin(page, e["url"]),
        )
        for e in entries
    ]


class _Anchors(html.parser.HTMLParser):
    """PEP 503 anchors: href, text, data-requires-python, data-yanked."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.page = page
        self.files: list[tuple[File, str]] = []
        self._attrs: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._attrs = dict(attrs)

    def handle_data(self, data: str) -> None:
        if self._attrs is not None and data.strip():
            href = (self._attrs.get("href") or "").split("#", 1)[0]
            self.files.append(
                (
                    File(
                        filename=data.strip(),
                        requires_python=self._attrs.get("data-requires-python"),
                        yanked="data-yanked" in self._attrs,
                    ),
                    urllib.parse.urljoin(self.page, href),
                )
            )
            self._attrs = None


def _parse_html(body: bytes, page: str) -> list[tuple[File, str]]:
    parser = _Anchors(page)
    parser.feed(body.decode("utf-8", "replace"))
    return parser.files


def _core_metadata(body: bytes) -> dict[str, Any]:
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(body)
    return {
        "requires_dist": [str(r) for r in message.get_all("Requires-Dist") or []],
        "requires_python": message.get("Requires-Python"),
    }


# ---------------------------------------------------------------- local wheelhouses


@dataclass(frozen=True)
class Wheelhouse:
    """`--find-links` directories: the files they hold, named like on an index."""

    paths: tuple[Path, ...]

    @cached_property
    def _by_project(self) -> Mapping[str, tuple[File, ...]]:
        out: dict[str, list[File]] = {}
        for path in (p for d in self.paths for p in sorted(d.iterdir()) if p.is_file()):
            key = _file_project(path.name)
            if key is not None:
                out.setdefault(key, []).append(File(filename=path.name))
        return {k: tuple(v) for k, v in out.items()}

    def project(self, name: str) -> Project | None:
        key = canonicalize_name(name)
        files = self._by_project.get(key)
        return Project(name=key, files=files) if files else None

    def requires_dist(self, name: str, version: Version) -> tuple[str, ...] | None:
        return None  # only needed for transformers, which nobody keeps in a wheelhouse


def _file_project(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[0])
        return str(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


# ---------------------------------------------------------------- a cell's sources


@dataclass(frozen=True)
class Sources:
    """A cell's indexes in uv's default order (`first-index`): the first index that has a
    project answers for it; files in the cell's wheelhouses (`--find-links`) are added to it."""

    indexes: tuple[Metadata, ...]
    wheelhouse: Wheelhouse | None = None

    def answered(self, name: str) -> bool:
        """Whether this run already has the answer for `name` from the index that owns it."""
        for index in self.indexes:
            if not isinstance(index, IndexCache) or not index.answered(name):
                return False
            if index.project(name) is not None:
                return True
        return True

    def _owner(self, name: str) -> tuple[Metadata, Project] | None:
        for index in self.indexes:
            project = index.project(name)
            if project is not None:
                return index, project
        return None

    def project(self, name: str) -> Project | None:
        found = self._owner(name)
        local = self.wheelhouse.project(name) if self.wheelhouse else None
        if found and local:
            return Project(name=found[1].name, files=found[1].files + local.files)
        return found[1] if found else local

    def requires_dist(self, name: str, version: Version) -> tuple[str, ...] | None:
        found = self._owner(name)
        return found[0].requires_dist(name, version) if found else None

    @property
    def errors(self) -> list[str]:
        """What could not be fetched, from every index that keeps such a list."""
        return [e for index in self.indexes for e in getattr(index, "errors", ())]


@dataclass
class IndexPool:
    """The indexes of one run, shared by its cells (so each page is read once per run)."""

    cache_dir: Path
    fetch: Fetch | None = None
    max_age: float = DEFAULT_MAX_AGE
    health: IndexHealth | None = None  # which indexes answer, probed once per run
    _caches: dict[str, IndexCache] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def index(self, url: str) -> IndexCache:
        with self._lock:
            if url not in self._caches:
                self._caches[url] = IndexCache(
                    url, self.cache_dir, self.fetch, self.max_age, health=self.health
                )
            return self._caches[url]

    def for_indexes(
        self,
        index_url: str | None,
        extra_index_urls: Sequence[str],
        wheelhouse: Sequence[Path] = (),
    ) -> Sources:
        """A cell's sources: its extra index URLs, then its index URL, plus its wheelhouses."""
        indexes = tuple(self.index(url) for url in (*extra_index_urls, index_url or PYPI))
        return Sources(indexes, Wheelhouse(tuple(wheelhouse)) if wheelhouse else None)

    @property
    def errors(self) -> list[str]:
        return [e for cache in list(self._caches.values()) for e in cache.errors]


def prefetch(source: Metadata, names: Iterable[str], workers: int = 16) -> None:
    """Warm the cache for many projects at once (the index is slow, not busy). Projects the
    run already read get no thread: most cells of a matrix share most of their packages."""
    from concurrent.futures import ThreadPoolExecutor

    answered = getattr(source, "answered", None)
    todo = [n for n in sorted(set(names)) if answered is None or not answered(n)]
    if len(todo) < 2:
        for name in todo:
            source.project(name)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
        list(pool.map(source.project, todo))


# ---------------------------------------------------------------- the network


def urllib_fetch(cafile: Path | None, timeout: float = 30.0, attempts: int = 3) -> Fetch:
    """A `Fetch` over urllib with an explicit CA bundle (TLS-intercepting proxies need it).
    Transient failures (connection errors, 5xx) are tried again, `attempts` times in all."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    agent = f"builder/{__version__} (check)"

    def once(url: str, accept: str) -> tuple[bytes, str] | None:
        request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": agent})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return response.read(), response.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            if exc.code in (403, 404, 410):
                return None
            raise MetadataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise MetadataError(f"{url}: {getattr(exc, 'reason', exc)}") from None

    def fetch(url: str, accept: str) -> tuple[bytes, str] | None:
        for attempt in range(attempts):
            try:
                return once(url, accept)
            except MetadataError:
                if attempt == attempts - 1:
                    raise
        return None

    return fetch
