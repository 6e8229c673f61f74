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


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """Ports for Redis Cluster nodes, each with its bus port (port + 10000) free too. Both stay below Linux's
    ephemeral range (32768 and up), so an outgoing connection cannot take one between this check and the bind."""
    import random

    found: list[int] = []
    while len(found) < count:
        port = random.randrange(12_000, 22_000)
        if port not in found and _port_is_free(port) and _port_is_free(port + 10_000):
            found.append(port)
    return found


class PrivateRedisCluster:
    """A Redis Cluster on loopback: `primaries` primaries with one replica each, made by `redis-cli --cluster
    create`. A node can be killed (SIGKILL) and started again; its replica takes over within about two
    node timeouts."""

    def __init__(self, primaries: int = 3, node_timeout_ms: int = 1000) -> None:
        self.ports = cluster_ports(primaries * 2)
        self.primaries_wanted = primaries
        self.node_timeout_ms = node_timeout_ms
        self.folder = Path(tempfile.mkdtemp(prefix="widgets-redis-cluster-"))
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])

    def start_node(self, port: int) -> None:
        folder = self.folder / str(port)
        folder.mkdir(exist_ok=True)
        self._processes[port] = subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(self.node_timeout_ms), "--cluster-replica-validity-factor", "0",
             "--save", "", "--appendonly", "no", "--dir", str(folder), "--loglevel", "warning",
             "--logfile", str(folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(port)

    def start(self) -> PrivateRedisCluster:
        try:
            for port in self.ports:
                self.start_node(port)
            subprocess.run(
                [shutil.which("redis-cli") or "/usr/bin/redis-cli", "--cluster", "create",
                 *[f"127.0.0.1:{p}" for p in self.ports], "--cluster-replicas", "1", "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )
            self.wait_until_healthy()
        except BaseException:
            self.stop()  # a cluster that did not come up leaves no process behind
            raise
        return self

    def _cli(self, port: int, *args: str) -> str:
        return subprocess.run([shutil.which("redis-cli") or "/usr/bin/redis-cli", "-p", str(port), *args],
                              capture_output=True, text=True, timeout=10).stdout

    def healthy(self) -> bool:
        """Every running node says the cluster is ok, and as many primaries run as it was made with."""
        running = [p for p, proc in self._processes.items() if proc.poll() is None]
        return bool(running) and all("cluster_state:ok" in self._cli(p, "cluster", "info") for p in running) and \
            len(self.primaries()) == self.primaries_wanted

    def wait_until_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return
            time.sleep(0.2)
        raise TimeoutError("the Redis Cluster did not become healthy")

    def nodes(self) -> list[tuple[int, str]]:
        """(port, role) of every node a running node knows to be alive."""
        for port, proc in self._processes.items():
            if proc.poll() is None:
                found = []
                for line in self._cli(port, "cluster", "nodes").splitlines():
                    fields = line.split()
                    if len(fields) > 2 and "fail" not in fields[2]:
                        role = "primary" if "master" in fields[2] else "replica"
                        found.append((int(fields[1].split("@")[0].rsplit(":", 1)[1]), role))
                return found
        return []

    def primaries(self) -> list[int]:
        return sorted(p for p, role in self.nodes() if role == "primary" and self._processes[p].poll() is None)

    def kill(self, port: int) -> None:
        process = self._processes[port]
        process.kill()
        process.wait()

    def stop(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        self._processes.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


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
