"""Ending a room through LiveKit's server API (`DeleteRoom`), against HTTP servers on loopback that answer as
livekit-server does, refuse, or never answer: within a second whatever happens, every outcome counted, the
failures logged with the room and nothing secret."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from livekit import api
from structlog.testing import capture_logs

from infrastructure.livekit_rooms import LiveKitRooms, http_url
from infrastructure.metrics import LIVEKIT_ROOM_ENDS

KEY, SECRET = "APIroomtest", "a-secret-of-enough-length-for-livekit-0123"


class FakeLiveKit(http.server.ThreadingHTTPServer):
    """Answers `DeleteRoom` the way `mode` says: `ended` (200), `absent` (404 not_found), `denied` (401), `silent`."""

    daemon_threads = True

    def __init__(self, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = mode
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: FakeLiveKit

    def do_POST(self) -> None:  # noqa: N802 - the standard library's name
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        mode = self.server.mode
        if mode == "silent":
            self.server.release.wait(10)
            return
        status, payload = {"ended": (200, b""), "absent": (404, b'{"code":"not_found","msg":"requested room does not exist"}'),
                           "denied": (401, b'{"code":"unauthenticated","msg":"invalid token"}')}[mode]
        self.send_response(status)
        self.send_header("content-type", "application/protobuf" if status == 200 else "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def livekit(request: pytest.FixtureRequest) -> Iterator[FakeLiveKit]:
    server = FakeLiveKit(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def rooms(livekit: FakeLiveKit) -> Iterator[LiveKitRooms]:
    rooms = LiveKitRooms(livekit.url, KEY, SECRET)
    yield rooms
    rooms.close()


def count(outcome: str) -> float:
    return LIVEKIT_ROOM_ENDS.labels(outcome)._value.get()


def test_the_server_api_is_the_websocket_url_over_http() -> None:
    assert http_url("ws://localhost:7880") == "http://localhost:7880"
    assert http_url("wss://lk.example.com/base") == "https://lk.example.com/base"
    assert http_url("https://lk.example.com") == "https://lk.example.com"


@pytest.mark.parametrize("livekit", ["ended"], indirect=True)
def test_the_room_is_deleted_with_a_token_that_may_create_rooms(livekit: FakeLiveKit, rooms: LiveKitRooms) -> None:
    before = count("ended")
    assert rooms.end_room("conv_abc_1234")
    assert rooms.end_room("conv_abc_5678")  # the same session and loop, again
    assert count("ended") == before + 2
    (path, headers, body), _ = livekit.requests
    assert path == "/twirp/livekit.RoomService/DeleteRoom"
    assert api.DeleteRoomRequest.FromString(body).room == "conv_abc_1234"
    claims = api.TokenVerifier(KEY, SECRET).verify(headers["authorization"].removeprefix("Bearer "))
    assert claims.video is not None and claims.video.room_create


@pytest.mark.parametrize("livekit", ["absent"], indirect=True)
def test_a_room_already_gone_counts_as_ended_and_logs_nothing(livekit: FakeLiveKit, rooms: LiveKitRooms) -> None:
    before = count("absent")
    with capture_logs() as logs:
        assert rooms.end_room("conv_gone_1")
    assert count("absent") == before + 1 and logs == []


@pytest.mark.parametrize("livekit", ["silent"], indirect=True)
def test_a_livekit_that_does_not_answer_is_given_up_on_within_a_second(livekit: FakeLiveKit, rooms: LiveKitRooms) -> None:
    before = count("timeout")
    with capture_logs() as logs:
        began = time.monotonic()
        assert not rooms.end_room("conv_slow_1")
        took = time.monotonic() - began
    assert 0.9 <= took < 1.5, took
    assert count("timeout") == before + 1
    assert [(e["event"], e["room"], e["reason"]) for e in logs] == [("livekit_room_not_ended", "conv_slow_1", "timeout")]
    assert SECRET not in repr(logs) and "Bearer" not in repr(logs)


@pytest.mark.parametrize("livekit", ["denied"], indirect=True)
def test_a_refusal_is_logged_and_counted(livekit: FakeLiveKit, rooms: LiveKitRooms) -> None:
    before = count("refused")
    with capture_logs() as logs:
        assert not rooms.end_room("conv_denied_1")
    assert count("refused") == before + 1
    assert [(e["event"], e["reason"], e["status"]) for e in logs] == [("livekit_room_not_ended", "refused", 401)]
    assert SECRET not in repr(logs)


def test_a_livekit_that_is_not_there_fails_fast() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    rooms = LiveKitRooms(f"ws://127.0.0.1:{port}", KEY, SECRET)
    before = count("error")
    try:
        began = time.monotonic()
        with capture_logs() as logs:
            assert not rooms.end_room("conv_nowhere_1")
        assert time.monotonic() - began < 1.0
    finally:
        rooms.close()
    assert count("error") == before + 1
    assert [(e["event"], e["reason"]) for e in logs] == [("livekit_room_not_ended", "error")]
