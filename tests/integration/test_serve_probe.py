"""The serve probe on the real engine: the image's own command, as its own user, in its workdir,
with no network; http and command modes pass, a broken worker fails with a useful reason."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from builder.report import load_report
from tests.conftest import SYSTEM_CA, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.network, pytest.mark.slow]

MATRIX = """version: 1
bases:
  serve-test: {{image: "{base}", python: "3.11"}}
axes:
  base: [serve-test]
  six: ["1.17.0"]
indexes: {{ca_bundle: {ca}}}
app: {{path: app}}
image:
  env: {{GREETING: hi}}
  workdir: /srv/worker
  cmd: {cmd}
  user: worker
probes:
  serve: {serve}
"""
# A stdlib server: /health, and /run that answers who and where it runs and what it can see.
SERVER = """\
import json, os, pwd, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
if "--crash" in sys.argv:
    sys.exit("RuntimeError: no model weights under /runpod-volume")
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.reply(200 if self.path == "/health" else 404, {"ok": True})
    def do_POST(self):
        job = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.reply(200, {
            "output": job["prompt"][::-1],
            "user": pwd.getpwuid(os.getuid()).pw_name,
            "cwd": os.getcwd(),
            "greeting": os.environ["GREETING"],
            "interfaces": sorted(os.listdir("/sys/class/net")),
        })
    def reply(self, status, data):
        self.send_response(status)
        self.end_headers()
        self.wfile.write(json.dumps(data).encode())
HTTPServer(("127.0.0.1", 8000), Handler).serve_forever()
"""
# Speaks like runpod's local test (`INFO   | Job result: {...}`), without the SDK.
HANDLER = """\
import json, sys
job = json.loads(sys.argv[sys.argv.index("--test_input") + 1])
print(f"INFO   | Job result: {({'output': job['input']['prompt'].upper()})}")
"""
SERVE = "[python, -u, /app/server.py]"
HTTP = (
    "{mode: http, url: 'http://127.0.0.1:8000/health', timeout: 60, "
    "request: {path: /run, json: {prompt: 'a cat'}}, expect: {keys: [output, user]}}"
)
NETWORK = (
    "{mode: command, argv: [python, -c, \"import os, pwd; print(sorted(os.listdir('/sys/class/"
    "net')), pwd.getpwuid(os.getuid()).pw_name, os.getcwd(), os.environ['GREETING'])\"], "
    "expect: {output: \"^\\\\['lo'\\\\] worker /srv/worker hi$\"}}"
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Path:
    root = tmp_path_factory.mktemp("serve")
    (root / "app").mkdir()
    (root / "app" / "server.py").write_text(SERVER)
    (root / "app" / "handler.py").write_text(HANDLER)
    return root


def validate(project: Path, base: str, serve: str, cmd: str = SERVE) -> dict[str, Any]:
    """`builder validate` with this serve probe; the one cell's serve result."""
    matrix = MATRIX.format(base=base, ca=SYSTEM_CA, cmd=cmd, serve=serve)
    (project / "matrix.yaml").write_text(matrix)
    done = run_cli("validate", "-o", "out", "--cache-dir", "cache", cwd=project, timeout=600)
    report = load_report(project / "out" / "report.json")
    (cell,) = report["cells"]
    assert done.code == (0 if cell["status"] == "pass" else 1), done.err
    (probe,) = [p for p in cell["probes"] if p["probe"] == "serve"]
    return dict(probe)


def test_http_mode_polls_the_worker_inside_its_container_and_times_it(
    project: Path, base_image: str
) -> None:
    probe = validate(project, base_image, HTTP)
    assert probe["status"] == "pass", probe
    details = probe["details"]
    assert 0 < details["time_to_ready_s"] < probe["seconds"]
    assert details["status"] == 200 and details["response_bytes"] > 0
    markdown = run_cli("report", "out/report.json", "--format", "md", cwd=project).out
    assert "### Time to ready" in markdown and "| http |" in markdown


def test_command_mode_sees_no_network_the_declared_user_and_the_workdir(
    project: Path, base_image: str
) -> None:
    probe = validate(project, base_image, NETWORK)
    assert probe["status"] == "pass", probe  # only `lo`: the container had no network
    wrong = NETWORK.replace("worker /srv", "root /srv")
    failed = validate(project, base_image, wrong)
    assert failed["status"] == "fail" and "does not match" in failed["reason"]
    assert "['lo'] worker /srv/worker hi" in failed["evidence"]


def test_runpod_mode_passes_the_job_as_one_argument_in_the_image(
    project: Path, base_image: str
) -> None:
    serve = "{mode: runpod, input: {input: {prompt: 'a cat'}}, timeout: 60}"
    probe = validate(project, base_image, serve, cmd="[python, -u, /app/handler.py]")
    assert probe["status"] == "pass", probe
    assert probe["details"]["response_bytes"] == len("{'output': 'A CAT'}")


def test_a_worker_that_dies_fails_with_its_own_last_words(project: Path, base_image: str) -> None:
    probe = validate(project, base_image, HTTP, cmd="[python, -u, /app/server.py, --crash]")
    assert probe["status"] == "fail"
    assert probe["reason"] == (
        "the server exited with code 1 before http://127.0.0.1:8000/health answered"
    )
    assert "no model weights under /runpod-volume" in probe["evidence"]
    assert probe["details"]["time_to_ready_s"] is None


def test_a_wrong_route_fails_naming_the_url_and_the_status(project: Path, base_image: str) -> None:
    get = HTTP.replace("request: {path: /run, json: {prompt: 'a cat'}}", "request: {path: /x}")
    probe = validate(project, base_image, get)
    assert probe["status"] == "fail"
    assert probe["reason"] == "http://127.0.0.1:8000/x answered 404, expected 200"


def test_no_probe_container_is_left_behind(project: Path, base_image: str) -> None:
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=io.github.builder.probe=1"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert left.stdout.strip() == ""
    assert json.loads((project / "out" / "report.json").read_text())["summary"]["total"] == 1
