"""The serve probe: its matrix options, each mode's verdict, time to ready, and the reports."""

from __future__ import annotations

import json
import socket
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from builder.engine import EngineFailure, RunOutcome
from builder.errors import InputError
from builder.matrix import parse_matrix
from builder.probe import ImageTarget, VenvTarget, run_probe, serve_argv
from builder.records import ProbeResult
from builder.report import load_report, parse_report, render_html, render_junit, render_markdown
from builder.schema import matrix_schema
from tests.conftest import FIXTURES

HEAD = """\
version: 1
bases:
  b: {image: debian:bookworm, python: "3.11"}
axes:
  base: [b]
image:
  cmd: [python, -u, handler.py]
"""
WORKER = ("python", "-u", "handler.py")
# What runpod 1.12.0's local test printed for `python handler.py --test_input '...'` (run by
# hand against the real SDK, offline under `unshare -rn`): the result is the dict's repr.
RUNPOD_PASS = """\
--- Starting Serverless Worker |  Version 1.12.0 ---
INFO   | test_input set, using test_input as job input.
DEBUG  | Retrieved local job: {'input': {'prompt': 'a cat'}, 'id': 'local_test'}
INFO   | local_test | Started.
DEBUG  | local_test | Handler output: {'echo': 'a cat', 'n': 1}
DEBUG  | local_test | run_job return: {'output': {'echo': 'a cat', 'n': 1}}
INFO   | Job local_test completed successfully.
INFO   | Job result: {'output': {'echo': 'a cat', 'n': 1}}
INFO   | Local testing complete, exiting.
"""
RUNPOD_RAISED = """\
DEBUG  | local_test | run_job return: {'error': '...'}
ERROR  | Job local_test failed with error: {"error_type": "<class 'ValueError'>", \
"error_message": "boom", "error_traceback": "Traceback ...", "hostname": "unknown"}
"""


def load(text: str) -> Any:
    return parse_matrix(text, Path("matrix.yaml"))


def problems(text: str) -> str:
    with pytest.raises(InputError) as caught:
        load(text)
    return str(caught.value)


@dataclass
class FakeTarget:
    """A target that answers `launch` with one outcome (an exception is raised)."""

    outcome: RunOutcome | Exception
    command: tuple[str, ...] = WORKER
    app: Path | None = None
    lock_path: str = "/in/lock.txt"
    app_path: str | None = None
    launched: list[tuple[list[str], float, str]] = field(default_factory=list)

    def run(self, script: str, options: Any, timeout: float, memory: str) -> RunOutcome:
        raise AssertionError("the serve probe runs no script")

    def launch(self, argv: Sequence[str], timeout: float, memory: str) -> RunOutcome:
        self.launched.append((list(argv), timeout, memory))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def app_file(self, name: str) -> Path | None:
        path = self.app / name if self.app else None
        return path if path and path.is_file() else None


def outcome(
    code: int | None, stdout: str = "", stderr: str = "", seconds: float = 1.25
) -> RunOutcome:
    return RunOutcome(code, stdout, stderr, seconds, timed_out=code is None)


def serve(target: FakeTarget, **options: Any) -> ProbeResult:
    return run_probe(target, "serve", options)


# ---------------------------------------------------------------- matrix options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            "{mode: http, url: 'ftp://x'}",
            "matrix.yaml:9:28: probes.serve.url: expected an http:// or https://",
        ),
        ("{mode: grpc}", "9:17: probes.serve.mode: expected one of runpod, http, command"),
        ("{url: 'http://x/'}", "9:10: probes.serve.mode: missing required key"),
        ("{mode: http}", "9:10: probes.serve.url: missing required key for mode http"),
        ("{mode: command}", "9:10: probes.serve.argv: missing required key for mode command"),
        ("{mode: runpod, colour: red}", "9:25: probes.serve.colour: unknown key"),
        ("{mode: runpod, argv: [x]}", "9:25: probes.serve.argv: only for mode command"),
        ("{mode: runpod, input: {prompt: x}}", "9:32: probes.serve.input: expected a RunPod job"),
        ("{mode: runpod, timeout: fast}", "probes.serve.timeout: expected a number"),
        ("{mode: command, argv: []}", "probes.serve.argv: expected a non-empty list"),
        ("{mode: command, argv: [x], expect: {output: '('}}", "expect.output: invalid regex"),
        ("{mode: command, argv: [x], expect: {exit_code: 256}}", "256 is out of range 0-255"),
        ("{mode: http, url: 'http://x/', request: {path: run}}", "request.path: invalid path"),
        ("{mode: http, url: 'http://x/', request: {method: GIT}}", "(did you mean 'GET'?)"),
        ("{mode: http, url: 'http://x/', expect: {status: 99}}", "99 is out of range 100-599"),
        ("{mode: http, url: 'http://x/', expect: {statsu: 200}}", "(did you mean 'status'?)"),
    ],
)
def test_bad_serve_options_are_refused_with_their_line_and_field(
    options: str, message: str
) -> None:
    assert message in problems(HEAD + "probes:\n  serve: " + options + "\n")


