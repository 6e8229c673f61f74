"""Shared fixtures: the real PostgreSQL and Redis (a fresh schema and key prefix per test)."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

# Two cores shared with PostgreSQL, Redis and Chromium: judge properties on what they find, not on time.
hypothesis_settings.register_profile("widgets", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("widgets")

from infrastructure.auth import TokenAuthority
from infrastructure.settings import Settings
from tests.servers import PrivatePgBouncer, PrivatePostgres, PrivateRedis, PrivateRedisCluster, fresh_schema

# Production names its own secrets (the embedded mode makes them in its data folder): these, for this run only.
PRODUCTION_SECRETS = {"auth_secret": secrets.token_urlsafe(32), "data_key": base64.b64encode(secrets.token_bytes(32)).decode()}
MACHINE_PG = os.environ.get("WIDGETS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MACHINE_REDIS = os.environ.get("WIDGETS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ALL_SCOPES = ["widgets:write", "widgets:read", "audit:read"]
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):  # an expected failure ran; a skip did not
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI nothing may be skipped: a test that needs PostgreSQL, Redis or Chromium must run."""
    if os.environ.get("CI") and _skipped and exitstatus == 0:
        print(f"\nCI: {len(_skipped)} test(s) were skipped, which CI does not allow: {_skipped[:5]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _reachable(url: str, default_port: int) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """The machine's PostgreSQL, or a private one started from local binaries when none runs."""
    if _reachable(MACHINE_PG, 5432):
        yield MACHINE_PG
        return
    server = PrivatePostgres().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    if _reachable(MACHINE_REDIS, 6379):
        yield MACHINE_REDIS
        return
    server = PrivateRedis().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def pg_schema(pg_server_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test."""
    with fresh_schema(pg_server_url) as schema:
        yield schema


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of the test's own, which it may stop and start (the machine's is never touched)."""
    yield from _running(PrivatePostgres())


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis of the test's own, which it may stop and start."""
    yield from _running(PrivateRedis())


S = TypeVar("S", PrivatePostgres, PrivateRedis)


def _running(server: S) -> Iterator[S]:
    server.start()
    try:
        yield server
    finally:
        with suppress(Exception):  # the test may have stopped it already
            server.stop()


@pytest.fixture
def redis_prefix(redis_server_url: str) -> Iterator[str]:
    """A fresh Redis key prefix for one test; its keys are deleted afterwards."""
    import redis

    prefix = f"t{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_server_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def embedded_settings(tmp_path: Path) -> Settings:
    # Webhook deliveries only where a test asks for them (to its own receiver on loopback): an endpoint made by
    # another test names a host on the internet.
    return Settings(data_dir=str(tmp_path / "var"), log_format="json", log_level="warning", webhook_deliveries=False)


@pytest.fixture
def production_settings(tmp_path: Path, pg_server_url: str, pg_schema: str, redis_server_url: str, redis_prefix: str) -> Settings:
    return Settings(
        data_dir=str(tmp_path / "var"),
        database_url=pg_server_url,
        database_schema=pg_schema,
        redis_url=redis_server_url,
        redis_prefix=redis_prefix,
        projections="inprocess",
        log_format="json",
        log_level="warning",
        webhook_deliveries=False,
        **PRODUCTION_SECRETS,
    )


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """The three wirings of the same code: embedded (SQLite, in-process), production (PostgreSQL + Redis) and
    managed (PgBouncer + a Redis Cluster); suites marked `wirings(*ALL_WIRINGS)` also run on each half of managed
    alone (`cluster`: Redis Cluster, `pooler`: PgBouncer). A suite that leaves out one of the three says why in
    `SKIPPED_WIRINGS` (tests/test_wiring_matrix.py holds every suite to it; docs/architecture.md)."""
    return request.getfixturevalue(f"{request.param}_settings")


WIRINGS = ("embedded", "production", "managed")
ALL_WIRINGS = (*WIRINGS, "cluster", "pooler")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise `settings` with the module's `wirings` marker (default: the three), unless the test names its own."""
    if "settings" not in metafunc.fixturenames:
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        if "settings" in ([n.strip() for n in names.split(",")] if isinstance(names, str) else names):
            return
    marker = metafunc.definition.get_closest_marker("wirings")
    metafunc.parametrize("settings", marker.args if marker else WIRINGS, indirect=True)


@pytest.fixture(scope="session")
def pgbouncer_url(pg_server_url: str) -> Iterator[str]:
    """Debian's PgBouncer in transaction mode in front of the tests' PostgreSQL, for the whole session."""
    from urllib.parse import urlsplit

    bouncer = PrivatePgBouncer(urlsplit(pg_server_url).port or 5432).start()
    try:
        yield bouncer.url
    finally:
        bouncer.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[PrivateRedisCluster]:
    """A Redis Cluster of six redis-server processes (three primaries, three replicas), for the whole session."""
    cluster = PrivateRedisCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_prefix(redis_cluster: PrivateRedisCluster) -> Iterator[str]:
    """A fresh key prefix on the cluster for one test; its keys are deleted afterwards, on every primary."""
    from infrastructure.redis_clients import sync_client

    prefix = f"t{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = sync_client(redis_cluster.url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    except Exception:  # noqa: BLE001 - a failover test may leave the cluster between primaries
        pass
    finally:
        client.close()


@pytest.fixture
def cluster_settings(production_settings: Settings, redis_cluster: PrivateRedisCluster, cluster_prefix: str) -> Settings:
    """Production, with the public read model, invalidation and rate limits on the Redis Cluster."""
    return replace(production_settings, redis_url=redis_cluster.url, redis_prefix=cluster_prefix)


@pytest.fixture
def pooler_settings(production_settings: Settings, pgbouncer_url: str, pg_server_url: str) -> Settings:
    """Production, with PostgreSQL reached through the transaction-mode PgBouncer (LISTEN directly)."""
    return replace(production_settings, database_url=pgbouncer_url, database_pooler="transaction",
                   database_listen_url=pg_server_url)


@pytest.fixture
def managed_settings(production_settings: Settings, pgbouncer_url: str, pg_server_url: str, redis_cluster: PrivateRedisCluster,
                     cluster_prefix: str) -> Settings:
    """Production as a managed deployment runs it: PostgreSQL through the transaction-mode PgBouncer (LISTEN
    directly), the public read model, invalidation and rate limits on the Redis Cluster."""
    return replace(production_settings, database_url=pgbouncer_url, database_pooler="transaction",
                   database_listen_url=pg_server_url, redis_url=redis_cluster.url, redis_prefix=cluster_prefix)


def admin_headers(settings: Settings, org: str, sub: str = "user_1", scopes: list[str] | None = None) -> dict[str, str]:
    token = TokenAuthority(settings.auth_secret).mint(org, sub, scopes or ALL_SCOPES)
    return {"Authorization": f"Bearer {token}"}
