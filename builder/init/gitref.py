"""`git ls-remote`: the commit a branch or tag names today, to pin a clone of a moving ref."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from builder.gitsource import GIT_ENV
from builder.init.finish import ResolveRef
from builder.proc import Cancelled, run

TIMEOUT = 20.0  # seconds: a host that does not answer by then is unreachable for init


def ls_remote(git: str | None, environ: Mapping[str, str], timeout: float = TIMEOUT) -> ResolveRef:
    """A resolver that asks the repository itself (never prompting for credentials)."""

    def resolve(url: str, ref: str | None) -> tuple[str | None, str]:
        if git is None:
            return None, "git not found on PATH"
        cancel = threading.Event()
        timer = threading.Timer(timeout, cancel.set)
        timer.start()
        try:
            done = run(
                [git, "ls-remote", url, ref or "HEAD"], env={**environ, **GIT_ENV}, cancel=cancel
            )
        except Cancelled:
            return None, f"git ls-remote did not answer in {timeout:.0f}s"
        except OSError as exc:
            return None, f"git ls-remote: {exc.strerror or exc}"
        finally:
            timer.cancel()
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            return None, (lines[-1] if lines else f"git ls-remote exited {done.returncode}").strip()
        return _pick(done.stdout, ref)

    return resolve


def _pick(output: str, ref: str | None) -> tuple[str | None, str]:
    """The commit for `ref` among ls-remote's lines: a peeled tag, a branch, a tag, HEAD."""
    refs = {}
    for line in output.splitlines():
        commit, _, name = line.partition("\t")
        refs[name.strip()] = commit.strip()
    wanted = ref or "HEAD"
    for name in (f"refs/tags/{wanted}^{{}}", f"refs/heads/{wanted}", f"refs/tags/{wanted}", wanted):
        if name in refs:
            return refs[name], ""
    return None, f"{wanted!r} is not a branch or tag of the repository"
