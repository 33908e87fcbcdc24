"""`app.git`: a repository's tree at one commit, cloned by the host into a cache by commit.

Plumbing below render. The build context gets a plain copy of the tree (no `.git`), so the
build needs neither git nor the network for it. A commit is fetched once per cache: the
clone is made in a temporary directory beside its place and renamed there, and since a
rename onto an existing directory fails, the first of two concurrent clones wins and the
other is dropped; a directory in the cache is always a whole tree. Fetching tries
`--depth 1` by commit (file:// and most hosts allow it), then a full fetch of every ref.
Submodules and Git LFS files are not fetched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from builder.errors import InputError
from builder.files import ensure_dir
from builder.log import Log
from builder.proc import run

# Never ask for a password on a terminal: a render runs unattended, often in threads.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}


def cached_tree(
    url: str, rev: str, cache: Path, git: str | None, environ: Mapping[str, str], log: Log
) -> Path:
    """The directory holding `url`'s tree at commit `rev` (40 hex digits, checked by the
    matrix reader), cloned into `cache` if missing."""
    target = cache / rev
    if target.is_dir():
        return target
    if git is None:
        raise InputError(
            f"app.git: git not found on PATH (needed once to clone {url} at {rev})",
            hint="install git, or copy the tree into the cache directory "
            f"{target} (BUILDER_GIT_CACHE)",
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{rev}.", dir=ensure_dir(cache)))
    try:
        _clone(url, rev, staging, git, {**environ, **GIT_ENV}, log)
        shutil.rmtree(staging / ".git")
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # not a concurrent clone that won: a real error
                raise
    except OSError as exc:
        raise InputError(f"{target}: cannot write the clone: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _clone(url: str, rev: str, into: Path, git: str, env: Mapping[str, str], log: Log) -> None:
    def git_run(*args: str) -> tuple[bool, str]:
        argv = [git, "-C", str(into), *args]
        log.command(argv)
        done = run(argv, env=env)
        return done.returncode == 0, (done.stderr or done.stdout).strip()

    log.info(f"app.git: cloning {url} at {rev} into {into.parent}")
    git_run("init", "--quiet")
    fetched, why = git_run("fetch", "--quiet", "--no-tags", "--depth", "1", url, rev)
    if not fetched:  # the host refuses a fetch by commit: take every ref
        fetched, why = git_run(
            "fetch", "--quiet", "--no-tags", url, "+refs/*:refs/builder-fetched/*"
        )
    if not fetched:
        raise InputError(
            f"app.git: cannot fetch {url}: {_tail(why)}",
            hint="check app.git.url (and that this host can reach it)",
        )
    found, why = git_run(
        "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", f"{rev}^{{commit}}"
    )
    if not found:
        raise InputError(
            f"app.git: {url} has no commit {rev}: {_tail(why)}",
            hint="check app.git.rev (`git ls-remote URL` lists the repository's refs)",
        )


def _tail(text: str, lines: int = 3) -> str:
    return " / ".join(text.splitlines()[-lines:]) or "no output"
