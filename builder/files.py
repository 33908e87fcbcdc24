"""Writing files and directories so that a reader never sees half of one.

Plumbing: every stage writes through here. A file is written to a temporary sibling (created
with mode 0666 so the umask applies, as for any other file the user makes) and renamed into
place; a directory is staged beside its target and swapped in. OS errors (a read-only
directory, a path under a file, a special file in the way) become `InputError`s (exit 2) that
name the path, and nothing is left behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from builder.errors import InputError


def _target(path: Path) -> Path:
    """Where writing `path` really goes: through symlinks, never over a device, FIFO, socket
    or directory (renaming over one would replace it)."""
    real = path.resolve() if path.is_symlink() else path
    try:
        mode = real.stat().st_mode
    except FileNotFoundError:
        return real
    except OSError as exc:
        raise _os_error(path, exc) from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: cannot write: it is a directory", hint="give a file path")
    if not stat.S_ISREG(mode):
        raise InputError(
            f"{path}: cannot write: not a regular file", hint="give a regular file path"
        )
    return real


def _os_error(path: Path, exc: OSError) -> InputError:
    return InputError(
        f"{path}: cannot write: {exc.strerror or exc}",
        hint="choose a writable location (check the directory's permissions)",
    )


def ensure_dir(path: Path) -> Path:
    """`path` as a writable directory (created if missing), checked before slow work starts."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: cannot write: not a directory", hint="give a directory path")
    try:
        _mkdirs(path)
    except OSError as exc:
        raise _os_error(path, exc) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise _os_error(path, PermissionError(13, "Permission denied"))
    return path


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write via a temp file in the same directory and rename: never half a file.

    The file gets the mode an ordinary `open(path, "w")` would (0666 less the umask).
    """
    shown, path = path, _target(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        _mkdirs(path.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(raw)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise _os_error(shown, exc) from None


def _mkdirs(path: Path) -> None:
    """mkdir -p, saying which part of the path is in the way."""
    for part in (*reversed(path.parents), path):
        if part.exists() and not part.is_dir():
            raise NotADirectoryError(20, f"{part} is not a directory")
    path.mkdir(parents=True, exist_ok=True)


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield an empty staging directory beside `target`; on success it replaces `target`
    (an old directory there is removed), on any error it is removed and `target` is untouched."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise InputError(f"{target}: cannot write: not a directory", hint="give a directory path")
    staging = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        _mkdirs(target.parent)
        os.mkdir(staging, 0o777)  # the umask applies, as to any directory the user makes
    except OSError as exc:
        raise _os_error(target, exc) from None
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise _os_error(target, exc) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_text(path: Path, what: str) -> str:
    """A user's text file, strictly UTF-8; every failure is an InputError naming the file."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{path}: cannot read {what}: not a regular file")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: cannot read {what}: not UTF-8 (byte {exc.start}: {exc.reason})"
        ) from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
