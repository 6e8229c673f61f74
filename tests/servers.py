"""Private PostgreSQL and Redis servers that a test starts, stops and restarts itself.

The machine's shared servers are never disrupted: fault tests and machines
without running servers use these, on their own ports, from local binaries.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from pytest_redis.executor.process import RedisExecutor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class PrivateRedis:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.datadir = Path(tempfile.mkdtemp(prefix="widgets-redis-"))
        self._executor: RedisExecutor | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self._executor = RedisExecutor(
            executable=shutil.which("redis-server") or "/usr/bin/redis-server",
            databases=4, redis_timeout=30, loglevel="warning", host="127.0.0.1", port=self.port,
            datadir=self.datadir, save="", appendonly="no",
        )
        self._executor.start()
        return self

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.stop()
            self._executor = None


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else (shutil.which(name) or name)


class PrivatePostgres:
    """A throwaway cluster run as the `postgres` user (PostgreSQL refuses to run as root)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.datadir = Path(tempfile.mkdtemp(prefix="widgets-pg-"))
        self.logfile = self.datadir.with_suffix(".log")
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_postgres, *args], check=True, capture_output=True)

    def start(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.datadir, "postgres", "postgres")
            self.logfile.touch()
            shutil.chown(self.logfile, "postgres", "postgres")
        if not (self.datadir / "PG_VERSION").exists():
            self._run(_pg_bin("initdb"), "-D", str(self.datadir), "-U", "postgres", "-A", "trust", "--no-sync")
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w", "start",
            "-o", f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off",
        )
        wait_for_port(self.port)
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop")


@contextmanager
def fresh_schema(pg_url: str) -> Iterator[str]:
    """A new PostgreSQL schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
