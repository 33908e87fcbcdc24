"""Run the standalone probes of `validate/` in an image (Docker) or a venv, one process each,
and the `serve` probe, which runs the image's own entrypoint and cmd instead of a script.

Each probe runs with a timeout, a memory limit and no network; a kill (timeout, OOM, signal) or a
probe that printed no result becomes that probe's `error`, and the other probes still run.
"""

from __future__ import annotations

import ast
import json
import os
import re
import resource
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from builder.engine import Engine, EngineFailure, Mount, RunOutcome
from builder.proc import decode
from builder.records import ProbeResult, Status
from builder.resources import PROBES, SERVE_PROBE

# The HTTP poller, whose source runs inside the image with `python -I -c`.
SERVE_HTTP = Path(__file__).resolve().parent / "serve_http.py"

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
    tail = _tail(outcome.stderr or outcome.stdout)
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


def _tail(text: str) -> str:
    return text[-EVIDENCE_CHARS:]


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
    command: tuple[str, ...]  # what the image runs: its entrypoint, then its cmd

    def run(
        self, script: str, options: Mapping[str, Any], timeout: float, memory: str
    ) -> RunOutcome: ...

    def launch(self, argv: Sequence[str], timeout: float, memory: str) -> RunOutcome:
        """Run `argv` as the image runs its own command (its user, workdir, environment)."""
        ...

    def app_file(self, name: str) -> Path | None:
        """A file of the app's root, as the image holds it, read on this host; None if absent."""
        ...


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
    command: tuple[str, ...] = ()
    app_source: Path | None = None  # the app in the build context, copied to /app

    def run(
        self, script: str, options: Mapping[str, Any], timeout: float, memory: str
    ) -> RunOutcome:
        name = Path(script).stem
        mounts = [Mount(self.validate_source, self.validate_dir), Mount(self.inputs, "/builder/in")]
        if options.get("model_dir"):  # a host model directory, mounted read-only
            mounts.append(Mount(Path(options["model_dir"]), "/builder/model"))
            options = {**options, "model_dir": "/builder/model"}
        if options.get("jit_cache"):  # a host cache the probe writes (numba's), else none
            cache = _cache_mount(Path(options["jit_cache"]), "/builder/jit-cache")
            mounts += cache
            options = {**options, "jit_cache": "/builder/jit-cache" if cache else None}
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

    def launch(self, argv: Sequence[str], timeout: float, memory: str) -> RunOutcome:
        # The image's own user, workdir and environment: only the entrypoint is replaced.
        return self.engine.run(
            self.image,
            argv[1:],
            entrypoint=argv[:1],
            memory=memory,
            timeout=timeout,
            gpu=self.gpu,
        )

    def app_file(self, name: str) -> Path | None:
        return _existing(self.app_source, name)


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
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # the image's `env`, for `launch`

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

    def launch(self, argv: Sequence[str], timeout: float, memory: str) -> RunOutcome:
        """From the venv as from the image: its bin first on PATH (so `python` is the venv's),
        the app as the working directory and on PYTHONPATH, the image's env on top."""
        bin_dir = self.python.parent  # not resolved: uv's bin/python links to the host's
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{self.path}",
            "VIRTUAL_ENV": str(bin_dir.parent),
            "HOME": str(self.inputs),
            "LANG": "C.UTF-8",
            **({"PYTHONPATH": self.app_path} if self.app_path else {}),
            **dict(self.env),
        }
        argv = [*self.isolate_network, *argv]
        cwd = self.app_path or str(self.inputs)
        return run_limited(argv, env, timeout, memory_bytes(memory), cwd=cwd)

    def app_file(self, name: str) -> Path | None:
        return _existing(Path(self.app_path) if self.app_path else None, name)


def _cache_mount(source: Path, target: str) -> list[Mount]:
    """A writable mount of a host cache directory, or none where it cannot be made."""
    try:
        source.mkdir(parents=True, exist_ok=True)
    except OSError:
        return []
    return [Mount(source, target, read_only=False)]


def _existing(folder: Path | None, name: str) -> Path | None:
    path = folder / name if folder else None
    return path if path and path.is_file() else None


def run_limited(
    argv: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
    memory: int,
    cwd: str | None = None,
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
        cwd=cwd,
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
        if name == SERVE_PROBE:
            return serve(target, options, timeout, memory)
        outcome = target.run(PROBES[name], options, timeout, memory)
    except EngineFailure as exc:
        reason = f"the engine failed to run the probe: {exc}"
        return _error(name, reason[:500], round(time.monotonic() - start, 2))
    except ServeError as exc:
        return _error(name, str(exc), round(time.monotonic() - start, 2))
    except Exception as exc:  # a bug or an OS failure: this probe's error, the others still run
        reason = f"the probe crashed: {type(exc).__name__}: {exc}"
        return _error(name, reason[:500], round(time.monotonic() - start, 2))
    return interpret(name, outcome, timeout, memory)


# ---------------------------------------------------------------- the serve probe

SERVE_GRACE = 15.0  # seconds the HTTP poller has past its deadline to stop the server and report
RUNPOD_RESULT = "Job result: "  # how runpod's local test (rp_local.run_local) logs the result
RUNPOD_FAILED = re.compile(r"^Job \S+ failed with error: (.*)")
RUNPOD_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "TIP")
MAX_RESULT_CHARS = 1 << 20  # a longer "result" is not one runpod printed (it cuts at 4096)


