"""The container engine: one interface (build, run, inspect, push, remove), Docker behind it.

Builds go through a BuildKit-capable client: `docker buildx build` where buildx exists, else
`DOCKER_BUILDKIT=1 docker build` with a client that has BuildKit built in (< 23). Containers go
through the Docker SDK and are always removed, also on error and Ctrl-C.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from builder.errors import EngineUnavailable
from builder.log import Log
from builder.settings import Settings

LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class BuildOutcome:
    ok: bool
    image_id: str | None
    seconds: float
    log_tail: str
    cached_steps: int = 0
    total_steps: int = 0


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float
    oom_killed: bool = False
    timed_out: bool = False


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


class EngineFailure(RuntimeError):
    """The engine refused or failed an operation on a container (not the probe's own doing)."""


class Engine(Protocol):
    name: str

    def build(
        self,
        context: Path,
        tag: str,
        secrets: Mapping[str, Path],
        log_path: Path,
        no_cache: bool = False,
    ) -> BuildOutcome: ...

    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        mounts: Sequence[Mount] = (),
        memory: str | None = None,
        timeout: float = 600,
        network: bool = False,
        gpu: bool = False,
        environment: Mapping[str, str] | None = None,
        entrypoint: Sequence[str] | None = None,
    ) -> RunOutcome:
        """Run `argv` (the image's cmd replaced) in a new container of `image`, with no
        network unless asked; `entrypoint` replaces the image's. The image's user, workdir
        and environment stay, `environment` on top. Removed afterwards, also on error."""
        ...

    def inspect(self, image: str, *, pull: bool = False) -> dict[str, Any]:
        """The image's attributes; with `pull`, pulled first when it is not here."""
        ...

    def push(self, tag: str, log_path: Path) -> str: ...


