"""Settings: everything builder takes from its environment, read once by the CLI and passed down.

Nothing below the CLI reads `os.environ`, `sys.argv` or `Path.home()`. External tools are found
here, once per run, before any worker thread starts (PATH is the environment's, so
`.venv/bin/builder` works without activating its venv). Variables (README lists them too):

| variable | what |
| --- | --- |
| `BUILDER_CACHE_DIR` | root of builder's caches (default `$XDG_CACHE_HOME/builder`, `~/.cache/builder`) |
| `BUILDER_METADATA_CACHE` | index metadata and uv resolutions (`check`, `validate`); `ROOT/metadata` |
| `BUILDER_VENV_CACHE` | the venv engine's per-lock virtual environments; `ROOT/venvs` |
| `BUILDER_GIT_CACHE` | `app.git` clones, one directory per commit; `ROOT/git` |
| `BUILDER_JIT_CACHE` | numba's cache for the media probe, shared by its containers; `ROOT/jit` |
| `BUILDER_WHEEL_CACHE` | builder's own copies of wheelhouse files, which build contexts link; `ROOT/wheels` |
| `BUILDER_RESULT_CACHE` | verdicts of `validate` (default `.builder-cache`; `--cache-dir` overrides) |
| `BUILDER_CA_BUNDLE` | extra CA bundle for TLS-intercepting proxies (the matrix's `indexes.ca_bundle` wins) |
| `BUILDER_NETRC` | netrc file with index credentials (uv's NETRC; a BuildKit secret, never a layer) |
| `HF_TOKEN` | Hugging Face token (a BuildKit secret, never a layer) |
| `GITHUB_STEP_SUMMARY` | file the Markdown report is appended to |
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import InputError


@dataclass(frozen=True, kw_only=True)
class Settings:
    """One run's settings. `environ` is what subprocesses get; the rest is already decided."""

    environ: Mapping[str, str] = field(default_factory=dict, repr=False)  # holds tokens
    argv: tuple[str, ...] = ()
    debug: bool = False
    metadata_cache: Path = Path(".builder-cache/metadata")
    venv_cache: Path = Path(".builder-cache/venvs")
    git_cache: Path = Path(".builder-cache/git")
    jit_cache: Path = Path(".builder-cache/jit")  # numba's cache for the media probe
    wheel_cache: Path | None = None  # copies of wheelhouse files (None: beside the contexts)
    result_cache: Path = Path(".builder-cache")
    ca_bundle: Path | None = None
    netrc: Path | None = None
    hf_token: str | None = field(default=None, repr=False)
    step_summary: Path | None = None
    uv_binary: str | None = "uv"
    nvidia_smi: str | None = None
    unshare: str | None = None
    git: str | None = None

    @property
    def uv(self) -> str:
        if self.uv_binary is None:
            raise InputError(
                "uv not found: not on PATH, and the `uv` package builder depends on has no binary",
                hint="reinstall builder (`pip install builder`) or put uv on PATH",
            )
        return self.uv_binary

    def ca_for(self, configured: Path | None) -> Path | None:
        """The one CA policy: the matrix's `indexes.ca_bundle`, else `BUILDER_CA_BUNDLE`."""
        return configured or _existing(self.ca_bundle, "BUILDER_CA_BUNDLE")

    def secret_files(self, configured_ca: Path | None) -> dict[str, Path]:
        """The secret files a build may mount, by BuildKit secret id (the token is not a file)."""
        files = {
            "cacert": self.ca_for(configured_ca),
            "netrc": _existing(self.netrc, "BUILDER_NETRC"),
        }
        return {name: path for name, path in files.items() if path is not None}


def _existing(path: Path | None, variable: str) -> Path | None:
    """A file a variable names, checked when it is used (so `--help` never trips on it)."""
    if path is not None and not path.is_file():
        raise InputError(f"${variable}={path}: not a file", hint=f"unset {variable} or fix it")
    return path


def find_uv(path: str) -> str | None:
    """uv on PATH, else the binary the `uv` wheel ships (found once: its lookup is not
    thread-safe on Python 3.11)."""
    found = shutil.which("uv", path=path)
    if found:
        return found
    from uv import find_uv_bin

    try:
        return str(find_uv_bin())
    except FileNotFoundError:
        return None


def from_environ(
    environ: Mapping[str, str], argv: Sequence[str] = (), *, debug: bool = False
) -> Settings:
    """Read the settings from an environment (the CLI passes `os.environ`)."""
    home = Path(environ.get("HOME") or Path.home())
    xdg = environ.get("XDG_CACHE_HOME")
    root = Path(
        environ.get("BUILDER_CACHE_DIR") or (Path(xdg) if xdg else home / ".cache") / "builder"
    )
    path = environ.get("PATH", os.defpath)

    def variable(name: str) -> Path | None:
        return Path(environ[name]) if environ.get(name) else None

    return Settings(
        environ=dict(environ),
        argv=tuple(argv),
        debug=debug,
        metadata_cache=variable("BUILDER_METADATA_CACHE") or root / "metadata",
        venv_cache=variable("BUILDER_VENV_CACHE") or root / "venvs",
        git_cache=variable("BUILDER_GIT_CACHE") or root / "git",
        jit_cache=variable("BUILDER_JIT_CACHE") or root / "jit",
        wheel_cache=variable("BUILDER_WHEEL_CACHE") or root / "wheels",
        result_cache=variable("BUILDER_RESULT_CACHE") or Path(".builder-cache"),
        ca_bundle=variable("BUILDER_CA_BUNDLE"),
        netrc=variable("BUILDER_NETRC"),
        hf_token=environ.get("HF_TOKEN") or None,
        step_summary=variable("GITHUB_STEP_SUMMARY"),
        uv_binary=find_uv(path),
        nvidia_smi=shutil.which("nvidia-smi", path=path),
        unshare=shutil.which("unshare", path=path),
        git=shutil.which("git", path=path),
    )
