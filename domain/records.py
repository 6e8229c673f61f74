"""Events as auditors see them: public type name, actor, and the data without bookkeeping or secrets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.conversation import ENDED_BY_ROOM

# The position fields are shown on their own; the fingerprint only tells retries apart;
# the resume tokens' hashes and the participant identity are derived from visitor secrets, the visitor lookup
# value from a verified visitor's external id.
HIDDEN = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic", "actor", "request_fingerprint",
                    "resume_token_hash", "added_token_hash", "participant_identity", "visitor_ref", "secret_id"})


@dataclass(frozen=True)
class EventRecord:
    aggregate_type: str
    aggregate_id: UUID
    version: int
    type: str
    occurred_at: datetime
    actor: str
    data: dict[str, Any]


def describe(event: Any) -> EventRecord:
    public_type: str = type(event).TOPIC
    data = {k: v for k, v in event.__dict__.items() if k not in HIDDEN}
    actor = getattr(event, "actor", None) or ("livekit" if data.get("by") == ENDED_BY_ROOM else "visitor")
    return EventRecord(
        aggregate_type=public_type.partition(".")[0],
        aggregate_id=event.originator_id,
        version=event.originator_version,
        type=public_type,
        occurred_at=event.timestamp,
        actor=actor,
        data=data,
    )
