"""Abuse limits on the public API: rate limits per client (and widget), shared through Redis, and the body size."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from infrastructure.settings import Settings
from tests.api.conftest import Admin, assert_problem, client_for
from tests.api.public_helpers import (
    ALLOWED_HEADERS,
    REFUSED,
    conversation_call,
    live_widget,
    position,
    start,
    started,
    widget_path,
)
from tests.conftest import ALL_WIRINGS

pytestmark = pytest.mark.wirings(*ALL_WIRINGS)

STARTS, READS = 3, 5


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return dataclasses.replace(settings, rate_conversation_starts=f"{STARTS}/minute", rate_config_reads=f"{READS}/minute")


@pytest.fixture
def app(limited: Settings) -> Litestar:
    return create_app(limited)


def assert_rate_limited(response: httpx.Response) -> None:
    assert_problem(response, 429, "rate_limited")
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60


def fresh_window() -> None:
    """Config reads count in fixed windows of a minute: start a test that needs one window well inside it."""
    if time.time() % 60 > 50:
        time.sleep(60 - time.time() % 60 + 0.05)


def read(client: TestClient[Litestar], widget_id: str) -> httpx.Response:
    return client.get(widget_path(widget_id), headers=ALLOWED_HEADERS)


def test_the_fourth_start_from_one_client_on_one_widget_is_429_with_retry_after(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    for _ in range(STARTS):
        started(client, widget["id"])
    before = position(app)
    assert_rate_limited(start(client, widget["id"]))
    assert_rate_limited(start(client, widget["id"]))
    assert position(app) == before, "a refused start wrote an event"


def test_starts_on_another_widget_are_counted_apart(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    first, second = live_widget(org_a, app), live_widget(org_a, app)
    for _ in range(STARTS):
        started(client, first["id"])
    assert_rate_limited(start(client, first["id"]))
    for _ in range(STARTS):
        started(client, second["id"])
    assert_rate_limited(start(client, second["id"]))


def test_resumes_and_other_conversation_calls_do_not_use_up_starts(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    for _ in range(STARTS + 2):
        response = conversation_call(client, widget["id"], grant["conversation_id"], "resume", {"resume_token": grant["resume_token"]})
        assert response.status_code == 200, response.text
        grant = response.json()  # each resume retires the token it was given
    for _ in range(STARTS - 1):
        started(client, widget["id"])


def test_refused_and_unknown_starts_are_not_counted(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    for _ in range(STARTS * 3):
        assert start(client, widget["id"], origin=REFUSED).status_code == 403
        assert start(client, widget["id"], origin=None).status_code == 403
    for _ in range(STARTS):
        started(client, widget["id"])
    assert_rate_limited(start(client, widget["id"]))


def test_the_sixth_config_read_from_one_client_is_429_across_widgets(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    fresh_window()
    first, second = live_widget(org_a, app), live_widget(org_a, app)
    for i in range(READS):
        assert read(client, (first, second)[i % 2]["id"]).status_code == 200
    assert_rate_limited(read(client, first["id"]))
    assert_rate_limited(read(client, second["id"]))


def test_preflights_are_not_counted(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    fresh_window()
    widget = live_widget(org_a, app)
    preflight = {**ALLOWED_HEADERS, "Access-Control-Request-Method": "POST"}
    for _ in range(READS * 4):
        assert client.options(widget_path(widget["id"]), headers=preflight).status_code == 204
        assert client.options(widget_path(widget["id"], "conversations"), headers=preflight).status_code == 204
    for _ in range(READS):
        assert read(client, widget["id"]).status_code == 200
    for _ in range(STARTS):
        started(client, widget["id"])
    assert_rate_limited(start(client, widget["id"]))


@pytest.mark.parametrize("settings", ["production"], indirect=True)
def test_two_instances_on_one_redis_prefix_share_their_start_counts(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], limited: Settings
) -> None:
    widget = live_widget(org_a, app)
    with client_for(create_app(limited)) as second:
        started(client, widget["id"])
        started(second, widget["id"])
        started(client, widget["id"])
        assert_rate_limited(start(second, widget["id"]))
        assert_rate_limited(start(client, widget["id"]))


@pytest.mark.parametrize("settings", ["production"], indirect=True)
def test_two_instances_on_one_redis_prefix_share_their_config_read_counts(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], limited: Settings
) -> None:
    # Limits this small are decided on the shared total every time (infrastructure/ratelimit.py): exact across instances.
    widget = live_widget(org_a, app)
    with client_for(create_app(limited)) as second:
        fresh_window()
        allowed = 0
        for i in range(READS * 4):
            response = read((client, second)[i % 2], widget["id"])
            if response.status_code == 200:
                allowed += 1
            else:
                assert_rate_limited(response)
        assert allowed == READS, f"{allowed} reads allowed across two instances with a limit of {READS}"
        assert_rate_limited(read(client, widget["id"]))
        assert_rate_limited(read(second, widget["id"]))


@pytest.mark.parametrize("settings", ["production"], indirect=True)
def test_instances_on_different_redis_prefixes_count_apart(org_a: Admin, app: Litestar, client: TestClient[Litestar], limited: Settings) -> None:
    widget = live_widget(org_a, app)
    for _ in range(STARTS):
        started(client, widget["id"])
    assert_rate_limited(start(client, widget["id"]))
    apart = create_app(dataclasses.replace(limited, redis_prefix=limited.redis_prefix + "apart:"))
    with client_for(apart) as other:
        assert start(other, widget["id"]).status_code in (201, 404)  # its own read model may not hold the widget; never 429


# --- body size -----------------------------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid start body of exactly `size` bytes."""
    body = json.dumps({"visitor": {"name": "Ann"}}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_a_public_body_of_8_kib_is_accepted_and_one_byte_more_is_413(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    headers = {**ALLOWED_HEADERS, "Content-Type": "application/json"}
    response = client.post(widget_path(widget["id"], "conversations"), content=padded(8 * 1024), headers=headers)
    assert response.status_code == 201, response.text
    before = position(app)
    response = client.post(widget_path(widget["id"], "conversations"), content=padded(8 * 1024 + 1), headers=headers)
    assert_problem(response, 413, "body_too_large")
    assert position(app) == before


def test_an_oversized_public_body_is_413_without_a_content_length_too(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])

    def chunks() -> Iterator[bytes]:
        yield b'{"resume_token": "' + grant["resume_token"].encode() + b'", "values": {"note": "'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"}}'

    before = position(app)
    path = widget_path(widget["id"], "conversations", grant["conversation_id"], "forms", "pre")
    response = client.post(path, content=chunks(), headers={**ALLOWED_HEADERS, "Content-Type": "application/json"})
    assert_problem(response, 413, "body_too_large")
    assert position(app) == before


@pytest.mark.parametrize("action", ["resume", "forms/pre", "feedback", "end"])
def test_every_public_post_refuses_bodies_over_8_kib(action: str, org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> None:
    widget = live_widget(org_a, app)
    grant = started(client, widget["id"])
    body = json.dumps({"resume_token": grant["resume_token"], "comment": "x" * 9000}).encode()
    path = widget_path(widget["id"], "conversations", grant["conversation_id"], action)
    response = client.post(path, content=body, headers={**ALLOWED_HEADERS, "Content-Type": "application/json"})
    assert_problem(response, 413, "body_too_large")