def test_a_serve_probe_that_runs_the_image_needs_its_cmd_and_names_probes_serve() -> None:
    text = HEAD.replace("image:\n  cmd: [python, -u, handler.py]\n", "")
    message = problems(text + "probes:\n  serve: {mode: http, url: 'http://127.0.0.1:8/'}\n")
    assert "matrix.yaml:7:10: probes.serve: mode http runs the image's own command" in message
    command = load(text + "probes:\n  serve: {mode: command, argv: [python, -V]}\n")
    assert dict(command.cells[0].probes)["serve"] == (
        ("argv", ("python", "-V")),
        ("mode", "command"),
    )


def test_serve_is_opt_in_and_needs_options() -> None:
    assert "serve" not in dict(load(HEAD).cells[0].probes)
    assert "probes[1]: needs options" in problems(HEAD + "probes: [imports, serve]\n")
    assert "probes.serve: expected a mapping" in problems(HEAD + "probes: {serve: null}\n")


def test_the_documented_serve_options_load_and_the_schema_agrees() -> None:
    entries = [
        "{mode: runpod, input: {input: {prompt: 'a cat'}}, timeout: 300}",
        "{mode: http, url: 'http://127.0.0.1:8000/health', request: {path: /run, json: {a: 1}},"
        " expect: {status: 200, keys: [output]}}",
        "{mode: command, argv: [python, -c, 'print(1)'], expect: {exit_code: 0, output: '^1$'}}",
    ]
    validator = jsonschema.Draft202012Validator(matrix_schema())
    for entry in entries:
        text = HEAD + "probes:\n  serve: " + entry + "\n"
        assert dict(load(text).cells[0].probes)["serve"]
        assert list(validator.iter_errors(yaml.safe_load(text))) == []
    bad = yaml.safe_load(HEAD + "probes:\n  serve: {mode: http}\n")
    assert list(validator.iter_errors(bad)), "the schema requires url in mode http"


# ---------------------------------------------------------------- runpod


def test_runpod_mode_appends_the_job_as_one_argument_and_passes_on_a_clean_result() -> None:
    target = FakeTarget(outcome(0, RUNPOD_PASS))
    result = serve(target, mode="runpod", input={"input": {"prompt": "a cat"}}, timeout=30)
    assert target.launched == [
        ([*WORKER, "--test_input", '{"input": {"prompt": "a cat"}}'], 30.0, "4g")
    ]
    assert result.status == "pass", result
    printed = "{'output': {'echo': 'a cat', 'n': 1}}"
    assert result.details == {
        "mode": "runpod",
        "time_to_ready_s": 1.25,
        "response_bytes": len(printed),
        "exit_code": 0,
    }


def test_runpod_mode_takes_the_apps_test_input_json_when_no_input_is_given(tmp_path: Path) -> None:
    (tmp_path / "test_input.json").write_text('{"input": {"prompt": "from the app"}}')
    target = FakeTarget(outcome(0, RUNPOD_PASS), app=tmp_path)
    assert serve(target, mode="runpod").status == "pass"
    assert target.launched[0][0][-1] == '{"input": {"prompt": "from the app"}}'


def test_runpod_mode_without_any_job_is_an_error_that_says_where_to_put_one() -> None:
    result = serve(FakeTarget(outcome(0, RUNPOD_PASS)), mode="runpod")
    assert result.status == "error" and "set probes.serve.input" in result.reason


