"""Sends one webhook attempt: signed to the Standard Webhooks specification, and never to an address it may not reach.

The name in an endpoint's URL is resolved when the attempt connects, by the
connection pool's network backend below, and every address it resolves to is
checked (`domain.webhook_url.is_public_address`) before a socket is opened:
a name that points at loopback, a private network or the cloud's metadata
address is refused however it got there (a changed DNS record, a hosts file,
an IPv4-mapped IPv6 answer). TLS still verifies the certificate against the
name, since the stream is opened to the checked address but wrapped with the
URL's host. Redirects are never followed (httpcore has no such feature), and
a response body is read only up to `MAX_RESPONSE_BYTES`: the status code is
all a delivery needs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
from httpcore import AsyncNetworkBackend, AsyncNetworkStream
from httpcore._backends.anyio import AnyIOBackend

from domain.webhook_url import is_public_address

TIMEOUT = 10.0  # seconds for the whole attempt: connect, send, and the response's status line and headers
MAX_RESPONSE_BYTES = 1024
USER_AGENT = b"Anyreach-Webhooks/1"

Resolver = Callable[[str, int], Awaitable[list[str]]]


class AddressNotAllowed(OSError):
    """The endpoint's name resolved to an address deliveries may not reach."""


def sign(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: `v1,` + base64 HMAC-SHA256 over `id.timestamp.body`."""
    digest = hmac.new(secret, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: Sequence[bytes], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret that signs (space-separated), current first."""
    return " ".join(sign(s, message_id, timestamp, body) for s in secrets)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class CheckedBackend(AsyncNetworkBackend):
    """Opens TCP connections only to addresses deliveries may reach, checked after name resolution."""

    def __init__(self, allow_private: bool = False, resolver: Resolver = system_resolver) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self._backend = AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> AsyncNetworkStream:
        addresses = await self.allowed_addresses(host, port)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                       socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failed:
                error = failed
        assert error is not None
        raise error

    async def allowed_addresses(self, host: str, port: int) -> list[str]:
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await self.resolver(host, port)
            except OSError as error:
                raise httpcore.ConnectError(f"name not resolved: {type(error).__name__}") from error
        if not addresses:
            raise httpcore.ConnectError("name not resolved")
        if not self.allow_private:
            # Any address that may not be reached refuses the whole name: a name that answers with one public and
            # one private address is not tried on the public one and then, on failure, on the private one.
            for address in addresses:
                if not is_public_address(ipaddress.ip_address(address.split("%")[0])):
                    raise AddressNotAllowed("the endpoint's name resolves to an address deliveries may not reach")
        return addresses

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> AsyncNetworkStream:
        raise AddressNotAllowed("deliveries go over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


@dataclass(frozen=True)
class Attempt:
    """What one attempt got: the status code, or why there was none (`timeout`, `address_not_allowed`, ...)."""

    status: int | None
    error: str | None
    seconds: float

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookSender:
    """Sends attempts over one small connection pool per endpoint (keep-alive, at most `per_endpoint` connections).

    One pool per endpoint rather than one for all: httpcore matches each request against every connection of
    its pool, which costs O(connections) per request, and an endpoint's own attempts are bounded anyway."""

    MAX_POOLS = 2000

    def __init__(self, allow_private: bool = False, timeout: float = TIMEOUT, resolver: Resolver = system_resolver,
                 ssl_context: ssl.SSLContext | None = None, per_endpoint: int = 4) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        self.per_endpoint = per_endpoint
        self._ssl = ssl_context or ssl.create_default_context()
        self._backend = CheckedBackend(allow_private, resolver)
        self._pools: OrderedDict[str, httpcore.AsyncConnectionPool] = OrderedDict()

    def _pool(self, key: str) -> httpcore.AsyncConnectionPool:
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = httpcore.AsyncConnectionPool(
                ssl_context=self._ssl, max_connections=self.per_endpoint, max_keepalive_connections=self.per_endpoint,
                keepalive_expiry=30.0, retries=0, network_backend=self._backend)
            while len(self._pools) > self.MAX_POOLS:  # the least recently used goes (its idle connections close)
                _, old = self._pools.popitem(last=False)
                if not old.connections or all(c.is_idle() for c in old.connections):
                    asyncio.get_running_loop().create_task(old.aclose())
        else:
            self._pools.move_to_end(key)
        return pool

    async def send(self, url: str, message_id: str, timestamp: int, body: bytes, secrets: Sequence[bytes],
                   endpoint: str = "") -> Attempt:
        started = time.monotonic()
        scheme = url.split(":", 1)[0].lower()
        if scheme != "https" and not (self.allow_private and scheme == "http"):
            return Attempt(None, "scheme_not_allowed", 0.0)
        headers = [
            (b"content-type", b"application/json"), (b"user-agent", USER_AGENT),
            (b"webhook-id", message_id.encode()), (b"webhook-timestamp", str(timestamp).encode()),
            (b"webhook-signature", signature_header(secrets, message_id, timestamp, body).encode()),
        ]
        try:
            async with asyncio.timeout(self.timeout):
                async with self._pool(endpoint or url).stream("POST", url, headers=headers, content=body, extensions={
                        "timeout": {"connect": self.timeout, "read": self.timeout, "write": self.timeout, "pool": self.timeout}}) as response:
                    read = 0
                    async for chunk in response.aiter_stream():
                        read += len(chunk)
                        if read >= MAX_RESPONSE_BYTES:
                            break  # the status is what counts; a large body is not read (the connection is dropped)
                    return Attempt(response.status, None, time.monotonic() - started)
        except AddressNotAllowed:
            return Attempt(None, "address_not_allowed", time.monotonic() - started)
        except (TimeoutError, httpcore.TimeoutException):
            return Attempt(None, "timeout", time.monotonic() - started)
        except httpcore.ConnectError as error:
            cause = error.__cause__ or error.__context__
            kind = "address_not_allowed" if isinstance(cause, AddressNotAllowed) else "connect_failed"
            return Attempt(None, kind, time.monotonic() - started)
        except (httpcore.UnsupportedProtocol, httpcore.LocalProtocolError, ValueError):
            return Attempt(None, "bad_url", time.monotonic() - started)
        except (httpcore.NetworkError, httpcore.RemoteProtocolError, ssl.SSLError, OSError) as error:
            return Attempt(None, "tls_failed" if isinstance(error, ssl.SSLError) or "SSL" in repr(error) else "network_error",
                           time.monotonic() - started)

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            await pool.aclose()
