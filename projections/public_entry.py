"""What the public read model keeps per widget: its row, its domains ready for
matching, and the public config already encoded as the response body."""

from __future__ import annotations

import msgspec

from domain.domains import AllowedDomains, CompiledDomains
from projections.widget_rows import WidgetRow

CHANNEL = "webrtc"


class PublicConfig(msgspec.Struct):
    """The body of `GET /public/v1/widgets/{id}`: only what a page needs, nothing of the organization."""

    id: str
    config: dict
    channel: str = CHANNEL


class PublicEntry(msgspec.Struct, array_like=True):
    row: WidgetRow
    matcher: CompiledDomains
    body: bytes
    etag: str


_encoder = msgspec.msgpack.Encoder(order="deterministic")  # a rebuild gives the same bytes
_decoder = msgspec.msgpack.Decoder(PublicEntry)
# Sorted keys: a row read back from Redis (msgpack, sorted) and a row fresh from an event
# (insertion order) must give the same body, or a rebuild would change the bytes served.
_json = msgspec.json.Encoder(order="deterministic")


def entry_for(row: WidgetRow) -> PublicEntry:
    body = _json.encode(PublicConfig(id=row.id, config=row.config))
    return PublicEntry(row=row, matcher=AllowedDomains(tuple(row.domains)).compile(), body=body, etag=f'"{row.version}"')


def encode_entry(entry: PublicEntry) -> bytes:
    return _encoder.encode(entry)


def decode_entry(data: bytes) -> PublicEntry:
    return _decoder.decode(data)
