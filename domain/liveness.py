"""Why a widget is not live: each gate that is closed, as a code and a sentence a site owner can act on."""

from __future__ import annotations

from typing import NamedTuple


class NotLiveReason(NamedTuple):
    code: str
    message: str


WIDGET_DELETED = NotLiveReason("widget_deleted", "The widget was deleted; it serves nowhere and cannot be published again.")
WIDGET_UNPUBLISHED = NotLiveReason("widget_unpublished", "The widget is not published: publish it to serve it.")
AGENT_VERSION_UNPUBLISHED = NotLiveReason(
    "agent_version_unpublished",
    "The agent version the widget pins is not published: publish that version, or pin a published one.",
)


def not_live_reasons(*, published: bool, deleted: bool, version_published: bool) -> list[NotLiveReason]:
    """Every closed gate, in the order a site owner would open them; empty when the widget is live."""
    if deleted:
        return [WIDGET_DELETED]
    reasons = [] if published else [WIDGET_UNPUBLISHED]
    if not version_published:
        reasons.append(AGENT_VERSION_UNPUBLISHED)
    return reasons
