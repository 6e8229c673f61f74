"""Personal data at rest: one data key per conversation, wrapped by the deployment key (crypto-shredding).

A visitor's name, form values, feedback comment (and, with #18, identity claims
and context) are stored only encrypted: AES-GCM under the conversation's own
256-bit data key, with the conversation id and the field name as associated
data, so a ciphertext moved to another field or conversation does not open.
The data key is created with `conversation.started`, wrapped (AES-GCM again)
by the deployment key `WIDGETS_DATA_KEY`, and written to the key table in the
same transaction as that event. Erasure destroys the key row: every copy of the
ciphertext, in events, read models, Redis and backups, becomes noise.

What lives here, for the other features to use:

- **The field registry.** `PERSONAL_FIELDS` maps a stored event type to the names
  of its personal fields, `PERSONAL_STATE` an aggregate class's topic to the
  attributes of its snapshot state that are personal. To make more fields
  personal (#18: identity claims, context), declare them once, at import time of
  the module that defines the event, before the store is opened::

      declare_personal_fields("conversation.started", "identity", "context")
      declare_personal_state(Conversation, "identity", "context")

  A field's value may be any JSON value; `None` is stored as `None`. Only
  `conversation.*` events may declare fields: their originator id is the id
  the key is held under. New fields of existing events need nothing else: old
  events simply do not have them.

- **Reading a conversation's personal values** (#16's webhook bodies, the admin
  API). Events and read-model rows carry *sealed* values: strings starting with
  `pd1:`. Open them where an admin reads or a webhook is rendered, never
  earlier::

      opener = vault.opener([conversation_id, ...])   # one query for the keys of all of them
      data = opener.reveal(event_type, conversation_id, data)   # a copy: personal fields opened, erased ones None
      name = opener.open(conversation_id, "visitor", row.visitor)   # one value

  `vault` is `EventStore.personal_data` (an instance of `PersonalDataVault`).
  An erased conversation's values open as `None`; a value that is not sealed
  (written before encryption existed) is returned as it is.

- **Small secrets under the deployment key** (#16's endpoint secrets)::

      sealed = keys.seal_secret("webhook-endpoint-secret", raw_bytes)   # str, safe to store
      raw = keys.open_secret("webhook-endpoint-secret", sealed)
      resealed = keys.reseal_secret("webhook-endpoint-secret", sealed)  # None if already under the current key

  `keys` is `DeploymentKeys.from_settings(settings)` (or `vault.keys`). The
  purpose string is associated data: a secret sealed for one purpose does not
  open for another. `widgets rotate-data-key` should reseal such secrets too
  (call `reseal_secret` over your table from that command).

Logs and errors never carry a data key, a wrapped key, a sealed value's
plaintext or a deployment key: nothing here logs, and errors name ids only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent, Transcoder
from eventsourcing.utils import get_topic, resolve_topic

from domain import event_types as t
from domain.conversation import Conversation

SEALED = "pd1:"  # the prefix of a sealed value; 1 is the format
_WRAP_FORMAT = b"\x01"
_NONCE = 12
_FINGERPRINT = 8

PERSONAL_FIELDS: dict[str, tuple[str, ...]] = {
    t.CONVERSATION_STARTED: ("visitor", "context"),  # with identity (#18), visitor holds the verified claims
    t.CONVERSATION_RESUMED: ("context",),  # the context given at a resume (#18)
    t.CONVERSATION_FORM_SUBMITTED: ("values",),
    t.CONVERSATION_FEEDBACK_GIVEN: ("comment",),
}
PERSONAL_STATE: dict[str, tuple[str, ...]] = {get_topic(Conversation): ("visitor", "forms", "feedback")}
# The event whose save creates the conversation's data key (and its row in the key table).
KEY_CREATING = frozenset({t.CONVERSATION_STARTED})
_SNAPSHOT_TOPIC = get_topic(Snapshot)
# Rows of the key table that hold a deployment secret rather than a conversation's key (no conversation has these
# ids: uuid5 names under a namespace of our own). Rotation rewraps them with the conversations' keys.
VISITOR_LOOKUP_KEYS_ID = UUID("7f1c8a52-4b0e-5d3e-9a61-0c6b2f1e9d41")


def declare_personal_fields(event_type: str, *names: str) -> None:
    """Make more fields of a stored conversation event type personal (sealed at rest)."""
    if not event_type.startswith(f"{t.CONVERSATION}."):
        raise ValueError(f"only conversation events hold personal data, not {event_type}")
    PERSONAL_FIELDS[event_type] = tuple(dict.fromkeys((*PERSONAL_FIELDS.get(event_type, ()), *names)))


def declare_personal_state(aggregate_class: type[Any], *names: str) -> None:
    """Make more attributes of an aggregate's snapshot state personal."""
    topic = get_topic(aggregate_class)
    PERSONAL_STATE[topic] = tuple(dict.fromkeys((*PERSONAL_STATE.get(topic, ()), *names)))


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(SEALED)


