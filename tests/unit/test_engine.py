"""The engine's container runs: a timeout is a timeout, any other engine failure says what it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker.errors
import pytest
from requests.exceptions import ReadTimeout

from builder.engine import DockerEngine, EngineFailure
from builder.log import Log
from builder.probe import ImageTarget, run_probe


class FakeContainer:
    def __init__(self, wait_error: Exception, status: str = "running") -> None:
        self.id, self.status, self.wait_error, self.killed = "c1", status, wait_error, False
        self.attrs = {"State": {"OOMKilled": False}}

    def start(self) -> None: ...

    def wait(self, timeout: float) -> dict[str, int]:
        raise self.wait_error

    def reload(self) -> None: ...

    def kill(self) -> None:
        self.killed = True

    def logs(self, stdout: bool, stderr: bool) -> bytes:
        return b"\xff partial"

    def remove(self, force: bool) -> None: ...


class FakeClient:
    def __init__(self, container: FakeContainer) -> None:
        self.container = container
        self.containers = self
        self.api = self

    def create(self, *args: Any, **kwargs: Any) -> FakeContainer:
        return self.container


def engine_with(container: FakeContainer) -> DockerEngine:
    engine = DockerEngine.__new__(DockerEngine)
    engine.client, engine.log, engine.environ = FakeClient(container), Log(verbosity=-1), {}  # type: ignore[assignment]
    return engine


def test_a_wait_that_times_out_kills_the_container_and_says_timeout() -> None:
    container = FakeContainer(ReadTimeout("read timed out"))
    outcome = engine_with(container).run("img", ["python"], timeout=0.1)
    assert outcome.timed_out and container.killed and outcome.stdout == "\ufffd partial"


def test_an_engine_error_is_not_reported_as_a_timeout(tmp_path: Path) -> None:
    container = FakeContainer(docker.errors.APIError("500 Server Error: device busy"))
    engine = engine_with(container)
    with pytest.raises(EngineFailure, match="device busy"):
        engine.run("img", ["python"], timeout=10)
    target = ImageTarget(engine, "img", tmp_path, tmp_path, gpu=False)
    result = run_probe(target, "numpy", {})
    assert result.status == "error" and "engine failed" in result.reason
    assert "timeout" not in result.reason
