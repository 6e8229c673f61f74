"""The request limits (api/request_limits.py): 414 and 431 as problem documents, and what granian refuses before them.

In the app, on both wirings: a path and query over 8192 bytes is 414
`uri_too_long`, header names and values over 32768 bytes in total are 431
`request_header_fields_too_large`, on every route (and on paths that are no
route), before authentication, with the caller's `X-Request-Id`; one byte less
is answered as usual, and nothing refused is written.

On `widgets serve` (granian, HTTP/1.1): the same answers through the real
server, and granian's own refusals, which come before the app and so cannot be
problem documents: a request target of 65,535 bytes or more (414), more than
100 header fields or a request head beyond its 408 KiB read buffer (431), bytes
that are not HTTP (400). Each is an empty-bodied answer that closes the
connection, and the server answers the next request (docs/reliability.md).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client import REGISTRY

from api.request_limits import HEADERS_LIMIT, URI_LIMIT
from application.store import EventStore
from infrastructure.settings import Settings
from tests.api.conftest import PROBLEM_JSON, Admin, assert_problem
from tests.api.public_helpers import ALLOWED
from tests.conftest import admin_headers
from tests.live_server import served

GRANIAN_TARGET_LIMIT = 65_535  # a request target this long or longer: granian's 414 (hyper refuses a URI of u16::MAX bytes)
GRANIAN_HEADER_COUNT = 100  # header fields granian passes on; one more: its 431
GRANIAN_BUFFER = 8192 + 4096 * 100  # granian's HTTP/1 read buffer (HTTP1Settings.max_buffer_size): 417,792 bytes
UNKNOWN = "0b7e6a5e-2c3f-4d1a-9e8b-5f4c3d2e1a0b"


def header_bytes(client: TestClient[Litestar], path: str, headers: dict[str, str]) -> int:
    """The header names and values the client sends for this request, summed as the limit sums them."""
    return sum(len(k) + len(v) for k, v in client.build_request("GET", path, headers=headers).headers.raw)


def padded(client: TestClient[Litestar], path: str, headers: dict[str, str], total: int) -> dict[str, str]:
    """`headers` and one `X-Padding` header that bring the request's header bytes to exactly `total`."""
    base = header_bytes(client, path, {**headers, "X-Padding": ""})
    return {**headers, "X-Padding": "p" * (total - base)}


def with_query(path: str, total: int) -> str:
    """`path` with a query that makes the request target exactly `total` bytes."""
    return f"{path}?q={'a' * (total - len(path) - 3)}"


def requests_total(status: int, method: str = "GET") -> float:
    labels = {"route": "unmatched", "method": method, "status": str(status)}
    return REGISTRY.get_sample_value("widgets_http_requests_total", labels) or 0.0


def test_a_target_over_the_limit_is_414_and_one_at_it_is_answered(client: TestClient[Litestar], org_a: Admin) -> None:
    for path in ("/v1/widgets", "/healthz", f"/public/v1/widgets/{UNKNOWN}", "/no/such/route"):
        at_limit = client.get(with_query(path, URI_LIMIT), headers={**org_a.headers, "Origin": ALLOWED})
        assert at_limit.status_code != 414, path
        before = requests_total(414)
        body = assert_problem(client.get(with_query(path, URI_LIMIT + 1), headers=org_a.headers), 414, "uri_too_long")
        assert body["detail"] == f"The request's path and query are over {URI_LIMIT} bytes.", body
        assert requests_total(414) == before + 1, path
    # As sent, before percent-decoding: 2,731 encoded bytes of three each are one path over the limit.
    assert_problem(client.get("/v1/widgets/" + "%61" * 2731, headers=org_a.headers), 414, "uri_too_long")
    assert client.get("/v1/widgets/" + "%61" * 2726, headers=org_a.headers).status_code == 404


def test_headers_over_the_limit_are_431_and_at_it_are_answered(client: TestClient[Litestar], org_a: Admin) -> None:
    for path in ("/v1/widgets", "/healthz", f"/public/v1/widgets/{UNKNOWN}", "/no/such/route"):
        headers = {**org_a.headers, "Origin": ALLOWED}
        at_limit = client.get(path, headers=padded(client, path, headers, HEADERS_LIMIT))
        assert at_limit.status_code != 431, path
        assert header_bytes(client, path, padded(client, path, headers, HEADERS_LIMIT)) == HEADERS_LIMIT
        over = client.get(path, headers=padded(client, path, headers, HEADERS_LIMIT + 1))
        body = assert_problem(over, 431, "request_header_fields_too_large")
        assert body["detail"] == f"The request's header names and values are over {HEADERS_LIMIT} bytes in total.", body
        assert "access-control-allow-origin" not in over.headers  # refused before the widget's origins are looked at
    # Many small headers count as much as one large one.
    many = {f"X-Junk-{i}": "v" * 100 for i in range(400)}
    assert_problem(client.get("/v1/widgets", headers={**org_a.headers, **many}), 431, "request_header_fields_too_large")


def test_the_refusals_carry_the_request_id_say_nothing_to_head_and_write_nothing(
    client: TestClient[Litestar], org_a: Admin, store: EventStore, settings: Settings
) -> None:
    long_target = with_query("/v1/agents", URI_LIMIT + 1)
    mine = client.get(long_target, headers={"X-Request-Id": "trace-0123456789"})
    assert mine.headers["x-request-id"] == "trace-0123456789"
    generated = client.get(long_target, headers={"X-Request-Id": "bad id!"})
    assert generated.headers["x-request-id"].startswith("req_") and len(generated.headers["x-request-id"]) == 20
    head = client.head(long_target)
    assert head.status_code == 414 and head.content == b"" and head.headers["content-type"] == PROBLEM_JSON
    assert int(head.headers["content-length"]) == len(mine.content)
    position = (store.recorder.max_notification_id() or 0)
    headers = padded(client, "/v1/agents", admin_headers(settings, "org_a", "alice"), HEADERS_LIMIT + 1)
    for target in ("/v1/agents", long_target):  # a valid command, with a valid token: refused, not run
        response = client.post(target, json={"name": "Never made"}, headers=headers if target == "/v1/agents" else org_a.headers)
        assert response.status_code in (414, 431), response.text
    assert (store.recorder.max_notification_id() or 0) == position


