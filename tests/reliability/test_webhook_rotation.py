"""Signatures across secret rotations while the projection process (`widgets project`: the endpoints and outbox
projections, and the dispatcher) is SIGKILLed at random points.

Rotations and events are interleaved through the API; some rotations are recorded as made 25 hours ago, so the
secret they replace is already past its 24 h. The process is killed at a random moment after each start, again
and again, and finally left to deliver everything. Then every delivery of an event, first or repeated, verifies
(with `standardwebhooks`) with the secret that was current when the event was committed, and with every secret
rotated out before it whose 24 h had not run out when it was received; and with none whose 24 h had.

Bounded: 60 steps (a few seconds of writes), at least 5 kills, every delivery within 45 s; the leases a killed process
held are let run out at once rather than in 40 s. About 20 s a wiring on two busy cores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from api.app import create_app
from infrastructure.settings import Settings, env_name
from tests.api.conftest import Admin, client_for
from tests.webhook_receiver import Received, Receiver, receiving, verified

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120), pytest.mark.wirings("production", "managed")]
SKIPPED_WIRINGS = {"embedded": "no projection process to kill: the embedded server runs its projections and dispatcher itself"}

ROOT = Path(__file__).resolve().parents[2]
STEPS = 60
KILLS = 5
PATH = "/rotating"


@dataclass
class Secret:
    value: str
    position: int  # the log position from which it is the endpoint's current secret
    replaced_at: int | None = None  # the position of the rotation that replaced it
    expires: float | None = None  # until when it still signs once replaced (Unix time)


@dataclass
class Story:
    """What the API answered, in order: the endpoint's secrets and each event's position."""

    secrets: list[Secret] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)  # agent id -> position
    rotations: int = 0
    backdated: int = 0

    def current_at(self, position: int) -> Secret:
        return [s for s in self.secrets if s.position < position][-1]


class Projector:
    """`widgets project`, forked again after each kill from a process that has imported it once
    (tests/integration/projection_worker.py), so that a restart takes a moment rather than seconds."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        env = {**os.environ, **{env_name(f.name): str(getattr(settings, f.name)) for f in dataclasses.fields(settings)}}
        env["WIDGETS_METRICS_PORT"] = "0"
        self.folder = folder
        self.starts = 0
        self.pid = 0
        self.log = folder / "projector-0.log"
        self.worker = subprocess.Popen([sys.executable, "-m", "tests.integration.projection_worker"], cwd=ROOT, env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        assert self.worker.stdin is not None and self.worker.stdout is not None
        self.starts += 1
        self.log = self.folder / f"projector-{self.starts}.log"
        self.worker.stdin.write(f"project {self.log}\n".encode())
        self.worker.stdin.flush()
        line = self.worker.stdout.readline().decode()
        assert line.startswith("ready "), f"no projection process: {line!r}"
        self.pid = int(line.split()[1])

    def running(self, timeout: float = 20.0) -> bool:
        """Wait until it has started its projections (or died)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists() and b"Projecting" in self.log.read_bytes():
                return True
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            time.sleep(0.01)
        return False

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # its parent reaps it at once
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.005)
        raise AssertionError(f"projection process {self.pid} survived SIGKILL")

    def close(self) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        if self.worker.stdin is not None:
            self.worker.stdin.close()
        try:
            self.worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


def position_of(response: object) -> int:
    headers = response.headers  # type: ignore[attr-defined]
    assert response.status_code in (200, 201), response.text  # type: ignore[attr-defined]
    return int(headers["X-Event-Position"])


def check(delivery: Received, story: Story) -> list[str]:
    """What is wrong with one delivery's signatures (nothing, if it is as the contract says)."""
    position = story.events[delivery.json()["data"]["agent_id"]]
    current = story.current_at(position)
    wrong = []
    # The secret current at the event signs it, unless a rotation since took it out at once (recorded 25 h late):
    # then it depends on which state the dispatcher read, both being at or after the event.
    if current.expires is None or current.expires > delivery.at:
        if not verifies(current.value, delivery):
            wrong.append(f"position {position}: not signed by the secret current at it (from {current.position})")
    for old in story.secrets:
        if old.replaced_at is None or old.replaced_at >= position:
            continue
        assert old.expires is not None
        if old.expires > delivery.at and not verifies(old.value, delivery):
            wrong.append(f"position {position}: not signed by the secret replaced at {old.replaced_at}, within its 24 h")
        if old.expires < delivery.at and verifies(old.value, delivery):
            wrong.append(f"position {position}: signed by the secret replaced at {old.replaced_at}, past its 24 h")
    return wrong


def verifies(secret: str, delivery: Received) -> bool:
    try:
        verified(secret, delivery)
    except WebhookVerificationError:
        return False
    return True


def test_every_delivery_is_signed_by_the_secrets_of_its_moment_across_rotations_and_sigkills(
    settings: Settings, receiver: Receiver
) -> None:
    settings = dataclasses.replace(settings, projections="external", webhook_allow_private=True, webhook_deliveries=True,
                                   webhook_retry_schedule="0.2,0.5,1,1,1,1,1,1", log_level="warning")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    app = create_app(settings)
    story = Story()
    endpoints = app.state.services.webhook_endpoints
    with client_for(app) as client, tempfile.TemporaryDirectory() as folder:
        admin = Admin(client, settings, "org_a", "alice")
        created = admin.call("POST", "/v1/webhook-endpoints", json={"url": receiver.url(PATH), "events": ["agent.created"]})
        story.secrets.append(Secret(created.json()["secret"], position_of(created)))
        endpoint_id = created.json()["id"]

        def write() -> None:
            for step in range(STEPS):
                if rng.random() < 0.35:
                    backdated = rng.random() < 0.25  # recorded 25 h ago: the secret it replaces no longer signs
                    made_at = datetime.now(UTC) - (timedelta(hours=25) if backdated else timedelta())
                    endpoints.clock = lambda at=made_at: at
                    rotated = admin.call("POST", f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret")
                    endpoints.clock = lambda: datetime.now(UTC)
                    position = position_of(rotated)
                    story.secrets[-1].replaced_at = position
                    story.secrets[-1].expires = (made_at + timedelta(hours=24)).timestamp()
                    story.secrets.append(Secret(rotated.json()["secret"], position))
                    story.rotations += 1
                    story.backdated += backdated
                    if rng.random() < 0.5:
                        continue  # an event right after the rotation, as a client does
                else:
                    response = admin.call("POST", "/v1/agents", json={"name": f"Agent {step}"})
                    story.events[response.json()["id"]] = position_of(response)
                time.sleep(rng.uniform(0.0, 0.15))

        projector = Projector(settings, Path(folder))
        writer = threading.Thread(target=write)
        windows: list[tuple[float, float, bool]] = []  # when each process ran, and whether writes went on meanwhile
        kills = 0
        try:
            projector.start()
            assert projector.running(), projector.log.read_text()[-2000:]
            writer.start()
            while writer.is_alive() or kills < KILLS:
                w0 = time.time()
                time.sleep(rng.uniform(0.1, 1.5))  # a random point of its work: catching up, queueing, sending
                windows.append((w0, time.time(), writer.is_alive()))
                projector.kill()
                kills += 1
                # What it had leased and not recorded waits 40 s for its lease to run out (tests/reliability/
                # test_webhook_crashes.py waits that out): here the time passes at once, so that the next process
                # repeats those deliveries now, in whatever state the rotations have reached by then.
                with app.state.services.db.transaction() as tx:
                    tx.execute("UPDATE webhook_outbox SET lease_until = NULL WHERE status = 'pending'")
                projector.start()
                assert projector.running(), projector.log.read_text()[-2000:]
            writer.join()
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline:
                delivered = {r.json()["data"]["agent_id"] for r in receiver.at(PATH)}
                if set(story.events) <= delivered:
                    break
                time.sleep(0.1)
            time.sleep(0.3)  # a repeat in flight lands too
        finally:
            projector.close()

    deliveries = receiver.at(PATH)
    live = sum(alive for _, _, alive in windows)
    missing = set(story.events) - {r.json()["data"]["agent_id"] for r in deliveries}
    assert not missing, f"seed {seed}: {len(missing)} of {len(story.events)} events never delivered"
    wrong = [problem for delivery in deliveries for problem in check(delivery, story)]
    assert story.rotations >= 3 and kills >= KILLS, f"seed {seed}: {story.rotations} rotations, {kills} kills"
    assert live >= 2, f"seed {seed}: only {live} processes ran while rotations and events were written"
    assert not wrong, f"seed {seed}: " + "; ".join(wrong[:10])
    print(f"\nseed {seed}: {len(story.events)} events, {story.rotations} rotations ({story.backdated} recorded 25 h ago), "
          f"{kills} SIGKILLs ({live} while writing), {len(deliveries)} deliveries checked")
