"""The visitor's token is the one livekit-api's own `AccessToken.to_jwt` would sign, claim for claim.

`LiveKitIssuer` builds the claims once and fills in each grant's values, and signs
without going through `AccessToken` (tests/bench/bench_conversations.py says why). These
tests hold it to livekit-api: same header, same claims for any ticket, verified by
`TokenVerifier`, and no grant's values leaking into the next one's.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from livekit import api

from application.conversations import RoomTicket
from infrastructure.livekit import LiveKitIssuer

KEY, SECRET = "APIkey123", "a-livekit-secret-of-thirty-two-bytes!"
ISSUER = LiveKitIssuer(url="wss://lk.example.test", api_key=KEY, api_secret=SECRET, agent_name="support-agent",
                       ttl_seconds=600)

texts = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
context_values = st.dictionaries(texts, st.text(max_size=20) | st.booleans() | st.integers() | st.floats(allow_nan=False), max_size=4)
visitors = st.just({"verified": False}) | st.fixed_dictionaries(
    {"external_id": texts, "verified": st.just(True)}, optional={"name": texts})
tickets = st.builds(
    RoomTicket,
    conversation_id=st.uuids().map(str), organization_id=texts, widget_id=st.uuids().map(str),
    agent_id=st.uuids().map(str), agent_version_id=st.uuids().map(str), room=texts, identity=texts,
    visitor_name=st.none() | texts, visitor=visitors,
    context=st.fixed_dictionaries({"verified": context_values, "page": context_values}),
    resumed=st.booleans(),
)


def livekit_token(issuer: LiveKitIssuer, ticket: RoomTicket) -> str:
    """The token livekit-api's documented builder makes for the same ticket."""
    metadata = json.dumps({"organization_id": ticket.organization_id, "widget_id": ticket.widget_id,
                           "agent_id": ticket.agent_id, "agent_version_id": ticket.agent_version_id,
                           "conversation_id": ticket.conversation_id, "channel": "webrtc", "visitor": ticket.visitor,
                           "context": ticket.context, "resumed": ticket.resumed}, separators=(",", ":"))
    grants = api.VideoGrants(
        room_join=True, room=ticket.room, can_subscribe=True, can_publish=True, can_publish_sources=["microphone"],
        can_publish_data=True, can_update_own_metadata=False, room_create=False, room_list=False, room_record=False,
        room_admin=False, ingress_admin=False, hidden=False, recorder=False, agent=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (
            api.AccessToken(issuer.api_key, issuer.api_secret)
            .with_identity(ticket.identity)
            .with_name(ticket.visitor_name or "Visitor")
            .with_ttl(dt.timedelta(seconds=issuer.ttl_seconds))
            .with_grants(grants)
            .with_room_config(api.RoomConfiguration(
                agents=[api.RoomAgentDispatch(agent_name=issuer.agent_name, metadata=metadata)]))
            .to_jwt()
        )


def claims_of(token: str) -> dict:
    return jwt.decode(token, SECRET, algorithms=["HS256"], issuer=KEY)


@settings(max_examples=200, deadline=None)
@given(ticket=tickets)
def test_the_claims_are_those_livekit_api_signs_for_the_same_ticket(ticket: RoomTicket) -> None:
    ours, theirs = ISSUER.grant(ticket).token, livekit_token(ISSUER, ticket)
    assert jwt.get_unverified_header(ours) == jwt.get_unverified_header(theirs)
    mine, reference = claims_of(ours), claims_of(theirs)
    assert abs(mine.pop("nbf") - reference.pop("nbf")) <= 1
    assert abs(mine.pop("exp") - reference.pop("exp")) <= 1
    assert mine == reference


@given(first=tickets, second=tickets)
def test_a_grant_carries_nothing_of_the_one_before(first: RoomTicket, second: RoomTicket) -> None:
    earlier = ISSUER.grant(first)
    later = api.TokenVerifier(KEY, SECRET).verify(ISSUER.grant(second).token)
    again = api.TokenVerifier(KEY, SECRET).verify(earlier.token)
    assert (later.identity, later.video.room) == (second.identity, second.room)
    assert (again.identity, again.video.room) == (first.identity, first.room)
    assert json.loads(later.room_config.agents[0].metadata)["conversation_id"] == second.conversation_id


def test_expires_at_is_the_tokens_expiry() -> None:
    ticket = RoomTicket("c", "org", "w", "a", "v", "room", "visitor_1", None)
    grant = ISSUER.grant(ticket)
    claims = claims_of(grant.token)
    assert claims["exp"] - claims["nbf"] == 600
    assert grant.expires_at == dt.datetime.fromtimestamp(claims["exp"], dt.UTC)


def test_a_token_signed_with_another_secret_does_not_verify() -> None:
    token = ISSUER.grant(RoomTicket("c", "org", "w", "a", "v", "room", "visitor_1", "Ada")).token
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier(KEY, "another-secret-of-thirty-two-bytes!!").verify(token)


@pytest.mark.parametrize("field", ["room", "identity"])
def test_a_ticket_without_a_room_or_identity_is_refused_as_livekit_api_refuses_it(field: str) -> None:
    values = {"conversation_id": "c", "organization_id": "org", "widget_id": "w", "agent_id": "a",
              "agent_version_id": "v", "room": "room", "identity": "visitor_1", "visitor_name": None, field: ""}
    with pytest.raises(ValueError, match="identity and room"):
        ISSUER.grant(RoomTicket(**values))
