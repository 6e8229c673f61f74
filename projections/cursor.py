"""Opaque page cursors for the admin lists: (sort time, id) of the last item shown."""

from __future__ import annotations

import base64


def encode_cursor(sort_time: str, item_id: str) -> str:
    return base64.urlsafe_b64encode(f"{sort_time}|{item_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        sort_time, item_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|", 1)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this API returned") from None
    return sort_time, item_id