class DataKeyError(Exception):
    """A wrapped key or sealed secret that none of the configured deployment keys opens."""


def decode_deployment_key(name: str, value: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SystemExit(f"{name} must be the base64 of 32 random bytes (e.g. `openssl rand -base64 32`)")
    return raw


class DeploymentKeys:
    """The deployment key (`WIDGETS_DATA_KEY`) and, during a rotation, the previous one.

    Wraps data keys and seals small secrets under the current key; opens what either key sealed.
    Each wrapped value starts with a fingerprint of the key that made it, so rotation knows what to rewrap.
    """

    def __init__(self, current: bytes, previous: bytes | None = None) -> None:
        self._by_fingerprint: dict[bytes, AESGCM] = {}
        if previous and previous != current:
            self._by_fingerprint[_fingerprint(previous)] = AESGCM(previous)
        self.fingerprint = _fingerprint(current)
        self._current = AESGCM(current)
        self._by_fingerprint[self.fingerprint] = self._current

    @classmethod
    def from_settings(cls, settings: Any) -> DeploymentKeys:
        settings.require("data_key")
        previous = settings.data_key_previous
        return cls(decode_deployment_key("WIDGETS_DATA_KEY", settings.data_key),
                   decode_deployment_key("WIDGETS_DATA_KEY_PREVIOUS", previous) if previous else None)

    def wrap(self, conversation_id: UUID, data_key: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        header = _WRAP_FORMAT + self.fingerprint
        return header + nonce + self._current.encrypt(nonce, data_key, header + conversation_id.bytes)

    def unwrap(self, conversation_id: UUID, wrapped: bytes) -> bytes:
        return self._open(bytes(wrapped), conversation_id.bytes, f"the data key of conversation {conversation_id}")

    def is_current(self, wrapped: bytes) -> bool:
        return bytes(wrapped[1 : 1 + _FINGERPRINT]) == self.fingerprint

    def rewrap(self, conversation_id: UUID, wrapped: bytes) -> bytes | None:
        """The data key wrapped under the current deployment key; None if it already is."""
        return None if self.is_current(wrapped) else self.wrap(conversation_id, self.unwrap(conversation_id, wrapped))

    def seal_secret(self, purpose: str, secret: bytes) -> str:
        nonce = os.urandom(_NONCE)
        header = _WRAP_FORMAT + self.fingerprint
        sealed = header + nonce + self._current.encrypt(nonce, secret, header + purpose.encode())
        return base64.urlsafe_b64encode(sealed).decode()

    def open_secret(self, purpose: str, sealed: str) -> bytes:
        try:
            raw = base64.urlsafe_b64decode(sealed.encode())
        except (binascii.Error, ValueError):
            raise DataKeyError(f"a sealed {purpose} is not valid base64") from None
        return self._open(raw, purpose.encode(), f"a sealed {purpose}")

    def reseal_secret(self, purpose: str, sealed: str) -> str | None:
        raw = base64.urlsafe_b64decode(sealed.encode())
        return None if self.is_current(raw) else self.seal_secret(purpose, self.open_secret(purpose, sealed))

    def _open(self, raw: bytes, context: bytes, what: str) -> bytes:
        header, nonce, body = raw[: 1 + _FINGERPRINT], raw[1 + _FINGERPRINT : 1 + _FINGERPRINT + _NONCE], raw[1 + _FINGERPRINT + _NONCE :]
        aead = self._by_fingerprint.get(header[1:]) if header[:1] == _WRAP_FORMAT else None
        if aead is None:
            raise DataKeyError(f"{what} was wrapped by a deployment key that is not configured "
                               "(set WIDGETS_DATA_KEY_PREVIOUS to the key before the last rotation)")
        try:
            return aead.decrypt(nonce, body, header + context)
        except InvalidTag:
            raise DataKeyError(f"{what} does not open with the configured deployment keys") from None


def _fingerprint(key: bytes) -> bytes:
    return hashlib.sha256(b"anyreach-widgets deployment key\x00" + key).digest()[:_FINGERPRINT]


_encode_value = msgspec.json.Encoder().encode
_decode_value = msgspec.json.decode


class DataKey:
    """One conversation's data key: seals and opens its personal values, bound to the conversation and field."""

    __slots__ = ("_aead", "_id")

    def __init__(self, conversation_id: UUID, key: bytes) -> None:
        self._id = conversation_id.bytes
        self._aead = AESGCM(key)

    def seal(self, field: str, value: Any) -> str:
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._aead.encrypt(nonce, _encode_value(value), self._id + field.encode())
        return SEALED + base64.b64encode(sealed).decode()

    def open(self, field: str, sealed: str) -> Any:
        """The value; `DataKeyError` if it was not sealed by this key for this conversation and field."""
        try:
            raw = base64.b64decode(sealed[len(SEALED):])
            return _decode_value(self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], self._id + field.encode()))
        except (InvalidTag, binascii.Error, ValueError):
            raise DataKeyError(f"a sealed {field} does not open with its conversation's key") from None


