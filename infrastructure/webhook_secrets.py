"""Webhook endpoints' signing secrets, sealed under the deployment key, in a table beside the read models.

Events name a secret only by its random id; the secret is written here, sealed
(`DeploymentKeys.seal_secret`, bound to its id), before the event that names it
is appended. A secret whose event never made it is an orphan no endpoint
refers to (the command removes it when it can). The table is not a read model:
`widgets rebuild` leaves it alone, and the rebuilt model finds every secret its
events name. `reseal_webhook_secrets` rewraps every row under the current key
(for `widgets rotate-data-key`). Nothing here logs a secret, sealed or not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from uuid import UUID

from infrastructure.personal_data import DeploymentKeys
from infrastructure.sql import Database, Executor

PURPOSE = "webhook-endpoint-secret"
BATCH = 500
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS webhook_endpoint_secrets (secret_id TEXT PRIMARY KEY, endpoint_id TEXT NOT NULL,
        sealed TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS webhook_endpoint_secrets_by_endpoint ON webhook_endpoint_secrets (endpoint_id)""",
]


def _purpose(secret_id: str) -> str:
    return f"{PURPOSE} {secret_id}"  # bound to its id: a sealed secret copied into another row does not open


def create_tables(db: Database) -> None:
    with db.transaction() as tx:
        for statement in SCHEMA:
            tx.execute(statement)


class WebhookSecretTable:
    """Seals, stores, opens and discards endpoint secrets (the application's `EndpointSecrets` port)."""

    def __init__(self, db: Database, keys: DeploymentKeys, create: bool = True) -> None:
        self.db = db
        self.keys = keys
        if create:
            create_tables(db)

    def put(self, secret_id: UUID, endpoint_id: UUID, secret: bytes) -> None:
        sealed = self.keys.seal_secret(_purpose(str(secret_id)), secret)
        with self.db.transaction() as tx:
            tx.execute("INSERT INTO webhook_endpoint_secrets (secret_id, endpoint_id, sealed) VALUES (?, ?, ?)",
                       [str(secret_id), str(endpoint_id), sealed])

    def open(self, secret_ids: Iterable[UUID]) -> dict[UUID, bytes]:
        """The secrets with these ids that exist, opened."""
        return open_secrets(self.db, self.keys, secret_ids)

    def discard(self, secret_ids: Iterable[UUID]) -> None:
        ids = [str(s) for s in secret_ids]
        if ids:
            with self.db.transaction() as tx:
                tx.execute(f"DELETE FROM webhook_endpoint_secrets WHERE secret_id IN ({','.join('?' * len(ids))})", ids)

    def discard_endpoint(self, endpoint_id: UUID, keep: Iterable[UUID] = ()) -> None:
        """Every secret of an endpoint but `keep` (a deleted endpoint signs nothing more)."""
        kept = [str(s) for s in keep]
        where = f" AND secret_id NOT IN ({','.join('?' * len(kept))})" if kept else ""
        with self.db.transaction() as tx:
            tx.execute(f"DELETE FROM webhook_endpoint_secrets WHERE endpoint_id = ?{where}", [str(endpoint_id), *kept])


def open_secrets(db: Database | Executor, keys: DeploymentKeys, secret_ids: Iterable[UUID | str]) -> dict[UUID, bytes]:
    """Open the stored secrets among `secret_ids` (missing ones are left out)."""
    ids = sorted({str(s) for s in secret_ids})
    found: dict[UUID, bytes] = {}
    for i in range(0, len(ids), BATCH):
        chunk = ids[i : i + BATCH]
        rows = db.query(f"SELECT secret_id, sealed FROM webhook_endpoint_secrets WHERE secret_id IN ({','.join('?' * len(chunk))})",
                        chunk)
        for secret_id, sealed in rows:
            found[UUID(secret_id)] = keys.open_secret(_purpose(secret_id), sealed)
    return found


def reseal_webhook_secrets(db: Database, keys: DeploymentKeys) -> int:
    """Rewrap every endpoint secret not yet under the current deployment key; returns how many were rewrapped.

    For `widgets rotate-data-key`: run it with `keys` holding the new key and the previous one. Idempotent,
    and safe beside live traffic (each row is rewritten only if it still holds what was read)."""
    create_tables(db)
    resealed, after = 0, ""
    while True:
        rows: Sequence[tuple[str, str]] = db.query(
            "SELECT secret_id, sealed FROM webhook_endpoint_secrets WHERE secret_id > ? ORDER BY secret_id LIMIT ?", [after, BATCH])
        if not rows:
            return resealed
        changed = [(new, secret_id, sealed) for secret_id, sealed in rows
                   if (new := keys.reseal_secret(_purpose(secret_id), sealed)) is not None]
        if changed:
            with db.transaction() as tx:
                tx.executemany("UPDATE webhook_endpoint_secrets SET sealed = ? WHERE secret_id = ? AND sealed = ?", changed)
            resealed += len(changed)
        after = rows[-1][0]
