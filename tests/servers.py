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


class PrivatePgBouncer:
    """Debian's PgBouncer (1.18) in transaction mode in front of a PostgreSQL on loopback, run as `postgres`
    (it refuses to run as root), trusting every user as the PostgreSQL it fronts does."""

    def __init__(self, server_port: int, port: int | None = None, pool_size: int = 20) -> None:
        self.server_port, self.port, self.pool_size = server_port, port or free_port(), pool_size
        self.folder = Path(tempfile.mkdtemp(prefix="widgets-pgbouncer-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PrivatePgBouncer:
        executable = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        (self.folder / "users.txt").write_text('"postgres" ""\n')
        (self.folder / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.folder / 'users.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {self.pool_size}\nmax_client_conn = 2000\n"
            f"logfile = {self.folder / 'pgbouncer.log'}\npidfile = {self.folder / 'pgbouncer.pid'}\n"
            "log_connections = 0\nlog_disconnections = 0\n"
        )
        user: dict[str, str] = {}
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            for child in self.folder.iterdir():
                shutil.chown(child, "postgres", "postgres")
            user = {"user": "postgres", "group": "postgres"}
        self._process = subprocess.Popen([executable, str(self.folder / "pgbouncer.ini")], cwd=self.folder,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **user)
        try:
            wait_for_port(self.port, timeout=15)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


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
