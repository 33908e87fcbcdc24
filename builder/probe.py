"""Run the standalone probes of `validate/` in an image (Docker) or a venv, one process each.

Each probe runs with a timeout, a memory limit and no network; a kill (timeout, OOM, signal) or a
probe that printed no result becomes that probe's `error`, and the other probes still run.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from builder.engine import Engine, EngineFailure, Mount, RunOutcome
from builder.proc import decode
from builder.records import ProbeResult, Status
from builder.resources import PROBES

DEFAULT_LIMITS: Mapping[str, tuple[float, str]] = {"generate": (600, "8g")}
DEFAULT_TIMEOUT, DEFAULT_MEMORY = 300.0, "4g"
EVIDENCE_CHARS = 2000


def limits(name: str, options: Mapping[str, Any]) -> tuple[float, str]:
    """(timeout seconds, memory) for a probe: matrix options over the defaults."""
    timeout, memory = DEFAULT_LIMITS.get(name, (DEFAULT_TIMEOUT, DEFAULT_MEMORY))
    return float(options.get("timeout", timeout)), str(options.get("memory", memory))


def memory_bytes(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    unit = text[-1].lower()
    return int(float(text[:-1]) * units[unit]) if unit in units else int(float(text))


def interpret(name: str, outcome: RunOutcome, timeout: float, memory: str) -> ProbeResult:
    """Turn a finished (or killed) probe process into its result."""
    seconds = round(outcome.seconds, 2)
    tail = (outcome.stderr or outcome.stdout)[-EVIDENCE_CHARS:]
    killed = _killed(outcome, timeout, memory)
    if killed is not None:
        return _error(name, killed, seconds, tail)
    return _parse(name, outcome, seconds, tail)


def _killed(outcome: RunOutcome, timeout: float, memory: str) -> str | None:
    """Why the probe process was killed (the timeout, out of memory, a signal), or None."""
    code = outcome.exit_code
    if outcome.timed_out:
        return f"timeout after {timeout:g}s"
    if outcome.oom_killed:
        return f"out of memory (limit {memory})"
    if code == 137 or code == -signal.SIGKILL:
        return "killed (SIGKILL, exit 137)"
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return None


def _error(name: str, reason: str, seconds: float, evidence: str = "") -> ProbeResult:
    return ProbeResult(
        probe=name, status=Status.ERROR, reason=reason, seconds=seconds, evidence=evidence
    )


def _parse(name: str, outcome: RunOutcome, seconds: float, tail: str) -> ProbeResult:
    lines = [line for line in outcome.stdout.splitlines() if line.strip()]
    try:
        data = json.loads(lines[-1])
        status = Status(data["status"])
    except (IndexError, ValueError, KeyError, TypeError):
        return _error(name, f"probe printed no result (exit {outcome.exit_code})", seconds, tail)
    return ProbeResult(
        probe=name,
        status=status,
        reason=str(data.get("reason", "")),
        seconds=seconds,
        details=dict(data.get("details") or {}),
        evidence=str(data.get("evidence") or "")[-EVIDENCE_CHARS:],
        warnings=tuple(str(w) for w in data.get("warnings") or ()),
    )


class Target(Protocol):
    """Where probes run: an image or a venv. Paths in options are the target's own paths."""

    lock_path: str
    app_path: str | None

    def run(
        self, script: str, options: Mapping[str, Any], timeout: float, memory: str
    ) -> RunOutcome: ...


@dataclass
class ImageTarget:
    """Probes in containers of a built image, with validate/ and the inputs mounted read-only."""

    engine: Engine
    image: str
    inputs: Path  # host dir holding lock.txt; options files are written here
    validate_source: Path
    gpu: bool
    lock_path: str = "/builder/in/lock.txt"
    validate_dir: str = "/builder/validate"
    app_path: str | None = None

    def run(
        self, script: str, options: Mapping[str, Any], timeout: float, memory: str
    ) -> RunOutcome:
        name = Path(script).stem
        mounts = [Mount(self.validate_source, self.validate_dir), Mount(self.inputs, "/builder/in")]
        if options.get("model_dir"):  # a host model directory, mounted read-only
            mounts.append(Mount(Path(options["model_dir"]), "/builder/model"))
            options = {**options, "model_dir": "/builder/model"}
        (self.inputs / f"{name}.json").write_text(json.dumps(options))
        argv = ["python", "-I", f"{self.validate_dir}/{script}", f"/builder/in/{name}.json"]
        return self.engine.run(
            self.image,
            argv,
            mounts=mounts,
            memory=memory,
            timeout=timeout,
            gpu=self.gpu,
            environment={"HF_HUB_OFFLINE": "1"},
        )


@dataclass
class VenvTarget:
    """Probes as processes of a venv's interpreter, each in its own session, no network if possible."""

    python: Path
    inputs: Path
    validate_source: Path
    lock_path: str
    app_path: str | None
    isolate_network: Sequence[str] = ()  # e.g. ("unshare", "-rn") when it works here
    path: str = "/usr/bin:/bin"  # PATH for the probe process (ffmpeg and friends)

    def run(
        self, script: str, options: Mapping[str, Any], timeout: float, memory: str
    ) -> RunOutcome:
        name = Path(script).stem
        options_file = self.inputs / f"{name}.json"
        options_file.write_text(json.dumps(options))
        argv = [
            *self.isolate_network,
            str(self.python),
            "-I",
            str(self.validate_source / script),
            str(options_file),
        ]
        env = {
            "PATH": self.path,
            "HOME": str(self.inputs),
            "HF_HUB_OFFLINE": "1",
            "LANG": "C.UTF-8",
        }
        return run_limited(argv, env, timeout, memory_bytes(memory))


def run_limited(
    argv: Sequence[str], env: Mapping[str, str], timeout: float, memory: int
) -> RunOutcome:
    """Run a process group with a data-segment limit (not RLIMIT_AS: CUDA reserves huge virtual
    ranges); kill the whole group at the timeout."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))

    start = time.monotonic()
    process = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=dict(env),
        start_new_session=True,
        preexec_fn=limit,
    )
    try:
        raw_out, raw_err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raw_out, raw_err = process.communicate()
        out, err = decode(raw_out), decode(raw_err)
        return RunOutcome(None, out, err, time.monotonic() - start, timed_out=True)
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    out, err = decode(raw_out), decode(raw_err)  # a probe may print any bytes
    oom = "MemoryError" in err or "std::bad_alloc" in err
    return RunOutcome(
        process.returncode,
        out,
        err,
        time.monotonic() - start,
        oom_killed=oom and process.returncode != 0,
    )


def run_probe(target: Target, name: str, options: Mapping[str, Any]) -> ProbeResult:
    """Run one probe; whatever goes wrong with it (the engine included) is its own `error`."""
    timeout, memory = limits(name, options)
    start = time.monotonic()
    try:
        outcome = target.run(PROBES[name], options, timeout, memory)
    except EngineFailure as exc:
        reason = f"the engine failed to run the probe: {exc}"
        return _error(name, reason[:500], time.monotonic() - start)
    return interpret(name, outcome, timeout, memory)
