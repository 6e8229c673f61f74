"""Event store wiring: SQLite under the data folder by default, PostgreSQL when a URL is set."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from application.store import EventStore
from infrastructure.personal_data import DeploymentKeys, PersonalDataVault
from infrastructure.pg_recorder import TRANSACTION_POOLER
from infrastructure.settings import Settings


def postgres_env(database_url: str, pool_size: int = 10, schema: str = "public", pooler: bool = False) -> dict[str, str]:
    """eventsourcing has no DSN setting, so split the URL into its keys. `pooler`: the URL goes through a
    transaction-mode pooler, so the recorder keeps no session state (see infrastructure/pg_recorder.py)."""
    url = urlsplit(database_url)
    if url.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise SystemExit(f"WIDGETS_DATABASE_URL must start with postgresql://, not {url.scheme}://")
    return {
        "PERSISTENCE_MODULE": "infrastructure.pg_recorder:WidgetsPostgresFactory",
        "POSTGRES_DBNAME": unquote(url.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        "POSTGRES_CONNECT_TIMEOUT": "2",  # also how long a request waits for a pooled connection
        "POSTGRES_PRE_PING": "y",
        "POSTGRES_LOCK_TIMEOUT": "5",
        # One round trip per save instead of three (LOCK, NOTIFY, INSERT): see LIBRARIES.md. Our recorder
        # keeps the table lock inside that function, so commit order stays notification order.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "y",
        TRANSACTION_POOLER: "y" if pooler else "",
    }


def sqlite_env(data_dir: Path) -> dict[str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(data_dir / "events.sqlite3"),
            "APPLICATION_RECORDER_TOPIC": "infrastructure.sqlite_recorder:KeyedSQLiteApplicationRecorder"}


def store_env(settings: Settings) -> dict[str, str]:
    if settings.database_url:
        return postgres_env(settings.database_url, settings.pg_pool_size, settings.database_schema, settings.behind_pooler)
    return sqlite_env(settings.data_path)


def open_event_store(settings: Settings, **extra: Any) -> EventStore:
    """The event store, sealing personal data under per-conversation keys wrapped by `WIDGETS_DATA_KEY`."""
    vault = PersonalDataVault(DeploymentKeys.from_settings(settings))
    return EventStore(env={**store_env(settings), **extra}, personal_data=vault)
