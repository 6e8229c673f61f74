"""The application cases of tests/unit/test_application.py, on the real PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from application.store import EventStore
from infrastructure.eventstore import postgres_env
from tests.unit.test_application import ApplicationCases

pytestmark = pytest.mark.postgres


class TestApplicationOnPostgres(ApplicationCases):
    @pytest.fixture
    def store(self, pg_server_url: str, pg_schema: str) -> Iterator[EventStore]:
        store = EventStore(env=postgres_env(pg_server_url, pool_size=4, schema=pg_schema))
        yield store
        store.close()