class KeyStore(Protocol):
    """The key table, kept by the event store's recorder (same database, same transactions)."""

    def select_data_keys(self, conversation_ids: Sequence[UUID]) -> dict[UUID, bytes]: ...

    def delete_data_keys(self, conversation_ids: Sequence[UUID]) -> int: ...

    def erased_data_keys(self, conversation_ids: Sequence[UUID]) -> set[UUID]: ...

    def insert_data_keys(self, rows: Sequence[tuple[UUID, bytes]]) -> None: ...

    def rewrite_events(self, originator_id: UUID, rewrite: Any) -> int: ...

    def iter_data_keys(self, batch: int = ...) -> Iterable[list[tuple[UUID, bytes]]]: ...

    def rewrap_data_keys(self, rows: Sequence[tuple[UUID, bytes, bytes]]) -> None: ...

    def scrub_data_keys(self) -> None: ...


@dataclass(frozen=True)
class KeyedStoredEvent(StoredEvent):
    """A stored `conversation.started` with its wrapped data key, which the recorder writes in the same transaction."""

    data_key: bytes = b""


class Opener:
    """Opens the sealed values of some conversations, their keys loaded in one query."""

    def __init__(self, keys: dict[UUID, DataKey]) -> None:
        self.keys = keys

    def open(self, conversation_id: UUID, field: str, value: Any) -> Any:
        """A sealed value's plaintext; None if its conversation was erased (or it does not open); others as they are."""
        if not is_sealed(value):
            return value
        key = self.keys.get(conversation_id)
        if key is None:
            return None
        try:
            return key.open(field, value)
        except DataKeyError:
            return None

    def reveal(self, event_type: str, conversation_id: UUID, data: dict[str, Any]) -> dict[str, Any]:
        """A copy of an event's data with its personal fields opened (None once erased)."""
        fields = PERSONAL_FIELDS.get(event_type)
        if not fields:
            return data
        return {k: self.open(conversation_id, k, v) if k in fields else v for k, v in data.items()}

    def erased(self, conversation_id: UUID) -> bool:
        return conversation_id not in self.keys