# Through the real server.

@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after it


class Connection:
    """One HTTP/1.1 connection, on which requests are written as raw bytes and answers read one at a time."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=15)
        self.buffer = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def _more(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        self.buffer += chunk
        return bool(chunk)

    def send(self, request: bytes) -> Answer:
        try:
            self.sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before it has read all of a huge request
        while b"\r\n\r\n" not in self.buffer:
            assert self._more(), f"the connection closed without an answer: {self.buffer[:200]!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            assert self._more(), "the connection closed in the middle of a body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        closed = False
        if headers.get("connection", "").lower() == "close":
            self.sock.settimeout(5)
            closed = not self._more() and not self.buffer
        return Answer(int(status_line.split(" ")[1]), headers, body, closed)


def get(target: bytes, *extra: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(line + b"\r\n" for line in extra) + b"\r\n"


def assert_problem_answer(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status and answer.headers["content-type"] == PROBLEM_JSON, answer
    problem = json.loads(answer.body)
    assert problem["status"] == status and problem["code"] == code, problem
    assert answer.headers["x-request-id"], answer


def assert_refused_by_granian(url: str, request: bytes, status: int, what: str) -> None:
    with Connection(url) as connection:
        answer = connection.send(request)
    assert answer.status == status, f"{what}: {answer}"
    assert answer.body == b"" and answer.headers.get("content-length") == "0", f"{what}: {answer}"
    assert answer.closed and "content-type" not in answer.headers and "x-request-id" not in answer.headers, f"{what}: {answer}"
    with Connection(url) as connection:  # and the server is still up
        assert connection.send(get(b"/healthz")).status == 200, what


def test_the_real_server_answers_the_limits_as_problems_and_refuses_what_it_cannot_pass_on(
    embedded_settings: Settings, tmp_path: Path
) -> None:
    with served(embedded_settings, tmp_path / "serve.log") as server:
        token = admin_headers(embedded_settings, "org_a", "alice")["Authorization"].encode()
        auth = b"Authorization: " + token
        with Connection(server.url) as connection:  # the app's answers; the connection is kept open after each
            at = connection.send(get(with_query("/v1/widgets", URI_LIMIT).encode(), auth))
            assert at.status == 200 and not at.closed, at
            assert_problem_answer(connection.send(get(with_query("/v1/widgets", URI_LIMIT + 1).encode(), auth)), 414, "uri_too_long")
            # Granian adds no header of its own to those the client sent: the limit counts what arrives.
            padding = b"X-Padding: " + b"p" * (HEADERS_LIMIT - len(b"hostx") - len(auth) - len(b"x-padding") + 2)
            assert connection.send(get(b"/v1/widgets", auth, padding)).status == 200
            assert_problem_answer(connection.send(get(b"/v1/widgets", auth, padding + b"pp")), 431, "request_header_fields_too_large")
            # Up to granian's bounds, everything reaches the app and gets its problem answer.
            longest = get(b"/v1/widgets?q=" + b"a" * (GRANIAN_TARGET_LIMIT - 1 - len(b"/v1/widgets?q=")), auth)
            assert_problem_answer(connection.send(longest), 414, "uri_too_long")
            many = [b"X-J%d: v" % i for i in range(GRANIAN_HEADER_COUNT - 2)]  # with Host and Authorization: 100
            assert connection.send(get(b"/v1/widgets", auth, *many)).status == 200
            for size in (200_000, GRANIAN_BUFFER - 100):  # a request head of this many bytes, within granian's buffer
                big = get(b"/v1/widgets", auth, b"X-Padding: " + b"p" * (size - len(get(b"/v1/widgets", auth, b"X-Padding: "))))
                assert len(big) == size
                assert_problem_answer(connection.send(big), 431, "request_header_fields_too_large")
            assert connection.send(get(b"/healthz")).status == 200
        assert_refused_by_granian(server.url, get(b"/v1/widgets?q=" + b"a" * (GRANIAN_TARGET_LIMIT - len(b"/v1/widgets?q="))),
                                  414, "a 65,535-byte request target")
        assert_refused_by_granian(server.url, get(b"/" + b"a" * 100_000), 414, "a 100 KB path")
        assert_refused_by_granian(server.url, get(b"/healthz", *(b"X-J%d: v" % i for i in range(GRANIAN_HEADER_COUNT))),
                                  431, "101 header fields")
        assert_refused_by_granian(server.url, get(b"/healthz", b"X-Padding: " + b"p" * 1_000_000), 431, "a 1 MB header")
        assert_refused_by_granian(server.url, get(b"/healthz", b"X-A: a\x00b"), 400, "a NUL byte in a header")
        assert_refused_by_granian(server.url, get(b"/healthz", b"X A: b"), 400, "a space in a header name")
        assert_refused_by_granian(server.url, b"NOT HTTP AT ALL\r\n\r\n", 400, "not HTTP")
        assert_refused_by_granian(server.url, b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400, "an unknown HTTP version")
        assert server.process.poll() is None
        lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
        assert not [line for line in lines if line.get("level") in ("error", "critical")], lines