@pytest.mark.parametrize(
    ("code", "stdout", "reason"),
    [
        (
            1,
            "ERROR  | Job local_test failed with error: bad prompt\n",
            "the job failed: bad prompt",
        ),
        (1, RUNPOD_RAISED, "the job failed: ValueError: boom"),
        (1, "ERROR  | Job has no input parameter. Unable to run.\n", "exit code 1: ERROR  | Job"),
        (0, "hello\n", "no `Job result:` logged"),
        (0, "INFO   | Job result: {'output': {'error': 'nsfw'}}\n", "the job result has an error"),
    ],
)
def test_runpod_mode_fails_with_the_reason_runpod_gave(code: int, stdout: str, reason: str) -> None:
    result = serve(FakeTarget(outcome(code, stdout)), mode="runpod", input={"input": {}})
    assert result.status == "fail" and reason in result.reason, result.reason
    assert result.details["time_to_ready_s"] is None
    assert stdout.strip().splitlines()[-1] in result.evidence


def test_runpod_mode_reads_the_json_log_lines_of_an_endpoint_and_a_cut_result() -> None:
    line = json.dumps({"requestId": None, "message": "Job result: {'output': 1}", "level": "INFO"})
    assert serve(FakeTarget(outcome(0, line)), mode="runpod", input={"input": {}}).status == "pass"
    cut = "INFO   | Job result: {'output': 'aaaa\n...TRUNCATED 10 CHARACTERS...\naaaa'}\n"
    result = serve(FakeTarget(outcome(0, cut)), mode="runpod", input={"input": {}})
    assert result.status == "pass" and "cut the job result" in result.warnings[0]


# ---------------------------------------------------------------- command


@pytest.mark.parametrize(
    ("expect", "code", "status", "reason"),
    [
        ({}, 0, "pass", "command: answered in 1.2s (3 bytes)"),
        ({"exit_code": 3, "output": "^lo$"}, 3, "pass", "command: answered in 1.2s (3 bytes)"),
        ({}, 2, "fail", "exit code 2, expected 0"),
        ({"output": "^eth0$"}, 0, "fail", "the output does not match '^eth0$'"),
    ],
)
def test_command_mode_checks_the_exit_code_and_the_output(
    expect: dict[str, Any], code: int, status: str, reason: str
) -> None:
    target = FakeTarget(outcome(code, "lo\n", "warming up"))
    result = serve(target, mode="command", argv=["ls", "/sys/class/net"], expect=expect)
    assert (result.status, result.reason) == (status, reason)
    assert target.launched[0][0] == ["ls", "/sys/class/net"]
    assert result.details["time_to_ready_s"] == (1.25 if status == "pass" else None)
    assert result.details["response_bytes"] == 3


# ---------------------------------------------------------------- http


def facts(**values: Any) -> RunOutcome:
    """An outcome whose last stdout line is the poller's facts."""
    base = {"ready": True, "ready_s": 0.5, "status": 200, "bytes": 12, "keys": ["output"]}
    return outcome(0, json.dumps({**base, **values}), "server log line")


HTTP = {"mode": "http", "url": "http://127.0.0.1:8000/health", "timeout": 20}


def test_http_mode_runs_the_poller_with_the_images_command_and_a_whole_request_url() -> None:
    target = FakeTarget(facts())
    request = {"path": "/run", "json": {"prompt": "a cat"}}
    assert serve(target, **HTTP, request=request).status == "pass"
    argv, timeout, _ = target.launched[0]
    assert argv[:3] == ["python", "-I", "-c"] and timeout > 20  # the poller keeps its own time
    spec = json.loads(argv[3].rsplit("\nmain(", 1)[1].rstrip(")\n")[1:-1])
    assert spec == {
        "argv": list(WORKER),
        "url": HTTP["url"],
        "timeout": 20.0,
        "request": {"url": "http://127.0.0.1:8000/run", "method": "POST", "json": request["json"]},
    }


