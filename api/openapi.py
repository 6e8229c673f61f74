"""The OpenAPI document, made to say what the server enforces, so that tools nobody here wrote can trust it.

Litestar generates most of it from the route decorators (hand-given operation
ids, tags, summaries, descriptions, problem responses). Two steps here add what
it cannot say on its own:

- `StrictStructSchemaPlugin`: a request struct that forbids unknown fields is
  documented with `additionalProperties: false`.
- `finish_document`, run once over the generated document before it is served:
  the headers every answer carries (`X-Request-Id`; `Retry-After` on 429 and
  503; CORS on public calls), the 414 and 431 every operation can answer
  (api/request_limits.py), optional bodies marked optional, links that let a
  client (or schemathesis' stateful phase) follow an answer's ids to the next
  call, examples on the main bodies, and patterns rewritten from Python's `\\Z`
  (end of text) to JSON Schema's `$`, which means the same there.
"""

from __future__ import annotations

import copy
import html
import threading
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar._openapi.plugin import OpenAPIPlugin
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.datastructures import ResponseHeader
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag
from litestar.typing import FieldDefinition

from api import openapi_examples
from api.request_limits import HEADERS_LIMIT, URI_LIMIT
from domain.config import WidgetConfig
from domain.widget import MAX_RETENTION_DAYS

# What the server checks these values against (api/admin.py, api/admin_lists.py); the document says the same.
ETAG_PATTERN = r'^(\*|(W/)?"[0-9]{1,12}")$'
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,200}$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
BEARER = [{"bearer": []}]

ETAG_HEADER = ResponseHeader(name="ETag", value='"1"', documentation_only=True, required=True,
                             description='The widget\'s version (`"3"`), to send back as `If-Match`')
EVENT_POSITION_HEADER = ResponseHeader(
    name="X-Event-Position", value="1", documentation_only=True,
    description="The event store position of what this command saved (absent when it changed nothing): "
                "`GET /v1/read-models/wait?position=N` answers once every read model has reached it",
)
# Header schemas the document states wherever the header appears.
HEADER_SCHEMAS: dict[str, dict[str, Any]] = {
    "ETag": {"type": "string", "pattern": r'^"[0-9]{1,12}"$'},
    "X-Event-Position": {"type": "string", "pattern": r"^[0-9]{1,19}$"},
}

TAGS = [
    Tag(name="agents", description="Agents and their numbered versions; a widget pins one published version."),
    Tag(name="widgets", description="Widgets: allowed domains, pinned agent version, config, publication and history."),
    Tag(name="audit", description="The organization's events in commit order (`audit:read`)."),
    Tag(name="personal-data", description="Erasing a visitor's personal data (crypto-shredding): one conversation, or every "
                                          "conversation of a verified visitor."),
    Tag(name="public", description="What the embed loader on a customer's page calls: no token, the page's `Origin` is checked."),
    Tag(name="embed", description="The embed loader script."),
    Tag(name="webhooks", description="Webhooks this service receives."),
    Tag(name="webhook-endpoints", description="Outgoing webhooks: the organization's endpoints that hear about its events, "
                                              "signed (Standard Webhooks) and delivered at least once."),
    Tag(name="operations", description="Health, readiness, metrics and read-your-writes waiting."),
]

DESCRIPTION = f"""\
The Anyreach web widget service. Admin calls (`/v1/...`) take `Authorization: Bearer <jwt>`; public calls
(`/public/v1/...`) come from a browser page whose `Origin` the widget allows. Every error is an RFC 9457
problem (`application/problem+json`) with a stable `code`. Every command's answer carries
`X-Event-Position`; `GET /v1/read-models/wait?position=N` answers once the read models have reached it.
`HEAD` is answered wherever `GET` is, and `OPTIONS` lists the allowed methods in `Allow`.
Any call is refused with 414 `uri_too_long` when its path and query are over {URI_LIMIT} bytes, and with 431
`request_header_fields_too_large` when its header names and values are over {HEADERS_LIMIT} bytes in total.
"""


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Documents a struct declared with `forbid_unknown_fields=True` as a closed object."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Any:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if field_definition.type_.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        return schema