class PersonalDataVault:
    """The deployment keys and the key table together: makes the mappers, opens values, destroys keys."""

    def __init__(self, keys: DeploymentKeys) -> None:
        self.keys = keys
        self.store: Any = None  # the recorder (a KeyStore), bound once the application has built it
        self._sealing: dict[UUID, DataKey | None] = {}
        self._recent = threading.local()

    def bind(self, store: KeyStore) -> None:
        self.store = store

    def mapper(self, transcoder: Transcoder, reveal: bool = True) -> PersonalDataMapper:
        """The event store's mapper (`reveal`: personal fields opened, for the application), or the projections'
        (sealed values left sealed, so read models hold ciphertext only)."""
        return PersonalDataMapper(transcoder, self, reveal=reveal)

    def new_key(self, conversation_id: UUID) -> tuple[DataKey, bytes]:
        raw = AESGCM.generate_key(256)
        key = DataKey(conversation_id, raw)
        self._remember(conversation_id, key)
        return key, self.keys.wrap(conversation_id, raw)

    def load(self, conversation_ids: Iterable[UUID]) -> dict[UUID, DataKey]:
        ids = list(dict.fromkeys(conversation_ids))
        if not ids:
            return {}
        found = self.store.select_data_keys(ids)
        return {cid: DataKey(cid, self.keys.unwrap(cid, wrapped)) for cid, wrapped in found.items()}

    def opener(self, conversation_ids: Iterable[UUID]) -> Opener:
        return Opener(self.load(conversation_ids))

    def key_for_sealing(self, conversation_id: UUID) -> DataKey | None:
        """The key new values of this conversation are sealed under; None once erased (its values are dropped).

        A conversation started before keys existed (or by an older process during a rolling deploy) gets one
        now; concurrent callers agree on the first one written."""
        if conversation_id in self._sealing:
            return self._sealing[conversation_id]
        key = self.load([conversation_id]).get(conversation_id)
        if key is None and not self.store.erased_data_keys([conversation_id]):
            self.store.insert_data_keys([(conversation_id, self.keys.wrap(conversation_id, AESGCM.generate_key(256)))])
            key = self.load([conversation_id]).get(conversation_id)
        self._remember(conversation_id, key)
        return key

    def key_for_reading(self, conversation_id: UUID) -> DataKey | None:
        """The key, fresh from the key table; the same answer for a moment to one thread reading one aggregate's events."""
        recent = getattr(self._recent, "entry", None)
        now = time.monotonic()
        if recent is not None and recent[0] == conversation_id and now - recent[2] < 0.2:
            return recent[1]
        key = self.load([conversation_id]).get(conversation_id)
        self._recent.entry = (conversation_id, key, now)
        return key

    def destroy(self, conversation_ids: Sequence[UUID]) -> int:
        """Destroy the data keys (their rows physically gone); returns how many there were."""
        for cid in conversation_ids:
            self._sealing[cid] = None
        self._recent.entry = None
        return int(self.store.delete_data_keys(list(conversation_ids)))

    def shred_plaintext(self, conversation_id: UUID, transcoder: Transcoder) -> int:
        """Rewrite in place the conversation's stored events that hold personal values in the clear (written before
        encryption existed), with those values null, and scrub the table; returns how many were rewritten."""

        def rewrite(topic: str, raw: bytes) -> bytes | None:
            fields = PERSONAL_FIELDS.get(topic, ())
            if not fields:
                return None
            state = transcoder.decode(raw)
            clear = [name for name in fields if state.get(name) is not None and not is_sealed(state[name])]
            if not clear:
                return None
            for name in clear:
                state[name] = None
            return transcoder.encode(state)

        return int(self.store.rewrite_events(conversation_id, rewrite))

    def stored_secret(self, secret_id: UUID, initial: Callable[[], bytes]) -> bytes:
        """A deployment secret kept wrapped in the key table under `secret_id` (made from `initial()` the first
        time; concurrent first callers agree on the first row written). It survives a rotation: `rotate` rewraps it."""
        found = self.store.select_data_keys([secret_id]).get(secret_id)
        if found is None:
            self.store.insert_data_keys([(secret_id, self.keys.wrap(secret_id, initial()))])
            found = self.store.select_data_keys([secret_id])[secret_id]
        return self.keys.unwrap(secret_id, found)

    def rotate(self, batch: int = 1000, on_batch: Callable[[int, int], None] | None = None) -> tuple[int, int]:
        """Rewrap every data key (and stored secret) not under the current deployment key, one transaction per
        batch; returns (rewrapped, already current). Idempotent and restartable: a key already under the current
        key is left alone, so a run stopped halfway is finished by running it again. `DataKeyError` names the
        first conversation whose key neither configured deployment key opens (nothing of that batch is written)."""
        rewrapped = current = 0
        for rows in self.store.iter_data_keys(batch):
            changed = []
            for cid, wrapped in rows:
                new = self.keys.rewrap(cid, wrapped)
                if new is None:
                    current += 1
                else:
                    changed.append((cid, new, wrapped))
            if changed:
                self.store.rewrap_data_keys(changed)
                rewrapped += len(changed)
            if on_batch is not None:
                on_batch(rewrapped, current)
        if rewrapped:
            self.store.scrub_data_keys()  # no copy wrapped by the old deployment key stays in the table files
        self._sealing.clear()
        return rewrapped, current

    def _remember(self, conversation_id: UUID, key: DataKey | None) -> None:
        if len(self._sealing) > 10_000:
            self._sealing.clear()
        self._sealing[conversation_id] = key