class ServeError(Exception):
    """The serve probe could not be set up (no input, no command): its error, with the fix."""


def serve(target: Target, options: Mapping[str, Any], timeout: float, memory: str) -> ProbeResult:
    """Run the image's own command in the probe's mode (runpod, http, command) and judge it."""
    mode = options["mode"]
    argv = serve_argv(target, options, timeout)
    limit = timeout + SERVE_GRACE if mode == "http" else timeout
    outcome = target.launch(argv, limit, memory)
    killed = _killed(outcome, timeout, memory)
    if killed is not None:
        return _error(SERVE_PROBE, killed, round(outcome.seconds, 2), _tail(_output(outcome)))
    return _JUDGES[mode](outcome, options, timeout)


def serve_argv(target: Target, options: Mapping[str, Any], timeout: float) -> list[str]:
    """The command line of the mode: `argv` as given; the image's entrypoint and cmd plus
    `--test_input JSON` (runpod's local test); or the HTTP poller, which starts them."""
    mode = options["mode"]
    if mode == "command":
        return list(options["argv"])
    if not target.command:
        raise ServeError(f"mode {mode} needs the image's entrypoint or cmd, and it has neither")
    if mode == "runpod":
        return [*target.command, "--test_input", json.dumps(runpod_input(target, options))]
    spec = {
        "argv": list(target.command),
        "url": options["url"],
        "timeout": timeout,
        "request": http_request(options),
    }
    source = f"{SERVE_HTTP.read_text()}\nmain({json.dumps(spec)!r})\n"  # repr: a str literal
    return ["python", "-I", "-c", source]


def runpod_input(target: Target, options: Mapping[str, Any]) -> Any:
    """The job: `input` from the matrix, else the app's test_input.json."""
    if "input" in options:
        return options["input"]
    found = target.app_file("test_input.json")
    if found is None:
        raise ServeError("no job to run: set probes.serve.input or add test_input.json to the app")
    try:
        return json.loads(found.read_text())
    except (OSError, ValueError) as exc:
        raise ServeError(f"{found}: not a JSON job: {exc}") from None


