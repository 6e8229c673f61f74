"""Granian against uvicorn, one worker each, on a bare Litestar route and on our app's `/healthz`.

    uv run python -m tests.bench.bench_servers [--duration 10] [--runs 3] [--connections 64]

Each server runs on 127.0.0.1 with one worker pinned to core 0 (`taskset -c 0`),
and wrk loads it from core 1 over loopback. Runs are interleaved (every server
and route once, then again) so that drift on the machine hits all of them alike,
and the table shows the median of the runs. Needs `wrk` (`apt-get install -y wrk`).
Our app is started in its embedded mode from a temporary folder; `/healthz`
touches no store, so the figure is the server plus our middleware and routing.

Besides req/s and p99 (wall-clock figures, which other load on the machine
distorts), the table shows the server's CPU time per request (user + system,
all its processes, read from /proc): with one saturated worker, req/s is about
1 / that, and it barely moves when other processes compete for the cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
from litestar import Litestar, get

from tests.bench.common import free_port, group_cpu_seconds, parse_wrk, pinned

BARE_APP = "tests.bench.bench_servers:bare_app"
OUR_APP = "api.app:create_app"


class Pong(msgspec.Struct):
    status: str
    count: int


@get("/ping")
async def ping() -> Pong:
    return Pong(status="ok", count=1)


def bare_app() -> Litestar:
    """A Litestar app with one route returning a small msgspec struct: the server's own ceiling."""
    return Litestar(route_handlers=[ping], openapi_config=None, debug=False)


@dataclass(frozen=True)
class Target:
    label: str
    factory: str
    path: str


TARGETS = (Target("bare Litestar /ping", BARE_APP, "/ping"), Target("our app /healthz", OUR_APP, "/healthz"))


def server_command(server: str, factory: str, port: int) -> list[str]:
    if server == "granian":
        return [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-ws", factory]
    return [sys.executable, "-m", "uvicorn", "--factory", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
            "--no-access-log", factory]


SERVERS = ("granian", "uvicorn")


def wait_until_serving(port: int, path: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before serving")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing served http://127.0.0.1:{port}{path} within {timeout}s")


@dataclass(frozen=True)
class Measure:
    requests_per_second: float
    p99_ms: float
    errors: int
    requests: int
    cpu_us_per_request: float | None = None


def measure_of(output: str) -> Measure:
    run = parse_wrk(output)
    return Measure(run.requests_per_second, run.p99_ms, run.errors + run.non_2xx, run.requests)


def wrk(port: int, path: str, duration: int, connections: int) -> Measure:
    command = pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", f"http://127.0.0.1:{port}{path}"])
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30, check=True)
    return measure_of(done.stdout)


def measure(server: str, target: Target, duration: int, connections: int, env: dict[str, str]) -> Measure:
    port = free_port()
    process = subprocess.Popen(pinned(0, server_command(server, target.factory, port)), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_until_serving(port, target.path, process)
        wrk(port, target.path, 2, connections)  # warm-up, not counted
        cpu_before = group_cpu_seconds(process.pid)
        found = wrk(port, target.path, duration, connections)
        cpu_after = group_cpu_seconds(process.pid)
        if cpu_before is None or cpu_after is None or not found.requests:
            return found
        return dataclasses.replace(found, cpu_us_per_request=(cpu_after - cpu_before) / found.requests * 1e6)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="runs per server and route; the median is shown (default 3)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="widgets-bench-") as data_dir:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WIDGETS_")}
        env.update(WIDGETS_DATA_DIR=data_dir, WIDGETS_LOG_LEVEL="warning", WIDGETS_LOG_FORMAT="json",
                   PYTHONPATH=str(root) + os.pathsep + env.get("PYTHONPATH", ""))
        results: dict[tuple[str, str], list[Measure]] = {}
        for run in range(args.runs):
            for target in TARGETS:
                for server in SERVERS if run % 2 == 0 else tuple(reversed(SERVERS)):
                    found = measure(server, target, args.duration, args.connections, env)
                    results.setdefault((server, target.label), []).append(found)
                    print(f"run {run + 1}: {server:8} {target.label:22} {found.requests_per_second:9.0f} req/s "
                          f"p99 {found.p99_ms:7.2f} ms  cpu {found.cpu_us_per_request or 0:6.1f} us/req  "
                          f"errors {found.errors}", file=sys.stderr, flush=True)
    print(f"\n{args.runs} x {args.duration} s, {args.connections} connections, one worker on core 0, wrk on core 1 "
          f"(median of runs)\n")
    print(f"| {'route':22} | {'server':8} | {'req/s':>8} | {'p99 ms':>7} | {'CPU us/req':>10} | {'errors':>6} "
          f"| {'req/s vs uvicorn':>16} | {'CPU vs uvicorn':>14} |")
    print(f"| {'-' * 22} | {'-' * 8} | {'-' * 7}: | {'-' * 6}: | {'-' * 9}: | {'-' * 5}: | {'-' * 15}: | {'-' * 13}: |")
    for target in TARGETS:
        def medians(server: str) -> tuple[float, float, float]:
            runs = results[(server, target.label)]
            cpu = [m.cpu_us_per_request for m in runs if m.cpu_us_per_request is not None]
            return (statistics.median(m.requests_per_second for m in runs), statistics.median(m.p99_ms for m in runs),
                    statistics.median(cpu) if cpu else float("nan"))

        base_rps, _, base_cpu = medians("uvicorn")
        for server in SERVERS:
            rps, p99, cpu = medians(server)
            errors = sum(m.errors for m in results[(server, target.label)])
            print(f"| {target.label:22} | {server:8} | {rps:8.0f} | {p99:7.2f} | {cpu:10.1f} | {errors:6d} "
                  f"| {rps / base_rps:16.2f} | {cpu / base_cpu:14.2f} |")


if __name__ == "__main__":
    main()
