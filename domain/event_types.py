"""The public event type names: a contract with auditors, independent of class names.

They are also the topics under which events are stored, so renaming or moving
an event class never changes a stored event or what auditors see.
"""

WIDGET = "widget"
WIDGET_CREATED = "widget.created"
WIDGET_DOMAINS_CHANGED = "widget.domains_changed"
WIDGET_VERSION_PINNED = "widget.version_pinned"
WIDGET_CONFIG_CHANGED = "widget.config_changed"
WIDGET_PUBLISHED = "widget.published"
WIDGET_UNPUBLISHED = "widget.unpublished"
WIDGET_DELETED = "widget.deleted"
WIDGET_IDENTITY_KEY_ADDED = "widget.identity_key_added"
WIDGET_IDENTITY_KEY_REMOVED = "widget.identity_key_removed"
WIDGET_RETENTION_CHANGED = "widget.retention_changed"

AGENT = "agent"
AGENT_CREATED = "agent.created"
AGENT_VERSION_CREATED = "agent.version_created"
AGENT_VERSION_PUBLISHED = "agent.version_published"
AGENT_VERSION_UNPUBLISHED = "agent.version_unpublished"

CONVERSATION = "conversation"
CONVERSATION_STARTED = "conversation.started"
CONVERSATION_RESUMED = "conversation.resumed"
CONVERSATION_FORM_SUBMITTED = "conversation.form_submitted"
CONVERSATION_FEEDBACK_GIVEN = "conversation.feedback_given"
CONVERSATION_ENDED = "conversation.ended"
CONVERSATION_PERSONAL_DATA_ERASED = "conversation.personal_data_erased"

WEBHOOK_ENDPOINT = "webhook_endpoint"
WEBHOOK_ENDPOINT_CREATED = "webhook_endpoint.created"
WEBHOOK_ENDPOINT_URL_CHANGED = "webhook_endpoint.url_changed"
WEBHOOK_ENDPOINT_EVENTS_CHANGED = "webhook_endpoint.events_changed"
WEBHOOK_ENDPOINT_SECRET_ROTATED = "webhook_endpoint.secret_rotated"
WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled"
WEBHOOK_ENDPOINT_ENABLED = "webhook_endpoint.enabled"
WEBHOOK_ENDPOINT_DELETED = "webhook_endpoint.deleted"

AGGREGATE_TYPES = (WIDGET, AGENT, CONVERSATION, WEBHOOK_ENDPOINT)
# Every event name above, in the order declared: what the audit feed shows and webhooks may carry.
# Keep these two lines last: a name declared below them would be missing here (tests/unit/test_schema_evolution.py checks).
EVENT_TYPES: tuple[str, ...] = tuple(v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str) and "." in v)