def http_request(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """`request` with its URL made whole (a `path` goes to the polled URL's host) and its
    method defaulted (POST with a body, else GET)."""
    request = options.get("request")
    if not request:
        return None
    base = urllib.parse.urlsplit(options["url"])
    url = request.get("url") or (
        f"{base.scheme}://{base.netloc}{request['path']}" if "path" in request else options["url"]
    )
    method = request.get("method") or ("POST" if "json" in request else "GET")
    return {"url": url, "method": method, "json": request.get("json")}


def _served(
    options: Mapping[str, Any],
    outcome: RunOutcome,
    reason: str = "",
    ready: float | None = None,
    size: int | None = None,
    evidence: str = "",
    **facts: Any,
) -> ProbeResult:
    """A judged serve run: pass without a reason, else fail; time to ready only on a pass or
    (http) once the server answered."""
    details = {
        "mode": options["mode"],
        "time_to_ready_s": None if ready is None else round(ready, 3),
        "response_bytes": size,
        **facts,
    }
    answered = f"{options['mode']}: answered in {ready:.1f}s" if ready is not None else ""
    return ProbeResult(
        probe=SERVE_PROBE,
        status=Status.FAIL if reason else Status.PASS,
        reason=reason or f"{answered} ({size} bytes)",
        seconds=round(outcome.seconds, 2),
        details=details,
        evidence=_tail(evidence) if reason else "",
    )


def _judge_command(outcome: RunOutcome, options: Mapping[str, Any], timeout: float) -> ProbeResult:
    expect = options.get("expect") or {}
    wanted, pattern = expect.get("exit_code", 0), expect.get("output")
    output = _output(outcome)
    reason = ""
    if outcome.exit_code != wanted:
        reason = f"exit code {outcome.exit_code}, expected {wanted}"
    elif pattern and not re.search(pattern, output, re.M):
        reason = f"the output does not match {pattern!r}"
    ready = None if reason else outcome.seconds
    size = len(outcome.stdout.encode())
    return _served(options, outcome, reason, ready, size, output, exit_code=outcome.exit_code)


def _judge_runpod(outcome: RunOutcome, options: Mapping[str, Any], timeout: float) -> ProbeResult:
    """Pass: exit 0 and a printed job result without `error` (runpod exits 1 on one itself)."""
    found = runpod_result(outcome.stdout)
    reason = _runpod_problem(outcome, found)
    size = len(found[0].encode()) if found else None
    ready = None if reason else outcome.seconds
    output, code = _output(outcome), outcome.exit_code
    result = _served(options, outcome, reason, ready, size, output, exit_code=code)
    if not reason and found and found[1] is None:
        return replace(result, warnings=("runpod cut the job result it logged: exit code only",))
    return result


def _runpod_problem(outcome: RunOutcome, found: tuple[str, dict[str, Any] | None] | None) -> str:
    if outcome.exit_code != 0:
        failed = runpod_failure(outcome.stdout)
        last = (_output(outcome).splitlines() or [""])[-1].strip()
        return f"the job failed: {failed}" if failed else f"exit code {outcome.exit_code}: {last}"
    if found is None:
        return "exit 0 but no `Job result:` logged: is the cmd a runpod worker, at log level INFO?"
    if found[1] is not None and _has_error(found[1]):
        return f"the job result has an error: {found[0][:300]}"
    return ""


def _output(outcome: RunOutcome) -> str:
    return "\n".join([outcome.stdout, outcome.stderr]).strip()


def runpod_result(stdout: str) -> tuple[str, dict[str, Any] | None] | None:
    """The last `Job result: {...}` runpod logged, as (text, dict or None where the text is
    cut or not a Python literal). runpod logs `LEVEL  | message`, or JSON lines with a
    `message` when RUNPOD_ENDPOINT_ID is set; the result is the dict's repr, not JSON."""
    for line in reversed(stdout.splitlines()):
        message = _runpod_message(line)
        if message.startswith(RUNPOD_RESULT):
            text = message[len(RUNPOD_RESULT) :]
            return text, _literal_dict(text)
    return None


def runpod_failure(stdout: str) -> str | None:
    """The error of the last `Job ... failed with error: ...` runpod logged; for a handler
    that raised, runpod's JSON (error_type, error_message, traceback) as `Type: message`."""
    for line in reversed(stdout.splitlines()):
        if found := RUNPOD_FAILED.match(_runpod_message(line)):
            return _raised(found[1])[:300]
    return None


def _raised(error: str) -> str:
    try:
        data = json.loads(error)
        kind = re.sub(r"^<class '(?:[\w.]+\.)?(\w+)'>$", r"\1", str(data["error_type"]))
        return f"{kind}: {data['error_message']}"
    except (ValueError, TypeError, KeyError):
        return error


def _runpod_message(line: str) -> str:
    if line.startswith("{"):
        try:
            data = json.loads(line)
        except ValueError:
            return ""
        return str(data.get("message", "")) if isinstance(data, dict) else ""
    level, bar, message = line.partition("| ")
    return message.strip() if bar and level.strip() in RUNPOD_LEVELS else ""


def _literal_dict(text: str) -> dict[str, Any] | None:
    if len(text) > MAX_RESULT_CHARS:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _has_error(job: Mapping[str, Any]) -> bool:
    output = job.get("output")
    return "error" in job or (isinstance(output, dict) and "error" in output)


def _judge_http(outcome: RunOutcome, options: Mapping[str, Any], timeout: float) -> ProbeResult:
    """Judge the poller's facts: the server answered in time, with the expected status and keys."""
    facts = _last_json(outcome.stdout)
    log = outcome.stderr.strip()
    if facts is None:
        reason = f"the HTTP poller printed no result (exit {outcome.exit_code})"
        return _error(SERVE_PROBE, reason, round(outcome.seconds, 2), _tail(log or outcome.stdout))
    url = options["url"]
    if not facts.get("ready"):
        if facts.get("started") is False:
            return _served(
                options, outcome, f"the server did not start: {facts['last']}", evidence=log
            )
        if facts.get("exit_code") is not None:
            reason = f"the server exited with code {facts['exit_code']} before {url} answered"
            return _served(options, outcome, reason, evidence=log)
        reason = f"timeout after {timeout:g}s: no answer from {url} (last: {facts['last']})"
        return _error(SERVE_PROBE, reason, round(outcome.seconds, 2), _tail(log))
    return _served(
        options,
        outcome,
        _http_problem(facts, options),
        facts["ready_s"],
        facts.get("bytes"),
        "\n".join([log, str(facts.get("body", ""))]).strip(),
        status=facts.get("status"),
    )


def _http_problem(facts: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """Why the answer is not the expected one ("" when it is)."""
    expect = options.get("expect") or {}
    where = (http_request(options) or {}).get("url", options["url"])
    if facts.get("error"):
        return f"{where}: the request failed: {facts['error']}"
    if facts["status"] != expect.get("status", 200):
        return f"{where} answered {facts['status']}, expected {expect.get('status', 200)}"
    keys = facts.get("keys")
    missing = [k for k in expect.get("keys", ()) if k not in (keys or ())]
    if missing:
        what = "JSON object" if keys is not None else "JSON object (the body is not one)"
        return f"{where}: the {what} lacks {', '.join(missing)}"
    return ""


def _last_json(stdout: str) -> dict[str, Any] | None:
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        data = json.loads(lines[-1])
    except (IndexError, ValueError):
        return None
    return data if isinstance(data, dict) else None


_JUDGES: Mapping[str, Callable[[RunOutcome, Mapping[str, Any], float], ProbeResult]] = {
    "runpod": _judge_runpod,
    "http": _judge_http,
    "command": _judge_command,
}
