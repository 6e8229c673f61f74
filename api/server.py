"""The production ASGI server behind `widgets serve` and the container image: granian.

Chosen by measuring (`uv run python -m tests.bench.bench_servers`), one worker
pinned to one core against uvicorn with uvloop and httptools: granian spent
about three quarters of uvicorn's CPU time per request, on a bare Litestar
route (62 against 83 µs) and on our own app's /healthz (84 against 109 µs),
steady across runs; with one busy worker that is roughly 1.3 times the
requests a second per core. It also ends with status 0 after SIGTERM, where
uvicorn re-raises the signal and so ends "killed by SIGTERM" (143).

On SIGTERM or SIGINT the main process closes its listening socket and asks every
worker to stop: a worker stops accepting, finishes the requests it has already
read (including one whose body is still arriving), closes idle keep-alive
connections, runs the app's shutdown (stores closed), and exits. A worker
still busy after `graceful_timeout` seconds is killed. A worker that dies on
its own (its app failed to start, for example because the stores stayed
unreachable past WIDGETS_STARTUP_TIMEOUT) stops the whole server with status 1,
so that the supervisor (Kubernetes, compose) restarts it with backoff rather
than this process respawning it in a loop.
"""

from __future__ import annotations

import errno
import math
import socket
import sys


def claim_port(host: str, port: int) -> socket.socket | None:
    """Exit at once, naming the port, when it is taken. Granian's workers bind with SO_REUSEPORT, so a second
    server would otherwise start beside the first and the kernel would split requests between them.

    Two checks: a name only one `widgets serve` on this address and port can hold (an abstract Unix socket, gone
    with its process), which settles two servers starting at the same moment; then a bind of the port itself
    without SO_REUSEPORT, which fails while anything listens there. Answers the name, to be held while serving."""
    held = None
    if sys.platform == "linux":
        held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            held.bind(f"\0anyreach-widgets-serve {host} {port}")
        except OSError:
            held.close()
            raise SystemExit(f"Port {port} is already in use: another `widgets serve` is starting or serving on {host}:{port}. "
                             "Stop it, or choose another port (--port, WIDGETS_PORT).") from None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed server's TIME_WAIT is no obstacle
            probe.bind(address)
    except OSError as error:
        if held is not None:
            held.close()
        if error.errno == errno.EADDRINUSE:
            raise SystemExit(f"Port {port} is already in use on {host}: stop what listens there, or choose another "
                             "port (--port, WIDGETS_PORT).") from None
        raise SystemExit(f"Cannot bind port {port} on {host}: {error.strerror or error}.") from None
    return held


def run_server(app_factory_path: str, host: str, port: int, workers: int, graceful_timeout: float) -> None:
    """Serve the app that `app_factory_path` ("module:function") builds, in `workers` processes, until SIGTERM."""
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    Server(
        app_factory_path,
        address=host,
        port=port,
        interface=Interfaces.ASGI,  # with lifespan: the app's on_startup / on_shutdown run in every worker
        factory=True,  # each worker calls the factory, so nothing built in this process is shared across fork
        workers=max(1, workers),
        http=HTTPModes.auto,
        websockets=False,  # no route of ours is a websocket
        log_level=LogLevels.warning,  # our own structured logs say what matters; no access log
        log_access=False,
        respawn_failed_workers=False,
        workers_kill_timeout=max(1, math.ceil(graceful_timeout)),
    ).serve()