def _clients(environ: Mapping[str, str]) -> list[str]:
    """Every `docker` binary on PATH, in PATH order, then Debian's /usr/bin/docker."""
    seen: list[str] = []
    for folder in [*environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        candidate = os.path.join(folder, "docker")
        real = os.path.realpath(candidate)
        if os.access(candidate, os.X_OK) and real not in {os.path.realpath(s) for s in seen}:
            seen.append(candidate)
    return seen


def _ask(argv: list[str], env: Mapping[str, str]) -> str | None:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, env=dict(env), check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_build_client(environ: Mapping[str, str]) -> tuple[str, bool]:
    """(docker binary, has buildx). Raises EngineUnavailable when none can do BuildKit."""
    clients = _clients(environ)
    for client in clients:
        if _ask([client, "buildx", "version"], environ):
            return client, True
    for client in clients:
        version = _ask([client, "version", "--format", "{{.Client.Version}}"], environ) or ""
        major = re.match(r"(\d+)\.", version)
        if major and int(major[1]) < 23:
            return client, False
    raise EngineUnavailable(
        "no Docker client with BuildKit: none has the buildx plugin, and none is a 20.x/22.x "
        "client with BuildKit built in",
        hint="install docker-buildx (or Debian's docker.io) and start the engine",
    )


class DockerEngine:
    """Docker through its CLI (builds, pushes) and its SDK (containers, images)."""

    name = "docker"

    def __init__(self, settings: Settings, log: Log, *, builds: bool = True) -> None:
        """Connect to the engine; with `builds`, also find the BuildKit client now, once,
        before any worker thread needs it."""
        import docker

        self.environ = dict(settings.environ)
        self.log = log
        try:
            self.client = docker.from_env(environment=self.environ, timeout=600)
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise EngineUnavailable(
                f"cannot reach the Docker engine: {exc}",
                hint="start it (dockerd, Docker Desktop) or set DOCKER_HOST",
            ) from None
        self._build_client = find_build_client(self.environ) if builds else None

    def version(self) -> str:
        return str(self.client.version().get("Version", "unknown"))

    def build(
        self,
        context: Path,
        tag: str,
        secrets: Mapping[str, Path],
        log_path: Path,
        no_cache: bool = False,
    ) -> BuildOutcome:
        if self._build_client is None:
            raise EngineUnavailable("this engine was opened without a build client")
        client, buildx = self._build_client
        argv = [client, "buildx", "build", "--load"] if buildx else [client, "build"]
        argv += ["--progress=plain", "--tag", tag, "--file", str(context / "Dockerfile")]
        if no_cache:
            argv.append("--no-cache")
        for name, source in sorted(secrets.items()):
            argv += ["--secret", f"id={name},src={source}"]
        argv.append(str(context))
        env = {**self.environ, "DOCKER_BUILDKIT": "1"}
        self.log.command(argv)
        start = time.monotonic()
        code = _run_logged(argv, env, log_path)
        seconds = time.monotonic() - start
        text = log_path.read_text(errors="replace")
        steps = set(re.findall(r"^#(\d+) \[[^\]]+\] (?:RUN|COPY)", text, re.M))
        cached = set(re.findall(r"^#(\d+) CACHED", text, re.M))
        image_id = self.inspect(tag)["Id"] if code == 0 else None
        tail = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
        return BuildOutcome(code == 0, image_id, seconds, tail, len(cached & steps), len(steps))

    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        mounts: Sequence[Mount] = (),
        memory: str | None = None,
        timeout: float = 600,
        network: bool = False,
        gpu: bool = False,
        environment: Mapping[str, str] | None = None,
        entrypoint: Sequence[str] | None = None,
    ) -> RunOutcome:
        import docker
        from requests.exceptions import RequestException

        try:
            return self._run(
                image, argv, mounts, memory, timeout, network, gpu, environment, entrypoint
            )
        except (docker.errors.DockerException, RequestException) as exc:  # not the probe's doing
            raise EngineFailure(f"{type(exc).__name__}: {exc}") from None

    def _run(
        self,
        image: str,
        argv: Sequence[str],
        mounts: Sequence[Mount],
        memory: str | None,
        timeout: float,
        network: bool,
        gpu: bool,
        environment: Mapping[str, str] | None,
        entrypoint: Sequence[str] | None = None,
    ) -> RunOutcome:
        import docker
        from requests.exceptions import ConnectionError, ReadTimeout

        requests = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu else []
        volumes = {
            str(m.source.resolve()): {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
            for m in mounts
        }
        start = time.monotonic()
        container = self.client.containers.create(
            image,
            list(argv),
            detach=True,
            volumes=volumes,
            mem_limit=memory,
            memswap_limit=memory,
            network_mode=None if network else "none",
            device_requests=requests,
            environment=dict(environment or {}),
            entrypoint=None if entrypoint is None else list(entrypoint),
            labels={"io.github.builder.probe": "1"},
        )
        try:
            container.start()
            timed_out = False
            try:
                status = container.wait(timeout=timeout)
                code: int | None = int(status.get("StatusCode", -1))
            except (ReadTimeout, ConnectionError):  # how the SDK says the wait timed out
                container.reload()  # raises if the engine itself is gone
                if container.status != "running":
                    raise
                container.kill()
                timed_out, code = True, None
            container.reload()
            state = container.attrs["State"]
            stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
            stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
            return RunOutcome(
                code,
                stdout,
                stderr,
                time.monotonic() - start,
                bool(state.get("OOMKilled")),
                timed_out,
            )
        finally:
            container.remove(force=True)

    def inspect(self, image: str, *, pull: bool = False) -> dict[str, Any]:
        import docker

        try:
            attrs: dict[str, Any] = self.client.images.get(image).attrs
        except docker.errors.ImageNotFound:
            if not pull:
                raise
            self.log.info(f"pulling {image}")
            attrs = self.client.images.pull(image).attrs
        return attrs

    def push(self, tag: str, log_path: Path) -> str:
        if self._build_client is None:
            raise EngineUnavailable("this engine was opened without a build client")
        client = self._build_client[0]
        argv = [client, "push", tag]
        self.log.command(argv)
        if _run_logged(argv, self.environ, log_path, append=True) != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-5:])
            raise EngineFailure(f"docker push {tag} failed:\n{tail}")
        digests = self.inspect(tag).get("RepoDigests") or []
        repo = tag.rsplit(":", 1)[0]
        return next((d for d in digests if d.startswith(repo + "@")), digests[0] if digests else "")


def _run_logged(
    argv: list[str], env: Mapping[str, str], log_path: Path, append: bool = False
) -> int:
    """Run a command with its output going to a log file; Ctrl-C stops it before re-raising."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a" if append else "w") as handle:
        process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=dict(env))
        try:
            return process.wait()
        except BaseException:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