def _header(description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


REQUEST_ID = _header("This request's id, as logged (taken from the request's own `X-Request-Id` when well-formed)",
                     {"type": "string", "pattern": r"^[A-Za-z0-9._-]{8,64}$"})
RETRY_AFTER = _header("Seconds to wait before retrying", {"type": "string", "pattern": r"^[0-9]+$"}, required=True)
PUBLIC_ID = {"type": "string", "pattern": UUID_PATTERN,
             "description": "A UUID in its canonical form, as the embed loader sends it (other spellings of the same UUID "
                            "are read as it; anything else is a 404)"}
PUBLIC_ID_PARAMETERS = ("widget_id", "cid")
# The public config read's caching headers: Litestar drops a route's `response_headers` when its 200 is declared.
PUBLIC_CONFIG_HEADERS = {
    "ETag": _header("The config's version (`\"3\"`), for `If-None-Match`", {"type": "string", "pattern": r'^"[0-9]{1,12}"$'},
                    required=True),
    "Cache-Control": _header("How long a browser may reuse the answer", {"type": "string"}, required=True),
}
CORS_HEADERS = {
    "Access-Control-Allow-Origin": _header("The page's origin, when the widget allows it", {"type": "string"}),
    "Vary": _header("`Origin`: answers differ by origin", {"type": "string"}),
}

# What every operation can answer before it is routed (api/request_limits.py).
LIMIT_RESPONSES = {
    str(status): {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        "headers": {"X-Request-Id": REQUEST_ID},
    }
    for status, description in (
        (414, f"URI too long (`uri_too_long`): the path and query are over {URI_LIMIT} bytes"),
        (431, f"Request header fields too large (`request_header_fields_too_large`): the header names and values "
              f"are over {HEADERS_LIMIT} bytes in total"),
    )
}

# Where an answer's ids lead: (operation id, status) -> {link name: (target operation id, {parameter: expression}[, body])}.
# A body, when given, is merged into the one a client (or schemathesis) would send; an `ETag` answered is the next
# change's `If-Match`, so a chain of calls meets no 412 it did not ask for.
WIDGET = "$response.body#/id"
WIDGET_AT_VERSION = {"widget_id": WIDGET, "header.If-Match": "$response.header.ETag"}
WIDGET_LINKS: dict[str, tuple[str, dict[str, str]]] = {
    "GetWidget": ("get_widget", {"widget_id": WIDGET}),
    "ChangeDomains": ("change_widget_domains", WIDGET_AT_VERSION),
    "PinVersion": ("pin_widget_agent_version", WIDGET_AT_VERSION),
    "ReplaceConfig": ("replace_widget_config", WIDGET_AT_VERSION),
    "PatchConfig": ("patch_widget_config", WIDGET_AT_VERSION),
    "ChangeRetention": ("change_widget_retention", WIDGET_AT_VERSION),
    "AddIdentityKey": ("add_identity_key", WIDGET_AT_VERSION),
    "Publish": ("publish_widget", WIDGET_AT_VERSION),
    "Unpublish": ("unpublish_widget", WIDGET_AT_VERSION),
    "History": ("get_widget_history", {"widget_id": WIDGET}),
    "Conversations": ("list_widget_conversations", {"widget_id": WIDGET}),
    "Stats": ("get_widget_stats", {"widget_id": WIDGET}),
    "Installations": ("list_widget_installations", {"widget_id": WIDGET}),
    "Delete": ("delete_widget", WIDGET_AT_VERSION),
    "PublicConfig": ("get_public_widget_config", {"widget_id": WIDGET}),
    "StartConversation": ("start_conversation", {"widget_id": WIDGET}),
    "VisitorConversations": ("list_visitor_conversations", {"widget_id": WIDGET}),
}
# A widget on the version just created or published, on a domain that is surely valid (the rest as generated).
NEW_WIDGET = ("create_widget", {}, {"agent_id": "$response.body#/agent_id", "agent_version_id": "$response.body#/id",
                                    "domains": ["example.com"]})
RESUME_TOKEN = {"resume_token": "$response.body#/resume_token"}
CONVERSATION = {"widget_id": "$request.path.widget_id", "cid": "$response.body#/conversation_id"}
ENDPOINT = {"endpoint_id": "$response.body#/id", "header.If-Match": "$response.header.ETag"}
LINKS: dict[tuple[str, str], dict[str, tuple[Any, ...]]] = {
    ("create_agent", "201"): {
        "GetAgent": ("get_agent", {"agent_id": "$response.body#/id"}),
        "CreateVersion": ("create_agent_version", {"agent_id": "$response.body#/id"}),
    },
    ("create_agent_version", "201"): {
        "PublishVersion": ("publish_agent_version",
                           {"agent_id": "$response.body#/agent_id", "version_id": "$response.body#/id"}),
        "UnpublishVersion": ("unpublish_agent_version",
                             {"agent_id": "$response.body#/agent_id", "version_id": "$response.body#/id"}),
        "CreateWidget": NEW_WIDGET,
    },
    ("publish_agent_version", "200"): {"CreateWidget": NEW_WIDGET},
    ("create_widget", "201"): WIDGET_LINKS,
    ("publish_widget", "200"): WIDGET_LINKS,
    ("start_conversation", "201"): {
        "EndConversation": ("end_conversation", CONVERSATION, RESUME_TOKEN),
        "GiveFeedback": ("give_conversation_feedback", CONVERSATION, RESUME_TOKEN),
        "ResumeConversation": ("resume_conversation", CONVERSATION, RESUME_TOKEN),
        "SubmitForm": ("submit_conversation_form", CONVERSATION, RESUME_TOKEN),
        "ErasePersonalData": ("erase_conversation_personal_data",
                              {"widget_id": "$request.path.widget_id", "conversation_id": "$response.body#/conversation_id"}),
    },
    ("create_webhook_endpoint", "201"): {
        "GetEndpoint": ("get_webhook_endpoint", {"endpoint_id": "$response.body#/id"}),
        "ChangeEndpoint": ("change_webhook_endpoint", ENDPOINT),
        "RotateSecret": ("rotate_webhook_endpoint_secret", ENDPOINT),
        "DeleteEndpoint": ("delete_webhook_endpoint", ENDPOINT),
    },
}


REF = "#/components/schemas/"
# Bodies and fields that the handlers take as raw JSON, so that the domain can name every invalid field at once,
# documented with the schema the domain checks them against (domain/config.py).
BODY_SCHEMAS = {"replace_widget_config": "WidgetConfig", "patch_widget_config": "WidgetConfigPatch"}
PROPERTY_SCHEMAS = {
    # Litestar leaves out a bound of 0 (`ge=0`) on a nullable field; the server refuses a negative count of days.
    ("RetentionChange", "days"): {"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_RETENTION_DAYS}, {"type": "null"}],
                                  "description": "Days after a conversation's last activity (0: until it ends); null: until erased"},
    ("WidgetCreate", "config"): {"anyOf": [{"$ref": REF + "WidgetConfig"}, {"type": "null"}]},
    ("WidgetOut", "config"): {"$ref": REF + "WidgetConfig"},
    ("PublicConfig", "config"): {"$ref": REF + "WidgetConfig"},
    ("FeedbackSubmission", "rating"): {"type": "integer", "minimum": 0, "maximum": 5,
                                       "description": "On the widget's feedback scale: thumbs 0-1, stars and scale_5 1-5"},
}


def config_components() -> dict[str, Any]:
    """The config's schemas (every section closed), and for each a merge-patch twin whose fields are all optional and nullable."""
    (_,), components = msgspec.json.schema_components([WidgetConfig], ref_template=REF + "{name}")
    patches = {
        f"{name}Patch": {
            "title": f"{name}Patch",
            "description": f"A JSON merge patch (RFC 7396) of {name}: a field left out is kept, `null` resets it to its default.",
            "type": "object",
            "additionalProperties": False,
            "properties": {key: {"anyOf": [_patch_of(value), {"type": "null"}]} for key, value in schema["properties"].items()},
        }
        for name, schema in components.items()
    }
    return {**components, **patches}


def _patch_of(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:  # a section is merged field by field; anything else (lists included) is replaced whole
        return {"$ref": schema["$ref"] + "Patch"}
    return {key: value for key, value in schema.items() if key != "default"}


def _walk(node: Any) -> Any:
    """Every dict in the document, depth first."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _operations(document: dict[str, Any]) -> Any:
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "responses" in operation:
                yield path, method, operation


def _admits_null(schema: dict[str, Any]) -> bool:
    return any(option.get("type") == "null" for option in schema.get("oneOf", []) + schema.get("anyOf", []))


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`X | None` as a parameter's schema: the `null` left out, the one option left merged with the constraints beside it."""
    for key in ("oneOf", "anyOf"):
        options = schema.get(key)
        if options and any(option.get("type") == "null" for option in options):
            rest = [option for option in options if option.get("type") != "null"]
            outer = {k: v for k, v in schema.items() if k != key}
            if len(rest) == 1 and "$ref" not in rest[0]:
                return {**rest[0], **outer}
            return {**outer, key: rest}
    return schema


def finish_document(generated: dict[str, Any]) -> dict[str, Any]:
    """The generated document with what Litestar cannot say itself (see the module docstring); the input is untouched."""
    document = copy.deepcopy(generated)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(config_components())
    for (component, field), schema in PROPERTY_SCHEMAS.items():
        if component in schemas:
            schemas[component]["properties"][field] = schema
    for node in _walk(document):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and pattern.endswith("\\Z"):
            node["pattern"] = pattern[:-2] + "$"
    ids = {operation["operationId"]: (path, method) for path, method, operation in _operations(document)}
    for path, _, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            parameter["schema"] = _not_null(parameter["schema"])  # a query, path or header value is never JSON null
            if path.startswith("/public/v1/") and parameter["in"] == "path" and parameter["name"] in PUBLIC_ID_PARAMETERS:
                parameter["schema"] = dict(PUBLIC_ID)
        body = operation.get("requestBody")
        if operation["operationId"] in BODY_SCHEMAS:
            body["content"]["application/json"]["schema"] = {"$ref": REF + BODY_SCHEMAS[operation["operationId"]]}
        if body is not None:
            schema = body.get("content", {}).get("application/json", {}).get("schema", {})
            if _admits_null(schema):
                body["required"] = False  # no body at all means the same as `null`
        for status, response in operation["responses"].items():
            headers = response.setdefault("headers", {})
            for name, header in headers.items():
                if name in HEADER_SCHEMAS:
                    header["schema"] = HEADER_SCHEMAS[name]
            headers["X-Request-Id"] = REQUEST_ID
            if status in ("429", "503"):
                headers["Retry-After"] = RETRY_AFTER
            if path.startswith("/public/v1/"):
                headers.update(CORS_HEADERS)
            if operation["operationId"] == "get_public_widget_config" and status in ("200", "304"):
                headers.update(PUBLIC_CONFIG_HEADERS)
            for name, (target, parameters, *body) in LINKS.get((operation["operationId"], status), {}).items():
                if target in ids:
                    link: dict[str, Any] = {"operationId": target, "parameters": parameters}
                    if body:
                        link["requestBody"] = body[0]
                    response.setdefault("links", {})[name] = link
        for status, response in LIMIT_RESPONSES.items():  # answered before routing: no CORS, no route's own headers
            operation["responses"].setdefault(status, copy.deepcopy(response))
    for name, examples in openapi_examples.SCHEMA_EXAMPLES.items():
        if name in schemas:
            schemas[name]["examples"] = examples
    return document


class ContractJsonPlugin(JsonRenderPlugin):
    """Serves `/schema/openapi.json` as `finish_document` leaves it (computed once per app)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._source: dict[str, Any] | None = None
        self._document: dict[str, Any] = {}
        self._body: bytes = b""

    def document(self, openapi_schema: dict[str, Any]) -> dict[str, Any]:
        """The finished document (not to be changed by the caller)."""
        with self._lock:
            if openapi_schema is not self._source:
                self._document = finish_document(openapi_schema)
                self._body = msgspec.json.encode(self._document)
                self._source = openapi_schema
            return self._document

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        self.document(openapi_schema)
        return self._body


def served_document(app: Litestar) -> dict[str, Any]:
    """The document `/schema/openapi.json` serves for this app: the contract that the server enforces."""
    config = app.openapi_config
    plugin = next((p for p in config.render_plugins if isinstance(p, ContractJsonPlugin)), None) if config else None
    if plugin is None:
        return {}
    return plugin.document(app.plugins.get(OpenAPIPlugin).provide_openapi_schema())


class OfflineScalarPlugin(ScalarRenderPlugin):
    """Scalar's UI at `/schema`, from the copy the embed build serves (`/embed/scalar-<hash>.js`, pinned by
    package-lock.json): nothing from a CDN, so the page works offline, under a policy that allows only our origin."""

    def __init__(self) -> None:
        super().__init__(path="/", options={"withDefaultFonts": False, "hideClientButton": True})

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        from api.embed_routes import DIST, load_bundle

        bundle = load_bundle(DIST)
        script = next((name for name in (bundle.chunks if bundle else {}) if name.startswith("scalar-")), None)
        if script is None:
            return (b"<!doctype html><title>API reference</title><p>The UI is not built (`make serve` builds it); "
                    b"the document is at <a href=\"/schema/openapi.json\">/schema/openapi.json</a>.")
        title = html.escape(openapi_schema["info"]["title"])
        options = html.escape(msgspec.json.encode(self.options).decode())
        policy = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                  "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'")
        return (
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{title}</title><link rel=\"icon\" href=\"data:,\"></head><body>"
            "<noscript>This page needs JavaScript; the document itself is <a href=\"/schema/openapi.json\">/schema/openapi.json</a>.</noscript>"
            f"<script id=\"api-reference\" type=\"application/json\" data-url=\"/schema/openapi.json\" data-configuration=\"{options}\"></script>"
            f"<script src=\"/embed/{script}\"></script></body></html>"
        ).encode()


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Anyreach web widgets",
        version="1.0.0",
        description=DESCRIPTION,
        path="/schema",
        tags=TAGS,
        components=Components(security_schemes={
            "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT",
                                     description="An admin token (HS256): `sub`, `org_id`, `scope`, `exp`"),
        }),
        render_plugins=[OfflineScalarPlugin(), ContractJsonPlugin()],
    )
