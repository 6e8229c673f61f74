"""The application cases of tests/unit/test_application.py, on the real PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from application.store import EventStore
from infrastructure.eventstore import postgres_env
from tests.unit.test_application import ApplicationCases

pytestmark = pytest.mark.postgres
SKIPPED_WIRINGS = {
    "embedded": "the application cases on the event store alone: in memory in tests/unit/test_application.py, here on "
                "PostgreSQL; the API suites run the same services on every wiring",
    "production": "the event store alone, opened with the library's own settings rather than a wiring's (no read model, "
                  "no Redis); the API suites run the same services on the production wiring",
    "managed": "the event store alone; behind PgBouncer it is tests/integration/test_pooler.py, and the API suites run "
               "the same services on the managed wiring",
}


class TestApplicationOnPostgres(ApplicationCases):
    @pytest.fixture
    def store(self, pg_server_url: str, pg_schema: str) -> Iterator[EventStore]:
        store = EventStore(env=postgres_env(pg_server_url, pool_size=4, schema=pg_schema))
        yield store
        store.close()
