"""At least once across crashes: the projection process (`widgets project`, which also delivers webhooks) is
SIGKILLed again and again while 40 events stream in; afterwards every event has reached the receiver, and any
delivery made twice carries its original `webhook-id`."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.app import create_app
from infrastructure.settings import Settings, env_name
from tests.api.conftest import Admin, client_for
from tests.webhook_receiver import Receiver, receiving, verified

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 40


def projector(settings: Settings) -> subprocess.Popen[bytes]:
    env = {**os.environ, **{env_name(f.name): str(getattr(settings, f.name)) for f in dataclasses.fields(settings)
                            if f.name in {"database_url", "database_schema", "redis_url", "redis_prefix", "data_dir", "auth_secret", "data_key",
                                          "webhook_allow_private", "webhook_retry_schedule", "webhook_deliveries", "log_level", "log_format"}}}
    env["WIDGETS_METRICS_PORT"] = "0"
    return subprocess.Popen([sys.executable, "-m", "api.cli", "project"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        running.delays["/crm"] = 0.03  # wide enough that some kills land between a send and its record
        yield running


def test_every_event_is_delivered_across_sigkills_and_repeats_keep_their_id(
    production_settings: Settings, receiver: Receiver
) -> None:
    settings = dataclasses.replace(production_settings, projections="external", webhook_allow_private=True, webhook_deliveries=True,
                                   webhook_retry_schedule="0.2,0.5,1,1,1,1,1,1", log_level="critical")
    app = create_app(settings)
    rng = random.Random(16)
    with client_for(app) as client:
        admin = Admin(client, settings, "org_a", "alice")
        response = admin.call("POST", "/v1/webhook-endpoints", json={"url": receiver.url("/crm"), "events": ["agent.created"]})
        assert response.status_code == 201, response.text
        secret = response.json()["secret"]
        agents: list[str] = []

        def stream() -> None:
            for i in range(EVENTS):
                agents.append(admin.agent(f"Agent {i}")["id"])
                time.sleep(rng.uniform(0.0, 0.06))

        writer = threading.Thread(target=stream)
        process = projector(settings)
        writer.start()
        kills = 0
        try:
            while writer.is_alive() or kills < 4:
                time.sleep(rng.uniform(0.3, 0.9))
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
                kills += 1
                process = projector(settings)
            writer.join()
            delivered: dict[str, set[str]] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                delivered = {}
                for request in receiver.at("/crm"):
                    delivered.setdefault(verified(secret, request)["data"]["agent_id"], set()).add(request.id)
                if set(agents) <= set(delivered):
                    break
                time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(timeout=20)
    assert kills >= 4
    assert set(delivered) == set(agents), f"{len(set(agents) - set(delivered))} of {EVENTS} events never delivered"
    assert all(len(ids) == 1 for ids in delivered.values()), "a repeated delivery came with another webhook-id"
    requests = receiver.at("/crm")
    print(f"\n{EVENTS} events, {kills} SIGKILLs: {len(requests)} requests, {len(requests) - EVENTS} repeats")
