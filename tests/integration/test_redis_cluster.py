"""The public read model on a real Redis Cluster when a primary dies, and two API processes sharing it.

The failover test starts a cluster of its own (three primaries, three replicas,
a one-second node timeout) and SIGKILLs the primary that serves the `{meta}`
slot (the generation pointer, the positions and the invalidation channel) and
so also the listener's sharded subscription, while it keeps reading. Refused
origins must be refused at every moment; the commands made while the replica
takes over must reach the read model; afterwards every widget must be read
from Redis again, not from the event store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from infrastructure.redis_clients import sync_client
from infrastructure.settings import Settings
from projections.public_views import RedisKeys, RedisPublicView, current_generation
from tests.api.conftest import Admin, client_for
from tests.api.public_helpers import eventually, live_widget, sync, widget_path
from tests.servers import PrivateRedisCluster

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]
SKIPPED_WIRINGS = {
    "embedded": "a Redis Cluster's failover and sharded invalidation; embedded has no Redis",
    "production": "a Redis Cluster's failover and sharded invalidation; one Redis has neither (its outage is "
                  "test_redis_outage.py, its rebuild test_rebuild.py)",
}

ALLOWED, REFUSED, LATER = "https://example.com", "https://evil.example.net", "https://later.example.org"


@pytest.fixture
def own_cluster() -> Iterator[PrivateRedisCluster]:
    cluster = PrivateRedisCluster(node_timeout_ms=1000).start()
    yield cluster
    cluster.stop()


class CountingFallback:
    """The reader's event-store fallback, counting the reads that went to it."""

    def __init__(self, fallback: Any) -> None:
        self.fallback, self.calls = fallback, 0

    async def __call__(self, widget_id: str) -> Any:
        self.calls += 1
        return await self.fallback(widget_id)

    async def head(self) -> int:
        return await self.fallback.head()


def started(app: Litestar) -> TestClient[Litestar]:
    client = client_for(app)
    client.__enter__()
    reader = app.state.services.reader
    client.blocking_portal.call(lambda: _listening(reader))
    return client


async def _listening(reader: Any) -> None:
    import anyio

    with anyio.move_on_after(10):
        await reader.listening.wait()


def status(client: TestClient[Litestar], widget_id: str, origin: str) -> int:
    return client.get(widget_path(widget_id), headers={"Origin": origin}).status_code


def meta_primary(cluster: PrivateRedisCluster, prefix: str) -> int:
    """The port of the primary that serves the `{meta}` slot of this prefix."""
    client = sync_client(cluster.url)
    try:
        node = client.get_node_from_key(RedisKeys(prefix, 0).current)
        return int(node.port)
    finally:
        client.close()


def test_a_primary_killed_mid_run_never_allows_a_refused_origin_and_reads_return_to_redis(
    production_settings: Settings, own_cluster: PrivateRedisCluster
) -> None:
    settings = replace(production_settings, redis_url=own_cluster.url, redis_prefix="failover:")
    app = create_app(settings)
    client = started(app)
    try:
        admin = Admin(client, settings, "org_a")
        widgets = [live_widget(admin, app) for _ in range(6)]
        reader = app.state.services.reader
        reader.fallback = counting = CountingFallback(reader.fallback)
        answers: list[tuple[str, str, int]] = []

        def check_all() -> None:
            for widget in widgets:
                refused = status(client, widget["id"], REFUSED)
                answers.append((widget["id"], REFUSED, refused))
                assert refused in (403, 404), f"a refused origin was answered {refused}"  # 404: a widget gone dark

        for widget in widgets:
            assert status(client, widget["id"], ALLOWED) == 200
        check_all()

        victim = meta_primary(own_cluster, settings.redis_prefix)
        own_cluster.kill(victim)
        # While the replica takes over: keep reading, and change things.
        changed, dark = widgets[0], widgets[1]
        assert admin.call("PUT", f"/v1/widgets/{changed['id']}/domains", json={"domains": ["later.example.org"]}).status_code == 200
        assert admin.call("POST", f"/v1/widgets/{dark['id']}/unpublish").status_code == 200
        newcomer = admin.widget(published=True, domains=["example.com"])
        deadline = time.monotonic() + 60
        while not own_cluster.healthy():
            check_all()
            assert time.monotonic() < deadline, "the replica did not take over"
            time.sleep(0.05)
        check_all()

        # The changes made meanwhile reach the read model (the runner retried its page)...
        sync(app)
        view_client = sync_client(own_cluster.url)
        try:
            view = RedisPublicView(view_client, settings.redis_prefix, current_generation(view_client, settings.redis_prefix))
            eventually(lambda: view.position() >= (app.state.services.store.recorder.max_notification_id() or 0),
                       timeout=30, what="the Redis read model caught up")
            assert view.get(changed["id"]).row.domains == ["later.example.org"]
            assert not view.get(dark["id"]).row.live
            assert view.get(newcomer["id"]).row.live
        finally:
            view_client.close()
        # ...and the answers show them.
        eventually(lambda: status(client, changed["id"], LATER) == 200 and status(client, changed["id"], ALLOWED) == 403,
                   timeout=15, what="the changed domains answered")
        eventually(lambda: status(client, dark["id"], ALLOWED) == 404, timeout=15, what="the unpublished widget dark")
        eventually(lambda: status(client, newcomer["id"], ALLOWED) == 200, timeout=15, what="the new widget answered")
        check_all()

        # Every widget is read from Redis again, not from the event store.
        # The reader checks Redis's position on a read (at most every VERIFY_INTERVAL), so keep reading meanwhile,
        # as real traffic does: a resubscription after the last read above would otherwise never be re-checked.
        def trusted() -> bool:
            reader.cache.clear()
            status(client, widgets[2]["id"], ALLOWED)
            return reader.listening.is_set() and reader._verified

        eventually(trusted, timeout=30, what="the reader trusting Redis")
        reader.cache.clear()
        counting.calls = 0
        for widget in [*widgets[2:], newcomer]:
            assert status(client, widget["id"], ALLOWED) == 200
        assert counting.calls == 0, f"{counting.calls} reads still went to the event store"
        assert len(answers) >= 6 * 3 and all(code in (403, 404) for _, _, code in answers)
    finally:
        client.__exit__(None, None, None)


