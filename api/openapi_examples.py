"""Examples of the main request and response bodies, by component name, for the OpenAPI document.

The document test validates each one against its own schema, so they cannot drift from the structs.
"""

from __future__ import annotations

from typing import Any

AGENT_ID = "5b0c9a4e-6f1d-4c1e-9a53-2f8d7e0b6a11"
VERSION_ID = "0e4f2d77-3b8a-4f6b-8d2e-9c1a5b7d3e20"
WIDGET_ID = "3f6b1c2d-8e9a-4b7c-a1d2-e3f405162738"
CONVERSATION_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
TIME = "2026-12-03T09:15:00Z"
CONFIG = {"v1": {"branding": {"display_name": "Acme help"}, "appearance": {"primary_color": "#2563EB"}}}
VERSION = {"id": VERSION_ID, "agent_id": AGENT_ID, "number": 1, "label": "launch", "published": True}
WIDGET = {
    "id": WIDGET_ID, "organization_id": "org_acme", "agent_id": AGENT_ID, "agent_version_id": VERSION_ID,
    "domains": ["example.com", "*.shop.example.org", "localhost:3000"], "published": True, "live": True,
    "deleted": False, "config": CONFIG, "identity_keys": [{"kid": "site-2026", "alg": "ES256", "added_at": TIME}],
    "created_at": TIME, "updated_at": TIME, "version": 2,
}
TOKEN = "k3Jv9q0Xw2yZ8uT1sR4pO6nM5lK7jH0g"
ENDPOINT = {
    "id": "7c1e5a3b-2d4f-4e6a-9b8c-0d1e2f3a4b5c", "organization_id": "org_acme", "url": "https://crm.example.com/hooks/anyreach",
    "events": ["conversation.form_submitted", "conversation.ended"], "description": "Leads into the CRM", "disabled": False,
    "disabled_reason": None, "created_at": TIME, "updated_at": TIME, "version": 1,
}

SCHEMA_EXAMPLES: dict[str, list[Any]] = {
    "AgentCreate": [{"name": "Support"}],
    "AgentOut": [{"id": AGENT_ID, "organization_id": "org_acme", "name": "Support", "versions": [VERSION],
                  "created_at": TIME, "updated_at": TIME, "version": 3}],
    "VersionCreate": [{"label": "launch"}],
    "VersionOut": [VERSION],
    "WidgetCreate": [{"agent_id": AGENT_ID, "agent_version_id": VERSION_ID,
                      "domains": ["example.com", "*.shop.example.org", "localhost:3000"], "config": CONFIG}],
    "WidgetOut": [WIDGET],
    "WidgetPage": [{"items": [WIDGET], "next_cursor": None}],
    "DomainsChange": [{"domains": ["example.com", "localhost:3000"]}],
    "VersionPin": [{"agent_version_id": VERSION_ID, "agent_id": AGENT_ID}],
    "PublicConfig": [{"id": WIDGET_ID, "config": CONFIG, "channel": "webrtc"}],
    "ConversationStart": [{"visitor": {"name": "Ada", "locale": "en-GB"}},
                          {"visitor_token": "eyJhbGciOiJFUzI1NiIsImtpZCI6InNpdGUtMjAyNiJ9.e30.c2ln", "context": {"page": "/pricing"}}],
    "GrantOut": [{"conversation_id": CONVERSATION_ID, "resume_token": TOKEN, "channel": "webrtc",
                  "livekit": {"url": "wss://livekit.example.com", "room": "conv-9a8b7c6d-1", "token": "eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
                              "expires_at": TIME}}],
    "Resume": [{"resume_token": TOKEN}],
    "ResumeRequest": [{"resume_token": TOKEN}, {"visitor_token": "eyJhbGciOiJFUzI1NiIsImtpZCI6InNpdGUtMjAyNiJ9.e30.c2ln",
                                                "context": {"plan": "pro"}}],
    "IdentityKeyAdd": [{"jwk": {"kty": "EC", "crv": "P-256", "kid": "site-2026",
                                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}],
    "VisitorConversations": [{"items": [{"conversation_id": CONVERSATION_ID, "started_at": TIME, "ended": False}], "next_cursor": None}],
    "FormSubmission": [{"resume_token": TOKEN, "values": {"email": "ada@example.com"}}],
    "FeedbackSubmission": [{"resume_token": TOKEN, "rating": 5, "comment": "Quick and clear."}],
    "History": [{"items": [{"widget_id": WIDGET_ID, "version": 2, "type": "widget.published", "occurred_at": TIME,
                            "actor": "user_42", "data": {}}], "next_after": None}],
    "EndpointCreate": [{"url": "https://crm.example.com/hooks/anyreach", "events": ["conversation.form_submitted", "conversation.ended"],
                        "description": "Leads into the CRM"}, {"url": "https://ops.example.com/audit", "events": ["*"]}],
    "EndpointChange": [{"events": ["*"]}, {"disabled": True}],
    "EndpointOut": [ENDPOINT],
    "EndpointWithSecretOut": [{**ENDPOINT, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw4pSmVJ6cuUk="}],
    "EndpointList": [{"items": [ENDPOINT]}],
    "Problem": [{"type": "https://docs.anyreach.dev/errors/agent-version-not-published", "title": "Agent version is not published",
                 "status": 409, "code": "agent_version_not_published",
                 "detail": f"Widget {WIDGET_ID} pins agent version {VERSION_ID}, which has not been published."},
                {"type": "https://docs.anyreach.dev/errors/invalid-request", "title": "The request is not valid", "status": 400,
                 "code": "invalid_request", "errors": [{"field": "config.v1.appearance.primary_color", "message": "must match #RRGGBB"}]}],
}
