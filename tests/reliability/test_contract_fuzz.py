"""Fuzzing the contract: schemathesis generates requests from the service's own OpenAPI document.

On both wirings, with valid admin tokens of two organizations taking turns, and
path parameters that are often the real ids of either organization's agents,
versions, widgets and conversations: no answer is a 5xx, every answer's status,
content type, headers and body are the ones the document declares, every error
is an RFC 9457 problem, an input outside the document is refused, and no admin
answer shows one organization anything of the other's.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections import Counter
from itertools import cycle
from typing import Any
from urllib.parse import unquote

import hypothesis
import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from litestar import Litestar
from litestar.testing import TestClient
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup, ServerError
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from infrastructure.settings import Settings
from tests.conftest import admin_headers
from tests.reliability.conftest import Tenant, record

pytestmark = pytest.mark.slow

# CI's floor is 2,000 requests per wiring; WIDGETS_FUZZ_REQUESTS raises it for a longer local run.
TARGET = max(2000, int(os.environ.get("WIDGETS_FUZZ_REQUESTS", "2000")))
PER_OPERATION = {GenerationMode.POSITIVE: 45, GenerationMode.NEGATIVE: 30}
# The embed loader is a static script with no input; its route lives in api/embed_routes.py.
NOT_FUZZED = {"/embed.js"}
ORIGINS = ["https://example.com", "http://localhost:3000", "https://evil.example.net", "null", "https://example.com:8443"]
PROBLEM_JSON = "application/problem+json"
# What an answer would show only if a stack trace, an SQL statement or a driver's error got out.
INTERNALS = ("traceback (most recent call last)", '.py", line', "psycopg.", "sqlite3.", "eventsourcing.", "select * from",
             "insert into", "stored_events", "notification_id")


def no_server_error(ctx: Any, response: Any, case: Any) -> None:
    """No 5xx, except the documented 504 of a read-your-writes wait whose position was never reached."""
    if response.status_code == 504 and case.operation.path == "/v1/read-models/wait":
        return
    if response.status_code >= 500:
        raise ServerError(operation=case.operation.label, status_code=response.status_code)


def errors_are_problems(ctx: Any, response: Any, case: Any) -> None:
    """Every 4xx/5xx is application/problem+json with type, title, status and code, and no internals."""
    if response.status_code < 400:
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith(PROBLEM_JSON), f"{response.status_code} answered {content_type!r}"
    body = response.json()
    assert body["status"] == response.status_code, body
    assert re.fullmatch(r"[a-z][a-z0-9_]*", body["code"]), body
    assert body["type"] == f"https://docs.anyreach.dev/errors/{body['code'].replace('_', '-')}", body
    assert isinstance(body["title"], str) and body["title"], body
    text = response.content.decode(errors="replace").lower()
    leaked = [marker for marker in INTERNALS if marker in text and marker not in sent_text(response)]
    assert not leaked, f"the problem shows internals {leaked}: {text[:500]}"


def sent_text(response: Any) -> str:
    """What the request itself carried, which an error may echo (JSON-escaped) without leaking anything."""
    body = response.request.body or b""
    sent = unquote(str(response.request.url)) + (body.decode(errors="replace") if isinstance(body, bytes) else str(body))
    return sent.lower() + json.dumps(sent).lower()


def caller_organization(response: Any) -> str | None:
    authorization = response.request.headers.get("authorization", "")
    token = authorization.partition(" ")[2]
    return jwt.decode(token, options={"verify_signature": False}).get("org_id") if token else None


def invalid_input_is_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """Input outside the document is refused with a 4xx: any 4xx, a 413 for an oversized body included."""
    if 400 <= response.status_code < 500:
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    invalid_input_is_refused,
    errors_are_problems,
]


def real_path_parameters(path: str, tenants: tuple[Tenant, Tenant]) -> list[dict[str, str]]:
    """Every combination of both organizations' real ids that fills this path's parameters."""
    names = re.findall(r"{(\w+)}", path)
    if not names:
        return []
    found: list[dict[str, str]] = []
    for tenant in tenants:
        ids = tenant.ids
        widgets = [ids["widget_id"]] if path.startswith("/public/") else [ids["widget_id"], ids["draft_widget_id"]]
        for widget_id in widgets:
            for version_id in (ids["version_id"], ids["draft_version_id"]):
                values = {"agent_id": ids["agent_id"], "version_id": version_id, "widget_id": widget_id,
                          "cid": ids["cid"], "form_id": ids["form_id"], "kid": "no-such-key",
                          "endpoint_id": ids["endpoint_id"], "conversation_id": ids["cid"], "external_id": "visitor-1",
                          "message_id": "msg_" + "0" * 32}
                candidate = {name: values[name] for name in names}
                if candidate not in found:
                    found.append(candidate)
    return found


def has_input(operation: Any) -> bool:
    return bool(operation.path_parameters or operation.query or operation.headers or operation.body)


class Fuzzer:
    """Sends schemathesis cases through the app and collects every failed check, not only the first."""

    def __init__(self, client: TestClient[Litestar], settings: Settings, tenants: tuple[Tenant, Tenant]) -> None:
        self.client = client
        client.event_hooks = {"request": [], "response": []}  # a 5xx is a finding to collect, not a crash
        self.tenants = tenants
        self.tokens = cycle([admin_headers(settings, t.org, f"fuzzer_{t.org}")["Authorization"] for t in tenants])
        self.origins = cycle(ORIGINS)
        self.foreign_ids = {t.org: {v for k, v in t.ids.items() if k not in ("form_id", "resume_token")} for t in tenants}
        self.resume_tokens = {t.ids["resume_token"] for t in tenants}
        self.requests = 0
        self.runs = 0
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.failures: dict[str, str] = {}
        # Each wiring, and each CI run, explores other inputs; a failure names the seed that reproduces it.
        self.seed = int(os.environ.get("WIDGETS_FUZZ_SEED") or random.SystemRandom().getrandbits(48))

    def run(self, operation: Any, mode: GenerationMode, examples: int) -> None:
        variants = [operation.as_strategy(mode)]
        variants += [operation.as_strategy(mode, path_parameters=p) for p in real_path_parameters(operation.path, self.tenants)]
        self.runs += 1

        @hypothesis.seed(self.seed + self.runs)
        @hypothesis.settings(
            max_examples=examples, deadline=None, database=None, phases=[hypothesis.Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=st.one_of(variants), use_real_token=st.booleans())
        def send(case: Any, use_real_token: bool) -> None:
            self.send(case, use_real_token and mode is GenerationMode.POSITIVE)

        try:
            send()
        except Unsatisfiable:
            pass  # nothing in this operation can be made invalid (e.g. a free-form string path parameter)

    def send(self, case: Any, use_real_token: bool) -> None:
        path = case.operation.path
        headers = {} if negated_authorization(case) else {"Authorization": next(self.tokens)}
        if path.startswith("/public/"):
            headers["Origin"] = next(self.origins)
            if use_real_token and isinstance(case.body, dict) and "resume_token" in case.body:
                case.body = {**case.body, "resume_token": self.token_of(case.path_parameters.get("widget_id"))}
        if path == "/v1/read-models/wait":  # a far position would otherwise wait out the whole timeout
            query = dict(case.query or {})
            query["timeout"] = 0.01 if _is_number(query.get("timeout")) or "timeout" not in query else query["timeout"]
            case.query = query
        kwargs = case.as_transport_kwargs(base_url="http://testserver.local", headers=headers)
        if not kwargs.get("cookies"):
            kwargs.pop("cookies", None)
        if isinstance(kwargs.get("data"), bytes):
            kwargs["content"] = kwargs.pop("data")
        # A generated header value beyond ASCII goes on the wire as its UTF-8 octets (obs-text), as a raw client
        # could send it; httpx refuses such a str itself, before the server could answer.
        kwargs["headers"] = {name: value.encode() if isinstance(value, str) and not value.isascii() else value
                             for name, value in (kwargs.get("headers") or {}).items()}
        response = self.client.request(**kwargs)
        self.requests += 1
        self.statuses[(f"{case.operation.method.upper()} {path}", response.status_code)] += 1
        try:
            case.validate_response(response, checks=CHECKS)
            self.check_tenant_isolation(case, response)
        except (FailureGroup, AssertionError) as failure:
            key = (f"{case.operation.method.upper()} {path} -> {response.status_code}: {type(failure).__name__} "
                   f"(WIDGETS_FUZZ_SEED={self.seed})")
            self.failures.setdefault(key, f"{str(failure)[:3000]}\nbody: {response.text[:500]}")

    def token_of(self, widget_id: str | None) -> str:
        for tenant in self.tenants:
            if widget_id == tenant.ids["widget_id"]:
                return tenant.ids["resume_token"]
        return self.tenants[0].ids["resume_token"]

    def check_tenant_isolation(self, case: Any, response: Any) -> None:
        """An admin answer that succeeded names nothing of the other organization; only a visitor's own grant holds a resume token."""
        text = response.text
        grant = case.operation.path.startswith("/public/") and response.status_code < 300
        assert grant or not any(token in text for token in self.resume_tokens), "a resume token was answered back"
        if not case.operation.path.startswith("/v1/") or response.status_code >= 300:
            return
        caller = caller_organization(response)
        for org, ids in self.foreign_ids.items():
            if org != caller:
                leaked = [i for i in ids if i in text]
                assert not leaked, f"{caller} was shown {org}'s {leaked}"


