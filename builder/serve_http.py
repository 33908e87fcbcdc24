"""The serve probe's HTTP poller: standalone (standard library only, imports no builder).

`builder.probe` runs this file's source inside the image (or the venv) with `python -I -c`,
a call `main(SPEC_JSON)` appended, as the image's own user, in its workdir and with its
environment, and with no network but loopback. It starts the server (`spec["argv"]`, the image's entrypoint
and cmd) as its child, polls `spec["url"]` until an answer below 500 comes or the server
exits or `spec["timeout"]` runs out, sends `spec["request"]` (else keeps the readiness
answer), stops the server and prints one JSON line of facts. The probe judges them.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

POLL_SECONDS = 0.1
BODY_CHARS = 2000
STOP_SECONDS = 5
SIOCSIFFLAGS, IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x8914, 0x1, 0x8, 0x40


def loopback_up() -> None:
    """Bring `lo` up where nobody has: `unshare -rn` (the venv engine's sandbox) leaves it
    down, Docker's `--network none` does not. Elsewhere this is refused, and that is fine."""
    flags = struct.pack("16sh14x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock, SIOCSIFFLAGS, flags)
    except OSError:
        pass


def fetch(url: str, method: str, body: Any, timeout: float) -> tuple[int, bytes]:
    """(status, body) of one request; an HTTP error status is an answer too."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    # Loopback inside the sandbox: a self-signed certificate proves nothing either way.
    context = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def wait_ready(
    spec: dict[str, Any], server: subprocess.Popen[bytes], start: float
) -> dict[str, Any]:
    """Poll until the server answers below 500; say why not otherwise."""
    last = "no answer yet"
    while time.monotonic() - start < spec["timeout"]:
        if server.poll() is not None:
            return {"ready": False, "exit_code": server.returncode, "last": last}
        left = spec["timeout"] - (time.monotonic() - start)
        try:
            status, body = fetch(spec["url"], "GET", None, max(0.1, min(5.0, left)))
        except (OSError, ValueError) as error:  # refused, reset, timed out, not HTTP
            last = describe(error)
        else:
            if status < 500:
                return answer(status, body, time.monotonic() - start)
            last = f"HTTP {status}"
        time.sleep(POLL_SECONDS)
    return {"ready": False, "exit_code": None, "last": last}


def describe(error: Exception) -> str:
    """`ConnectionRefusedError: [Errno 111] Connection refused`, not urllib's wrapper."""
    cause = error.reason if isinstance(error, urllib.error.URLError) else error
    return f"{type(cause).__name__}: {cause}"


def answer(status: int, body: bytes, ready_s: float) -> dict[str, Any]:
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    return {
        "ready": True,
        "ready_s": round(ready_s, 3),
        "status": status,
        "bytes": len(body),
        "keys": sorted(data) if isinstance(data, dict) else None,
        "body": text[:BODY_CHARS],
    }


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
            server.wait(timeout=STOP_SECONDS)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def main(text: str) -> None:
    spec = json.loads(text)
    loopback_up()
    start = time.monotonic()
    try:  # the server's output goes to stderr: stdout carries only the result line
        server = subprocess.Popen(
            spec["argv"], stdin=subprocess.DEVNULL, stdout=2, start_new_session=True
        )
    except OSError as error:
        print(json.dumps({"ready": False, "started": False, "last": str(error)}), flush=True)
        return
    try:
        result = wait_ready(spec, server, start)
        request = spec.get("request")
        if result["ready"] and request:
            left = max(1.0, spec["timeout"] - (time.monotonic() - start))
            status, body = fetch(request["url"], request["method"], request.get("json"), left)
            result = answer(status, body, result["ready_s"])
    except (OSError, ValueError) as error:  # the request itself failed
        result = {**result, "error": describe(error)}
    finally:
        stop(server)
    print(json.dumps(result), flush=True)
