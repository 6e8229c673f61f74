"""SIGTERM during a stream of requests loses none that the server accepted.

The API is started as the image starts it (`widgets serve`, here through
`uv run` from the checkout) against the real PostgreSQL and Redis. Four
clients stream GET /readyz, GET /healthz and admin POST /v1/agents, each on a
fresh connection; one more request is deliberately in flight (its body still
arriving) when SIGTERM is sent. Then:

- every request that got a response got a complete 2xx;
- connection errors happen only once the server is shutting down, never before;
- the in-flight request completes;
- every agent the event store recorded was answered with a 201 (nothing was
  written and then dropped);
- the process exits 0 within the graceful timeout.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from infrastructure.eventstore import open_event_store
from infrastructure.settings import Settings
from tests.conftest import PRODUCTION_SECRETS
from tests.servers import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
GRACEFUL_TIMEOUT = 20.0  # what `widgets serve` gives the server to drain
CLIENTS = 4


def widgets(*args: str) -> list[str]:
    """The `widgets` entry point, as `uv run` from the checkout starts it (the image runs it directly)."""
    uv = shutil.which("uv")
    if uv:
        return [uv, "run", "--no-sync", "widgets", *args]
    return [str(Path(sys.executable).with_name("widgets")), *args]


@dataclass(frozen=True)
class Outcome:
    kind: str  # ok, refused, dropped (no response at all), truncated, bad_status
    what: str
    started: float
    ended: float
    status: int | None = None
    detail: str = ""


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Outcome:
    what = f"{method} {path}"
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=GRACEFUL_TIMEOUT)
    try:
        try:
            conn.connect()
        except OSError as error:
            return Outcome("refused", what, started, time.monotonic(), detail=repr(error))
        try:
            conn.request(method, path, body=body, headers={"Connection": "close", **(headers or {})})
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as error:
            return Outcome("dropped", what, started, time.monotonic(), detail=repr(error))
        try:
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            return Outcome("truncated", what, started, time.monotonic(), response.status, repr(error))
        ok = 200 <= response.status < 300
        if ok and method == "POST":
            ok = response.status == 201 and "id" in json.loads(data)
        return Outcome("ok" if ok else "bad_status", what, started, time.monotonic(), response.status, data[:200].decode(errors="replace"))
    finally:
        conn.close()


def stream(port: int, token: str, index: int, stop: threading.Event, outcomes: list[Outcome]) -> None:
    admin = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    n = 0
    while not stop.is_set():
        kind = (n + index) % 3
        if kind == 0:
            outcome = request(port, "GET", "/readyz")
        elif kind == 1:
            outcome = request(port, "GET", "/healthz")
        else:
            body = json.dumps({"name": f"agent {index}-{n}"}).encode()
            outcome = request(port, "POST", "/v1/agents", body, admin)
        outcomes.append(outcome)
        n += 1
        if outcome.kind == "refused":
            time.sleep(0.02)


def slow_body_request(port: int, token: str, headers_sent: threading.Event, finish: threading.Event) -> Outcome:
    """POST /v1/agents whose body arrives in two parts, the second only after `finish` is set."""
    body = json.dumps({"name": "in flight across SIGTERM"}).encode()
    head = (
        f"POST /v1/agents HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=GRACEFUL_TIMEOUT) as sock:
        sock.sendall(head + body[:7])
        headers_sent.set()
        finish.wait(GRACEFUL_TIMEOUT)
        sock.sendall(body[7:])
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status_line = received.split(b"\r\n", 1)[0].decode(errors="replace")
    ok = status_line.startswith("HTTP/1.1 201")
    return Outcome("ok" if ok else "bad_status", "slow POST /v1/agents", started, time.monotonic(), detail=status_line)


def wait_ready(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}"
        if request(port, "GET", "/readyz").status == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"/readyz did not answer 200 within {timeout}s:\n{log.read_text()[-3000:]}")


def test_sigterm_during_a_stream_of_requests_drains_every_accepted_request(
    tmp_path: Path, pg_server_url: str, pg_schema: str, redis_server_url: str, redis_prefix: str,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIDGETS_")}
    env.update(
        WIDGETS_DATABASE_URL=pg_server_url,
        WIDGETS_DATABASE_SCHEMA=pg_schema,
        WIDGETS_REDIS_URL=redis_server_url,
        WIDGETS_REDIS_PREFIX=redis_prefix,
        WIDGETS_PROJECTIONS="inprocess",
        WIDGETS_DATA_DIR=str(tmp_path / "var"),
        WIDGETS_LOG_FORMAT="json",
        WIDGETS_LOG_LEVEL="warning",
        WIDGETS_AUTH_SECRET=PRODUCTION_SECRETS["auth_secret"],
        WIDGETS_DATA_KEY=PRODUCTION_SECRETS["data_key"],
    )
    token = subprocess.run(widgets("token", "--org", "o1"), env=env, cwd=ROOT, capture_output=True, text=True,
                           check=True, timeout=60).stdout.strip()
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(widgets("serve", "--host", "127.0.0.1", "--port", str(port)), env=env, cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(port, process, log)

        stop = threading.Event()
        outcomes: list[Outcome] = []
        clients = [threading.Thread(target=stream, args=(port, token, i, stop, outcomes)) for i in range(CLIENTS)]
        for client in clients:
            client.start()
        time.sleep(1.5)

        headers_sent, finish = threading.Event(), threading.Event()
        slow: list[Outcome] = []
        slow_client = threading.Thread(target=lambda: slow.append(slow_body_request(port, token, headers_sent, finish)))
        slow_client.start()
        assert headers_sent.wait(10)
        time.sleep(0.2)  # the server has read the request line and headers: it is in flight

        sigterm_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        finish.set()  # the rest of the body arrives while the server is draining
        try:
            exit_code = process.wait(timeout=GRACEFUL_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {GRACEFUL_TIMEOUT}s after SIGTERM:\n{log.read_text()[-3000:]}")
        exited_at = time.monotonic()
        stop.set()
        for client in (*clients, slow_client):
            client.join(timeout=GRACEFUL_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    server_log = log.read_text()[-3000:]
    assert exit_code == 0, f"exit status {exit_code} after SIGTERM:\n{server_log}"
    assert exited_at - sigterm_at < GRACEFUL_TIMEOUT

    counts = Counter(o.kind for o in outcomes)
    before = [o for o in outcomes if o.ended < sigterm_at]
    assert {o.what for o in before if o.kind == "ok"} == {"GET /readyz", "GET /healthz", "POST /v1/agents"}, counts

    answered_badly = [o for o in outcomes if o.kind in {"truncated", "bad_status"}]
    assert not answered_badly, f"responses that were not a complete 2xx: {answered_badly[:5]}\n{server_log}"
    early_errors = [o for o in outcomes if o.kind in {"refused", "dropped"} and o.ended < sigterm_at]
    assert not early_errors, f"connection errors before SIGTERM: {early_errors[:5]}"
    assert [o.kind for o in slow] == ["ok"], f"the request in flight at SIGTERM: {slow}\n{server_log}"

    # Every agent the event store holds was answered with a 201: none written and then dropped.
    created = sum(1 for o in outcomes if o.kind == "ok" and o.what == "POST /v1/agents") + 1  # + the slow one
    settings = Settings(database_url=pg_server_url, database_schema=pg_schema, data_dir=str(tmp_path / "var"), **PRODUCTION_SECRETS)
    store = open_event_store(settings)
    try:
        recorded = len(store.recorder.select_notifications(start=1, limit=1_000_000))
    finally:
        store.close()
    assert recorded == created, f"{recorded} events recorded, {created} creations answered 201 ({counts})"