@pytest.mark.parametrize(
    ("answer", "expect", "status", "reason"),
    [
        ({}, {"keys": ["output"]}, "pass", ""),
        ({"status": 404}, {}, "fail", "http://127.0.0.1:8000/health answered 404, expected 200"),
        ({"keys": ["detail"]}, {"keys": ["output"]}, "fail", "the JSON object lacks output"),
        ({"keys": None}, {"keys": ["output"]}, "fail", "(the body is not one) lacks output"),
        ({"error": "TimeoutError: timed out"}, {}, "fail", "the request failed: TimeoutError"),
    ],
)
def test_http_mode_judges_the_status_and_keys_of_the_answer(
    answer: dict[str, Any], expect: dict[str, Any], status: str, reason: str
) -> None:
    result = serve(FakeTarget(facts(**answer)), **HTTP, expect=expect)
    assert result.status == status and reason in result.reason, result.reason
    assert result.details["time_to_ready_s"] == 0.5 and result.details["response_bytes"] == 12


def test_http_mode_fails_a_server_that_exits_and_errors_one_that_never_answers() -> None:
    exited = outcome(0, json.dumps({"ready": False, "exit_code": 1, "last": "refused"}), "Boom")
    result = serve(FakeTarget(exited), **HTTP)
    assert result.status == "fail" and "exited with code 1 before" in result.reason
    assert result.evidence == "Boom"
    silent = outcome(0, json.dumps({"ready": False, "exit_code": None, "last": "refused"}))
    result = serve(FakeTarget(silent), **HTTP)
    assert result.status == "error" and result.reason == (
        "timeout after 20s: no answer from http://127.0.0.1:8000/health (last: refused)"
    )
    result = serve(FakeTarget(outcome(1, "", "Traceback")), **HTTP)
    assert result.status == "error" and "poller printed no result" in result.reason


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SERVER = """\
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.reply({"ok": True, "greeting": os.environ["GREETING"], "cwd": os.getcwd()})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.reply({"output": body["prompt"][::-1]})
    def reply(self, data):
        raw = json.dumps(data).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(raw)
if sys.argv[1] == "crash":
    sys.exit("no model weights")
HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def venv_target(app: Path, *command: str) -> VenvTarget:
    python = Path(sys.executable)  # the test venv stands in for the cell's
    return VenvTarget(
        python, app, app, "/in/lock.txt", str(app), command=command, env=(("GREETING", "hi"),)
    )


def test_the_poller_starts_the_server_in_the_app_with_its_env_and_times_it(tmp_path: Path) -> None:
    (tmp_path / "server.py").write_text(SERVER)
    port = free_port()
    target = venv_target(tmp_path, "python", "server.py", str(port))
    url = f"http://127.0.0.1:{port}/health"
    request = {"path": "/run", "json": {"prompt": "tac a"}}
    result = run_probe(
        target,
        "serve",
        {
            "mode": "http",
            "url": url,
            "request": request,
            "expect": {"keys": ["output"]},
            "timeout": 20,
        },
    )
    assert result.status == "pass", result
    assert 0 < result.details["time_to_ready_s"] < result.seconds
    assert result.details["response_bytes"] == len(b'{"output": "a cat"}')
    health = run_probe(
        target,
        "serve",
        {"mode": "http", "url": url, "timeout": 20, "expect": {"keys": ["greeting"]}},
    )
    assert health.status == "pass", health


def test_the_poller_reports_a_server_that_dies_at_once_with_its_words(tmp_path: Path) -> None:
    (tmp_path / "server.py").write_text(SERVER)
    target = venv_target(tmp_path, "python", "server.py", "crash")
    result = run_probe(target, "serve", {**HTTP, "timeout": 20})
    assert result.status == "fail" and "exited with code 1" in result.reason
    assert "no model weights" in result.evidence and result.seconds < 10


# ---------------------------------------------------------------- any mode


def test_a_killed_run_a_crash_and_an_engine_failure_are_the_probes_error() -> None:
    killed = serve(
        FakeTarget(outcome(None, "INFO   | loading")), mode="runpod", input={"input": {}}, timeout=5
    )
    assert killed.status == "error" and killed.reason == "timeout after 5s"
    assert "loading" in killed.evidence
    crashed = serve(FakeTarget(RuntimeError("bug")), mode="runpod", input={"input": {}})
    assert crashed.status == "error" and crashed.reason == "the probe crashed: RuntimeError: bug"
    failed = serve(FakeTarget(EngineFailure("gone")), mode="command", argv=["x"])
    assert failed.status == "error" and "engine failed" in failed.reason


def test_an_image_without_a_command_is_the_probes_error_not_a_crash() -> None:
    result = serve(FakeTarget(outcome(0), command=()), **HTTP)
    assert result.status == "error" and "has neither" in result.reason


@dataclass
class RecordingEngine:
    calls: list[dict[str, Any]] = field(default_factory=list)
    name: str = "fake"

    def run(self, image: str, argv: Sequence[str], **options: Any) -> RunOutcome:
        self.calls.append({"image": image, "argv": list(argv), **options})
        return outcome(0, "lo\n")


def test_in_an_image_only_the_entrypoint_is_replaced_so_user_workdir_and_env_stay(
    tmp_path: Path,
) -> None:
    engine = RecordingEngine()
    target = ImageTarget(engine, "img", tmp_path, tmp_path, gpu=False, command=WORKER)
    assert serve(target, mode="command", argv=["ls", "/sys/class/net"]).status == "pass"
    (call,) = engine.calls
    assert call["entrypoint"] == ["ls"] and call["argv"] == ["/sys/class/net"]
    assert not {"mounts", "environment", "network", "user", "workdir"} & set(call)


def test_the_venv_runs_the_command_from_the_venv_in_the_app_with_the_images_env(
    tmp_path: Path,
) -> None:
    target = venv_target(tmp_path, *WORKER)
    code = "import os, sys; print(sys.prefix, os.getcwd(), os.environ['GREETING'])"
    result = target.launch(["python", "-c", code], 20, "1g")
    assert result.stdout.split() == [sys.prefix, str(tmp_path), "hi"]


def test_serve_argv_for_command_mode_is_the_argv_as_given() -> None:
    assert serve_argv(FakeTarget(outcome(0)), {"mode": "command", "argv": ("a", "b")}, 1) == [
        "a",
        "b",
    ]


# ---------------------------------------------------------------- reports


def report_with_serve(details: dict[str, Any]) -> dict[str, Any]:
    report = json.loads(json.dumps(load_report(FIXTURES / "reports" / "report.json")))
    probe = {
        "probe": "serve",
        "status": "pass",
        "reason": "",
        "seconds": 2.0,
        "details": details,
        "evidence": "",
        "warnings": [],
    }
    report["cells"][0]["probes"].append(probe)
    return report


def test_the_reports_show_time_to_ready_per_cell() -> None:
    report = parse_report(
        report_with_serve({"mode": "http", "time_to_ready_s": 0.42, "response_bytes": 1234}), "test"
    )
    cell = report["cells"][0]["id"]
    markdown = render_markdown(report)
    assert "### Time to ready" in markdown
    assert f"| `{cell}` | ✅ | http | 0.42s | 1.2 kB |" in markdown
    html = render_html(report)
    assert "<dt>time to ready</dt><dd>0.42s (serve probe)</dd>" in html
    assert "<small>ready 0.42s</small>" in html
    suites = ET.fromstring(render_junit(report))
    case = suites.find(f"testsuite[@name='{cell}']/testcase[@name='serve']")
    assert case is not None
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties == {"time_to_ready_s": "0.42", "response_bytes": "1234"}


def test_a_report_without_a_serve_probe_has_no_time_to_ready_table() -> None:
    report = load_report(FIXTURES / "reports" / "report.json")
    assert "Time to ready" not in render_markdown(report)
    assert "time to ready" not in render_html(report)


def test_the_report_schema_holds_serve_details_to_their_types() -> None:
    with pytest.raises(InputError, match="time_to_ready_s"):
        parse_report(report_with_serve({"mode": "http", "time_to_ready_s": -1}), "test")
    parse_report(report_with_serve({"mode": "http", "time_to_ready_s": None}), "test")


def test_with_the_venv_engine_the_images_command_and_env_key_a_serve_cell_only() -> None:
    from builder.backends import VenvBackend

    backend = VenvBackend(matrix=None, settings=None, log=None)  # type: ignore[arg-type]
    serving = HEAD + "probes:\n  serve: {mode: runpod, input: {input: {}}}\n"
    keys = {
        text: backend.key_parts(load(text).cells[0], None)
        for text in (serving, serving.replace("handler.py", "worker.py"), HEAD)
    }
    assert len({json.dumps(k, sort_keys=True) for k in keys.values()}) == 3
    assert keys[HEAD] == {"python": "3.11"}  # other cells keep their keys