def test_two_api_processes_share_the_clusters_invalidation(
    cluster_settings: Settings
) -> None:
    writer_app = create_app(cluster_settings)
    # The second process only reads; its cache would trust an entry for a minute without a message.
    reader_app = create_app(replace(cluster_settings, projections="external", public_cache_ttl=60.0))
    writer, other = started(writer_app), started(reader_app)
    try:
        admin = Admin(writer, cluster_settings, "org_a")
        widget = live_widget(admin, writer_app)
        assert status(other, widget["id"], ALLOWED) == 200  # now cached in the other process
        assert status(other, widget["id"], LATER) == 403
        response = admin.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": ["later.example.org"]})
        assert response.status_code == 200, response.text
        sync(writer_app)
        eventually(lambda: status(other, widget["id"], LATER) == 200, timeout=10, what="the other process invalidated")
        assert status(other, widget["id"], ALLOWED) == 403
        assert admin.call("POST", f"/v1/widgets/{widget['id']}/unpublish").status_code == 200
        sync(writer_app)
        eventually(lambda: status(other, widget["id"], LATER) == 404, timeout=10, what="the other process saw it go dark")
    finally:
        other.__exit__(None, None, None)
        writer.__exit__(None, None, None)


@pytest.mark.parametrize("wiring", ["cluster", "managed"])
def test_rebuild_verify_and_readiness_work_on_the_cluster(wiring: str, request: pytest.FixtureRequest) -> None:
    """`widgets rebuild` switches readers to a new generation on the cluster while they read; `widgets verify`
    finds no difference; `/readyz` says ready. With PostgreSQL direct, and through PgBouncer (managed)."""
    from projections.rebuild import rebuild
    from projections.setup import PUBLIC_LOOKUP
    from projections.verify import verify

    cluster_settings: Settings = request.getfixturevalue(f"{wiring}_settings")

    app = create_app(cluster_settings)
    client = started(app)
    try:
        admin = Admin(client, cluster_settings, "org_a")
        widgets = [live_widget(admin, app) for _ in range(5)]
        services = app.state.services
        view_client = sync_client(cluster_settings.redis_url)
        try:
            before = current_generation(view_client, cluster_settings.redis_prefix)
            rebuild(cluster_settings, services.store, services.db, (PUBLIC_LOOKUP,))
            after = current_generation(view_client, cluster_settings.redis_prefix)
        finally:
            view_client.close()
        assert after > before
        sync(app)
        for widget in widgets:
            assert status(client, widget["id"], ALLOWED) == 200 and status(client, widget["id"], REFUSED) == 403
        assert admin.call("PUT", f"/v1/widgets/{widgets[0]['id']}/domains", json={"domains": ["later.example.org"]}).status_code == 200
        sync(app)
        eventually(lambda: status(client, widgets[0]["id"], LATER) == 200, timeout=10, what="a change after the rebuild")
        differences, checked = verify(cluster_settings, services.store, services.db)
        assert PUBLIC_LOOKUP in checked and differences == []
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["read_model"] is True, ready.text
    finally:
        client.__exit__(None, None, None)
