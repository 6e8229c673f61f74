"""The real LiveKit rig for browser tests and benchmarks: livekit-server and the agent worker on loopback
(infrastructure/livekit_dev.py), and the service pointed at them, webhooks included."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infrastructure.livekit_dev import AgentWorker, LocalLiveKit, free_port
from tests.browser.conftest import CHROMIUM_ARGS
from tests.browser.service import ApiServer, running_api

# Chromium's WebRTC offers 127.0.0.1 candidates only with the loopback flag; the agent's audio plays unprompted.
LIVE_ARGS = [*CHROMIUM_ARGS, "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required"]
AGENT_WAIT = 60.0  # dispatch, job start and connect on a busy two-core machine


class Rig:
    """The real LiveKit server and agent worker, and the service pointed at them (webhooks included)."""

    def __init__(self, livekit: LocalLiveKit, worker: AgentWorker, api: ApiServer) -> None:
        self.livekit, self.worker, self.api = livekit, worker, api

    def facts(self, event: str, conversation_id: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.worker.facts()
                if f.get("event") == event and (conversation_id is None or f.get("conversation_id") == conversation_id)]

    def wait_facts(self, event: str, conversation_id: str, until: Callable[[list[dict[str, Any]]], bool],
                   timeout: float = AGENT_WAIT) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.facts(event, conversation_id)
            if until(found):
                return found
            assert time.monotonic() < deadline, f"the agent never saw the expected {event!r} facts: {found}"
            time.sleep(0.1)


@contextmanager
def live_rig(data_dir: Path, org: str, agent_name: str, **settings: Any) -> Iterator[Rig]:
    """The service on the embedded wiring with a real LiveKit server and the agent worker, until the block ends
    (`settings`: the service's own, such as rate limits)."""
    api_port = free_port()
    livekit = LocalLiveKit(webhook_url=f"http://127.0.0.1:{api_port}/webhooks/livekit").start()
    worker = AgentWorker(livekit, agent_name)
    try:
        worker.start()
        with running_api(data_dir, org, livekit=livekit, port=api_port, agent_name=agent_name, **settings) as api:
            yield Rig(livekit, worker, api)
    finally:
        worker.stop()
        livekit.stop()
