"""The webhook sender against real sockets on loopback: no connection is ever opened to an address deliveries may
not reach, however the name resolves (the resolver is stubbed at the socket level, as a hosts file or a
rebinding DNS server would answer); no redirect is followed; a slow endpoint times out; signatures verify with
the Standard Webhooks reference library, with every secret that signs."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

from infrastructure.webhook_sender import WebhookSender, signature_header
from tests.webhook_receiver import receiving

NOT_REACHABLE = ["127.0.0.1", "127.8.9.10", "10.0.0.5", "172.16.3.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
                 "224.0.0.251", "255.255.255.255", "::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "fe80::1", "fc00::7",
                 "ff02::1", "64:ff9b::7f00:1", "2002:7f00:1::1", "::"]


class Listener:
    """A TCP socket on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    running = Listener()
    yield running
    running.close()


def resolving_to(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """Names answered as a hosts file or a DNS server under an attacker's control would answer them."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (a, int(port), 0, 0) if ":" in a else (a, int(port))) for a in answers[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def send(sender: WebhookSender, url: str, secrets: list[bytes] | None = None) -> Any:
    async def go() -> Any:
        try:
            return await sender.send(url, "msg_1", int(time.time()), b'{"type":"x"}', secrets or [b"k" * 24])
        finally:
            await sender.close()

    return asyncio.run(go())


@settings(max_examples=len(NOT_REACHABLE) * 2, deadline=None)
@given(address=st.sampled_from(NOT_REACHABLE), scheme=st.sampled_from(["https", "http"]))
def test_a_name_that_resolves_where_deliveries_may_not_go_is_never_connected(address: str, scheme: str) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        listener = Listener()
        try:
            resolving_to(monkeypatch, {"hooks.customer.example": [address]})
            sender = WebhookSender(allow_private=False)
            attempt = send(sender, f"{scheme}://hooks.customer.example:{listener.port}/in")
            assert attempt.status is None
            assert attempt.error == ("address_not_allowed" if scheme == "https" else "scheme_not_allowed")
            assert listener.accepted == 0
        finally:
            listener.close()


def test_one_private_answer_among_public_ones_refuses_the_name(monkeypatch: pytest.MonkeyPatch, listener: Listener) -> None:
    resolving_to(monkeypatch, {"mixed.customer.example": ["93.184.215.14", "127.0.0.1"]})
    attempt = send(WebhookSender(), f"https://mixed.customer.example:{listener.port}/")
    assert attempt.error == "address_not_allowed" and listener.accepted == 0


def test_address_literals_are_checked_too(listener: Listener) -> None:
    for host in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"):
        attempt = send(WebhookSender(), f"https://{host}:{listener.port}/")
        assert attempt.error == "address_not_allowed", host
    assert listener.accepted == 0


def test_the_development_switch_lets_deliveries_reach_loopback() -> None:
    with receiving() as receiver:
        attempt = send(WebhookSender(allow_private=True), receiver.url("/dev"))
        assert attempt.status == 200 and attempt.succeeded


def test_redirects_are_not_followed() -> None:
    with receiving() as receiver:
        receiver.statuses["/moved"] = [307]
        attempt = send(WebhookSender(allow_private=True), receiver.url("/moved"))
        assert attempt.status == 307 and not attempt.succeeded
        assert [r.path for r in receiver.received] == ["/moved"]


def test_a_slow_endpoint_times_out() -> None:
    with receiving() as receiver:
        receiver.delays["/slow"] = 2.0
        attempt = send(WebhookSender(allow_private=True, timeout=0.3), receiver.url("/slow"))
        assert attempt.status is None and attempt.error == "timeout"


def test_every_signing_secret_verifies_with_the_reference_library() -> None:
    secrets = [b"new-secret-bytes-0123456789", b"old-secret-bytes-9876543210"]
    with receiving() as receiver:
        attempt = send(WebhookSender(allow_private=True), receiver.url("/signed"), secrets)
        assert attempt.succeeded
        request = receiver.received[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in secrets:  # during a rotation's 24 h, a receiver holding either secret accepts the delivery
        whsec = "whsec_" + base64.b64encode(secret).decode()
        assert Webhook(whsec).verify(request.body, request.headers) == {"type": "x"}
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + base64.b64encode(b"a-stranger's-secret-000000").decode()).verify(request.body, request.headers)


@given(message_id=st.text(min_size=1, max_size=40), timestamp=st.integers(0, 2**34), body=st.text(max_size=200),
       secret=st.binary(min_size=16, max_size=64))
def test_signatures_are_the_specifications(message_id: str, timestamp: int, body: str, secret: bytes) -> None:
    expected = Webhook("whsec_" + base64.b64encode(secret).decode()).sign(message_id, _at(timestamp), body)
    assert signature_header([secret], message_id, timestamp, body.encode()) == expected


def _at(timestamp: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC)


def test_a_response_body_is_read_only_up_to_the_bound() -> None:
    """An endpoint that announces 100 MB and then trickles: the status is taken after 1 KiB, well before the timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n" + b"x" * 4096)
        stop.wait(10)  # the rest never comes
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        attempt = send(WebhookSender(allow_private=True, timeout=5.0), f"http://127.0.0.1:{port}/big")
    finally:
        stop.set()
        thread.join()
        server.close()
    assert attempt.status == 200 and attempt.error is None