class PersonalDataMapper(Mapper[UUID]):
    """eventsourcing's mapper, with the registry's fields of conversation events and snapshots sealed field by field
    under the conversation's data key (the library's own cipher seals whole events under one key, so it cannot shred
    one conversation). Reading a destroyed key gives None for the field, never an error."""

    def __init__(self, transcoder: Transcoder, vault: PersonalDataVault, reveal: bool = True) -> None:
        super().__init__(transcoder)
        self.vault = vault
        self.reveal = reveal

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        cls = type(domain_event)
        topic = get_topic(cls)
        fields, nested = _personal(topic, domain_event.__dict__)
        if not fields:
            return super().to_stored_event(domain_event)
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        class_version = getattr(cls, "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        wrapped = b""
        if topic in KEY_CREATING:
            key, wrapped = self.vault.new_key(originator_id)
        else:
            key = self.vault.key_for_sealing(originator_id)
        target = state
        if nested:
            target = state["state"] = dict(state["state"])
        for name in fields:
            value = target.get(name)
            if value is not None and not is_sealed(value):
                target[name] = key.seal(name, value) if key is not None else None
        encoded = self.transcoder.encode(state)
        if wrapped:
            return KeyedStoredEvent(originator_id, originator_version, topic, encoded, wrapped)
        return StoredEvent(originator_id, originator_version, topic, encoded)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        if stored_event.topic not in PERSONAL_FIELDS and stored_event.topic != _SNAPSHOT_TOPIC:
            return super().to_domain_event(stored_event)
        cls = resolve_topic(stored_event.topic)
        try:
            state: dict[str, Any] = self.transcoder.decode(stored_event.state)
        except Exception as error:
            raise MapperDeserialisationError(
                f"Failed to deserialise the state of {stored_event.topic} {stored_event.originator_id} "
                f"v{stored_event.originator_version}: {type(error).__name__}") from error
        fields, nested = _personal(stored_event.topic, state)
        if fields and self.reveal:
            target = state["state"] if nested else state
            originator_id = _as_uuid(stored_event.originator_id)
            if any(is_sealed(target.get(name)) for name in fields):
                opener = Opener({})
                key = self.vault.key_for_reading(originator_id)
                if key is not None:
                    opener.keys[originator_id] = key
                for name in fields:
                    if name in target:
                        target[name] = opener.open(originator_id, name, target[name])
        state["originator_id"] = _as_uuid(stored_event.originator_id)
        state["originator_version"] = stored_event.originator_version
        class_version = getattr(cls, "class_version", 1)
        from_version = state.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
            from_version += 1
        domain_event = object.__new__(cls)
        object.__setattr__(domain_event, "__dict__", state)
        return domain_event


def _personal(topic: str, state: dict[str, Any]) -> tuple[tuple[str, ...], bool]:
    """The personal field names of an event (or of a snapshot's state: then nested is True)."""
    if topic == _SNAPSHOT_TOPIC:
        return PERSONAL_STATE.get(state.get("topic", ""), ()), True
    return PERSONAL_FIELDS.get(topic, ()), False


def _as_uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))