def negated_authorization(case: Any) -> bool:
    """A negative case of a secured operation whose headers are the invalid part: its Authorization stays as generated
    (missing or malformed, which must get a 401), since a real token put back would make the case valid again."""
    header = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    return bool(case.operation.definition.raw.get("security")) and header is not None and header.mode is GenerationMode.NEGATIVE


def _is_number(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def test_generated_requests_get_only_documented_answers_and_never_a_server_error(
    app: Litestar, client: TestClient[Litestar], settings: Settings, tenants: tuple[Tenant, Tenant], request: pytest.FixtureRequest
) -> None:
    wiring = request.node.callspec.params["settings"]
    document = client.get("/schema/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if op.path not in NOT_FUZZED]
    fuzzer = Fuzzer(client, settings, tenants)
    started = time.monotonic()

    for operation in operations:
        for mode, examples in PER_OPERATION.items():
            if has_input(operation):
                fuzzer.run(operation, mode, examples)
            elif mode is GenerationMode.POSITIVE:
                fuzzer.run(operation, mode, 1)  # nothing to vary: one request says it all
    with_input = [op for op in operations if has_input(op)]
    for _ in range(10):  # top up to the target with more valid requests, spread over every operation with input
        if fuzzer.requests >= TARGET:
            break
        for operation in with_input:
            fuzzer.run(operation, GenerationMode.POSITIVE, -(-(TARGET - fuzzer.requests) // len(with_input)) + 1)

    record(f"fuzz.{wiring}.requests", fuzzer.requests)
    record(f"fuzz.{wiring}.operations", len(operations))
    record(f"fuzz.{wiring}.seconds", round(time.monotonic() - started))
    record(f"fuzz.{wiring}.seed", fuzzer.seed)  # WIDGETS_FUZZ_SEED=<this> replays the same inputs
    for (_, status), count in fuzzer.statuses.items():  # the only 5xx let through is a wait's documented 504
        record(f"fuzz.{wiring}.answers_{'504_wait' if status == 504 else f'{status // 100}xx'}", count)
    record(f"fuzz.{wiring}.failures", len(fuzzer.failures))
    assert not fuzzer.failures, "\n\n".join(f"{k}\n{v}" for k, v in fuzzer.failures.items())
    assert fuzzer.requests >= TARGET
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
