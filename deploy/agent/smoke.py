"""Smoke test of the agent worker against a real livekit-server on loopback (not part of `make test`).

    uv run --project deploy/agent --frozen python deploy/agent/smoke.py

Starts livekit-server (`.cache/bin/livekit-server`, or `$LIVEKIT_SERVER_BIN`, or /tmp/lkbuild/livekit-server)
with a webhook receiver of its own, starts the worker (`python -m anyreach_agent`), and plays a visitor the
way the widget does: a token minted like `LiveKitIssuer.grant` (explicit dispatch by agent name, the
dispatch metadata as JSON), the `livekit` rtc SDK for the room. It checks the agent's state attribute,
text replies on `lk.transcription` and their closing attributes, the quick actions, `/form` over RPC
(shown, and an unknown form), a form submission's acknowledgement, the agent's tone and its echo of the
visitor's microphone, a resume into a fresh room (`resumed: true`, the old room deleted first as the
service does), `/end` (room deleted, `room_finished` webhook), a visitor leaving (the room finishes on its
own), SIGTERM with a job running, the facts log, and that no secret leaks.
Exit status 0 when every check passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from livekit import api, rtc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
AGENT_NAME = os.environ.get("WIDGETS_LIVEKIT_AGENT_NAME") or "anyreach-agent"
API_KEY = "devkey_smoke"
API_SECRET = secrets.token_urlsafe(32)  # 43 characters, fresh each run
SAMPLE_RATE = 48000
VISITOR_HZ = 300.0
TONE_HZ = 440.0
PRE_CONNECT_HZ = 550.0

results: list[tuple[bool, str]] = []


def check(ok: bool, what: str) -> bool:
    results.append((bool(ok), what))
    print(f"{'PASS' if ok else 'FAIL'}  {what}", flush=True)
    return bool(ok)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_binary() -> str:
    for candidate in (os.environ.get("LIVEKIT_SERVER_BIN"), ROOT / ".cache/bin/livekit-server", "/tmp/lkbuild/livekit-server"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    sys.exit("smoke: no livekit-server binary (.cache/bin/livekit-server, $LIVEKIT_SERVER_BIN)")


def server_config(port: int, tcp_port: int, udp_start: int, webhook_url: str) -> str:
    return f"""\
port: {port}
bind_addresses: ["127.0.0.1"]
rtc:
  tcp_port: {tcp_port}
  port_range_start: {udp_start}
  port_range_end: {udp_start + 100}
  node_ip: 127.0.0.1
  use_external_ip: false
  enable_loopback_candidate: true
  stun_servers: ["127.0.0.1:3478"]
keys:
  {API_KEY}: {API_SECRET}
room:
  empty_timeout: 10
  departure_timeout: 5
webhook:
  api_key: {API_KEY}
  urls: ["{webhook_url}"]
logging:
  level: info
"""


def visitor_token(room: str, identity: str, metadata: dict[str, Any]) -> str:
    """As `infrastructure/livekit.py` `LiveKitIssuer.grant` signs it (same grants, explicit dispatch)."""
    return (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_name("Visitor")
        .with_ttl(datetime.timedelta(minutes=10))
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=room,
                can_subscribe=True,
                can_publish=True,
                can_publish_sources=["microphone"],
                can_publish_data=True,
                can_update_own_metadata=False,
                room_create=False,
                room_list=False,
                room_record=False,
                room_admin=False,
                ingress_admin=False,
                hidden=False,
                recorder=False,
                agent=False,
            )
        )
        .with_room_config(
            api.RoomConfiguration(
                agents=[api.RoomAgentDispatch(agent_name=AGENT_NAME, metadata=json.dumps(metadata, separators=(",", ":")))]
            )
        )
        .to_jwt()
    )


def dispatch_metadata(conversation_id: str, version_id: str, resumed: bool) -> dict[str, Any]:
    return {
        "organization_id": "org_smoke",
        "widget_id": str(uuid.uuid4()),
        "agent_id": str(uuid.uuid4()),
        "agent_version_id": version_id,
        "conversation_id": conversation_id,
        "channel": "webrtc",
        "visitor": {"verified": False},
        "context": {"verified": {}, "page": {"plan": "smoke"}},
        "resumed": resumed,
    }


def room_name(conversation_id: str) -> str:
    return f"conv_{uuid.UUID(conversation_id).hex}_{secrets.token_hex(4)}"


async def wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


class Facts:
    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def find(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [f for f in self.all() if f.get("event") == event and all(f.get(k) == v for k, v in match.items())]


class Webhooks:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.bad = 0
        receiver = api.WebhookReceiver(api.TokenVerifier(API_KEY, API_SECRET))

        async def hook(request: web.Request) -> web.Response:
            body = await request.text()
            try:
                event = receiver.receive(body, request.headers.get("Authorization", ""))
            except Exception:
                self.bad += 1
                return web.Response(status=401)
            self.events.append((event.event, event.room.name))
            return web.Response(text="ok")

        self.app = web.Application()
        self.app.router.add_post("/webhooks/livekit", hook)

    def seen(self, event: str, room: str) -> bool:
        return (event, room) in self.events


class Visitor:
    """What the widget does in a page, with the Python SDK."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.identity = f"visitor_{secrets.token_urlsafe(12)}"
        self.room = rtc.Room()
        self.replies: dict[str, dict[str, Any]] = {}  # segment id -> {"text", "chunks", "open", "close", "done"}
        self.states: list[str] = []
        self.rpc_calls: list[str] = []
        self.audio: list[tuple[float, float, float]] = []  # (time, rms, dominant Hz) per 100 ms of agent audio
        self.disconnected = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []
        self.mic_source: rtc.AudioSource | None = None

        self.room.register_text_stream_handler("lk.transcription", self._on_transcription)
        self.room.on("participant_attributes_changed", self._on_attributes)
        self.room.on("participant_connected", self._on_participant)
        self.room.on("track_subscribed", self._on_track)
        self.room.on("disconnected", lambda *_: self.disconnected.set())

    async def connect(self, url: str, token: str) -> None:
        await self.room.connect(url, token)
        self.room.local_participant.register_rpc_method("anyreach.requestForm", self._request_form)

    # -- text
    def _on_transcription(self, reader: rtc.TextStreamReader, identity: str) -> None:
        task = asyncio.ensure_future(self._read(reader, identity))
        task.add_done_callback(
            lambda t: t.cancelled() or t.exception() is None or print(f"      reader failed: {t.exception()!r}")
        )
        self.tasks.append(task)

    async def _read(self, reader: rtc.TextStreamReader, identity: str) -> None:
        opening = dict(reader.info.attributes or {})
        segment = opening.get("lk.segment_id") or reader.info.stream_id
        entry = self.replies.setdefault(
            segment, {"text": "", "chunks": 0, "open": opening, "close": None, "done": False, "from": identity}
        )
        async for chunk in reader:
            entry["text"] += chunk
            entry["chunks"] += 1
        entry["close"] = dict(reader.info.attributes or {})  # the closing attributes are merged in at the end
        entry["done"] = True

    def finished_replies(self) -> list[dict[str, Any]]:
        return [r for r in self.replies.values() if r["done"]]

    async def ask(self, text: str, expect: str, timeout: float = 10) -> dict[str, Any] | None:
        before = len(self.finished_replies())
        await self.room.local_participant.send_text(text, topic="lk.chat")
        ok = await wait_for(lambda: any(expect in r["text"] for r in self.finished_replies()[before:]), timeout)
        if not ok:
            return None
        return next(r for r in self.finished_replies()[before:] if expect in r["text"])

    # -- rpc
    async def _request_form(self, data: rtc.RpcInvocationData) -> str:
        self.rpc_calls.append(data.payload)
        form_id = json.loads(data.payload).get("form_id")
        if form_id != "contact":
            raise rtc.RpcError(4404, "unknown form")
        return json.dumps({"shown": True})

    # -- agent presence and state
    def agent(self) -> rtc.RemoteParticipant | None:
        return next(
            (p for p in self.room.remote_participants.values() if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT), None
        )

    def _on_participant(self, p: rtc.RemoteParticipant) -> None:
        state = p.attributes.get("lk.agent.state")
        if state:
            self.states.append(state)

    def _on_attributes(self, changed: dict[str, str], p: rtc.Participant) -> None:
        if "lk.agent.state" in changed:
            self.states.append(changed["lk.agent.state"])

    # -- audio
    def _on_track(self, track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self.tasks.append(asyncio.ensure_future(self._measure(track)))

    async def _measure(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream.from_track(track=track, sample_rate=SAMPLE_RATE, num_channels=1)
        buf: list[np.ndarray] = []
        try:
            async for ev in stream:
                buf.append(np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float64) / 32768.0)
                if sum(len(b) for b in buf) >= SAMPLE_RATE // 10:
                    pcm = np.concatenate(buf)
                    buf = []
                    rms = float(np.sqrt(np.mean(pcm * pcm)))
                    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
                    hz = float(np.argmax(spectrum) * SAMPLE_RATE / len(pcm))
                    self.audio.append((time.monotonic(), rms, hz))
        finally:
            await stream.aclose()

    def heard(self, hz: float, since: float = 0.0, min_rms: float = 0.03) -> bool:
        return any(t >= since and rms >= min_rms and abs(f - hz) < 25 for t, rms, f in self.audio)

    async def start_mic(self, pre_connect: bool = False) -> None:
        """Publish the microphone (a 300 Hz tone). With `pre_connect`, as livekit-client does with its
        pre-connect buffer: the track says so, and what was "said" before (0.5 s of 550 Hz at 24 kHz,
        raw PCM) goes to the agent as a byte stream naming the track."""
        self.mic_source = rtc.AudioSource(SAMPLE_RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self.mic_source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE, preconnect_buffer=pre_connect)
        pub = await self.room.local_participant.publish_track(track, options)
        if pre_connect:
            rate = 24000
            pcm = (np.sin(2 * math.pi * PRE_CONNECT_HZ * np.arange(rate // 2) / rate) * 0.2 * 32767).astype(np.int16)
            writer = await self.room.local_participant.stream_bytes(
                "pre-connect-audio",
                topic="lk.agent.pre-connect-audio-buffer",
                mime_type="audio/pcm",
                attributes={"trackId": pub.sid, "sampleRate": str(rate), "channels": "1"},
                destination_identities=[self.agent().identity],
            )
            await writer.write(pcm.tobytes())
            await writer.aclose()
        self.tasks.append(asyncio.ensure_future(self._speak()))

    async def _speak(self) -> None:
        assert self.mic_source is not None
        n = SAMPLE_RATE // 100
        t = 0
        while True:
            samples = (np.sin(2 * math.pi * VISITOR_HZ * (np.arange(n) + t) / SAMPLE_RATE) * 0.2 * 32767).astype(np.int16)
            t += n
            await self.mic_source.capture_frame(rtc.AudioFrame(samples.tobytes(), SAMPLE_RATE, 1, n))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.room.disconnect()
        if self.mic_source is not None:
            await self.mic_source.aclose()


async def conversation_round(url: str, facts: Facts, hooks: Webhooks, lkapi: api.LiveKitAPI) -> None:
    conversation_id, version_id = str(uuid.uuid4()), str(uuid.uuid4())

    # ---- first room: resumed false -----------------------------------------------------------
    room1 = room_name(conversation_id)
    v = Visitor("first")
    t0 = time.monotonic()
    await v.connect(url, visitor_token(room1, v.identity, dispatch_metadata(conversation_id, version_id, False)))
    joined = await wait_for(lambda: v.agent() is not None and v.agent().attributes.get("lk.agent.state"), 20)
    check(joined, f"agent dispatched into the visitor's room and set lk.agent.state ({time.monotonic() - t0:.1f}s after joining)")
    if not joined:
        await v.close()
        return
    agent = v.agent()
    check(
        agent.attributes.get("lk.agent.name") == AGENT_NAME,
        f"agent participant carries lk.agent.name={agent.attributes.get('lk.agent.name')!r}",
    )
    check(
        await wait_for(lambda: v.agent().attributes.get("lk.agent.state") == "listening", 10), "agent state reaches 'listening'"
    )
    job = facts.find("job", room=room1)
    check(
        job
        and job[0]["conversation_id"] == conversation_id
        and job[0]["agent_version_id"] == version_id
        and job[0]["resumed"] is False,
        f"job fact: {job[0] if job else None}",
    )

    check(
        await wait_for(lambda: v.heard(TONE_HZ), 10), "agent's track carries its 440 Hz greeting tone (before the visitor speaks)"
    )

    reply = await v.ask("hello smoke", 'You said: "hello smoke"')
    check(reply is not None, f"echo reply on lk.transcription: {reply['text'] if reply else None!r}")
    if reply:
        check(
            conversation_id in reply["text"] and version_id in reply["text"] and "resumed: no" in reply["text"],
            "echo names the conversation id, the agent version and resumed: no",
        )
        check(
            reply["open"].get("lk.transcription_final") == "false" and reply["open"].get("lk.segment_id", "").startswith("SG_"),
            f"opening attributes {reply['open']}",
        )
        check(reply["close"].get("lk.transcription_final") == "true", f"closing attributes {reply['close']}")
        check(reply["chunks"] >= 2, f"reply streamed in {reply['chunks']} deltas")
        check(
            reply["open"].get("lk.transcribed_track_id") in {pub.sid for pub in v.agent().track_publications.values()},
            "lk.transcribed_track_id names the agent's own audio track",
        )
    check(facts.find("text", room=room1, text="hello smoke"), "text fact logged for the typed message")
    check({"thinking", "speaking", "listening"} <= set(v.states), f"agent states seen: {v.states}")

    reply = await v.ask("What can you do?", "demo agent")
    check(reply is not None, f"quick action 'What can you do?': {reply['text'] if reply else None!r}")
    reply = await v.ask("I'd like to talk to a human.", "no human")
    check(reply is not None, f"quick action 'I'd like to talk to a human.': {reply['text'] if reply else None!r}")

    reply = await v.ask("/form contact", 'form "contact"')
    check(
        v.rpc_calls and json.loads(v.rpc_calls[0]) == {"form_id": "contact"},
        f"/form contact made the RPC anyreach.requestForm with {v.rpc_calls[:1]}",
    )
    check(reply is not None and '"shown": true' in reply["text"], f"/form reply: {reply['text'] if reply else None!r}")
    check(
        facts.find("form_rpc", room=room1, form_id="contact", ok=True), f"form_rpc fact: {facts.find('form_rpc', room=room1)[:1]}"
    )
    reply = await v.ask("/form nope", 'form "nope"')
    check(
        reply is not None and "4404" in reply["text"],
        f"/form with an unknown form reports the RPC error: {reply['text'] if reply else None!r}",
    )
    check(facts.find("form_rpc", room=room1, form_id="nope", ok=False, code=4404), "form_rpc fact carries code 4404")

    before = len(v.finished_replies())
    await v.room.local_participant.publish_data(
        json.dumps({"form_id": "contact", "values": {"email": "visitor@example.com"}}),
        reliable=True,
        topic="anyreach.form_submitted",
    )
    ok = await wait_for(lambda: any("received the form" in r["text"] for r in v.finished_replies()[before:]), 10)
    check(ok, "form submission on anyreach.form_submitted acknowledged")
    submitted = facts.find("form_submitted", room=room1)
    check(
        submitted
        and submitted[0]["form_id"] == "contact"
        and "values" not in submitted[0]
        and "visitor@example.com" not in facts.path.read_text(),
        f"form_submitted fact without the values: {submitted[:1]}",
    )

    mic_at = time.monotonic()
    await v.start_mic(pre_connect=True)
    check(
        await wait_for(lambda: v.heard(PRE_CONNECT_HZ, since=mic_at), 10),
        "agent plays back the pre-connect buffer (550 Hz, sent at 24 kHz) it received as a byte stream",
    )
    pre = facts.find("pre_connect_audio", room=room1)
    check(
        await wait_for(lambda: facts.find("pre_connect_audio", room=room1), 5)
        and abs(facts.find("pre_connect_audio", room=room1)[0]["seconds"] - 0.5) < 0.05,
        f"pre_connect_audio fact: {facts.find('pre_connect_audio', room=room1)[:1] or pre}",
    )
    check(
        await wait_for(lambda: v.heard(VISITOR_HZ, since=mic_at), 10),
        "agent plays the visitor's 300 Hz microphone back on its track",
    )
    check(
        await wait_for(lambda: any(f["rms"] > 0.05 for f in facts.find("audio", room=room1)), 5),
        f"audio facts: {[(f['rms'], f['frames']) for f in facts.find('audio', room=room1)][:3]}",
    )
    loud = [rms for t, rms, hz in v.audio if t >= mic_at]
    print(f"      agent audio after the mic started: max rms {max(loud, default=0):.3f}, {len(loud)} windows of 100 ms")

    # ---- resume: the service deletes the old room, then grants a fresh one -------------------
    await lkapi.room.delete_room(api.DeleteRoomRequest(room=room1))
    await v.close()
    check(
        await wait_for(lambda: facts.find("usage", room=room1), 15),
        f"the old room's job ended: {facts.find('usage', room=room1)[:1]}",
    )
    check(await wait_for(lambda: hooks.seen("room_finished", room1), 10), "room_finished webhook for the old room")

    room2 = room_name(conversation_id)
    v2 = Visitor("resumed")
    await v2.connect(url, visitor_token(room2, v2.identity, dispatch_metadata(conversation_id, version_id, True)))
    check(
        await wait_for(lambda: v2.agent() is not None and v2.agent().attributes.get("lk.agent.state") == "listening", 20),
        "agent joins the fresh room of the resumed conversation",
    )
    job = facts.find("job", room=room2)
    check(
        job and job[0]["conversation_id"] == conversation_id and job[0]["resumed"] is True, f"job fact: {job[0] if job else None}"
    )
    reply = await v2.ask("hello again", 'You said: "hello again"')
    check(
        reply is not None and "resumed: yes" in reply["text"] and conversation_id in reply["text"],
        f"echo after the resume: {reply['text'] if reply else None!r}",
    )

    reply = await v2.ask("/end", "Goodbye")
    check(reply is not None, f"/end reply: {reply['text'] if reply else None!r}")
    try:
        await asyncio.wait_for(v2.disconnected.wait(), 10)
        gone = True
    except TimeoutError:
        gone = False
    check(gone, "/end: the visitor is disconnected (the agent deleted the room)")
    check(await wait_for(lambda: hooks.seen("room_finished", room2), 10), "room_finished webhook for the ended room")
    check(
        await wait_for(lambda: facts.find("ended", room=room2) and facts.find("usage", room=room2), 15),
        f"ended and usage facts: {facts.find('ended', room=room2)[:1]} {facts.find('usage', room=room2)[:1]}",
    )
    await v2.close()

    # ---- the visitor leaves (a reload): the room empties and finishes on its own -------------
    other_conversation = str(uuid.uuid4())
    room3 = room_name(other_conversation)
    v3 = Visitor("leaving")
    await v3.connect(url, visitor_token(room3, v3.identity, dispatch_metadata(other_conversation, version_id, False)))
    check(
        await wait_for(lambda: v3.agent() is not None and v3.agent().attributes.get("lk.agent.state") == "listening", 20),
        "agent joins a third room",
    )
    left_at = time.monotonic()
    await v3.close()
    ended = await wait_for(lambda: facts.find("usage", room=room3) and hooks.seen("room_finished", room3), 20)
    check(
        ended and not facts.find("ended", room=room3),
        f"visitor left: the room finished on its own ({time.monotonic() - left_at:.1f}s, departure_timeout 5 s) "
        "and the agent's job ended without ending anything itself",
    )


async def main() -> int:
    binary = server_binary()
    tmp = Path(tempfile.mkdtemp(prefix="anyreach-agent-smoke-"))
    facts = Facts(tmp / "agent.jsonl")
    port, tcp_port = free_port(), free_port()
    udp_start = int(os.environ.get("SMOKE_UDP_START", "51300"))

    hooks = Webhooks()
    runner = web.AppRunner(hooks.app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    (tmp / "livekit.yaml").write_text(server_config(port, tcp_port, udp_start, f"http://127.0.0.1:{hook_port}/webhooks/livekit"))
    server_log = open(tmp / "livekit-server.log", "wb")
    server = subprocess.Popen([binary, "--config", str(tmp / "livekit.yaml")], stdout=server_log, stderr=subprocess.STDOUT)
    url = f"ws://127.0.0.1:{port}"
    worker = None
    worker_log_path = tmp / "worker.log"
    try:
        t0 = time.monotonic()
        up = await wait_for(lambda: server.poll() is None and _port_open(port), 20, 0.2)
        if not check(up, f"livekit-server up on {url} ({time.monotonic() - t0:.1f}s)"):
            return 1

        env = {
            **os.environ,
            "LIVEKIT_URL": url,
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
            "WIDGETS_LIVEKIT_AGENT_NAME": AGENT_NAME,
            "ANYREACH_AGENT_LOG": str(facts.path),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        t0 = time.monotonic()
        worker = subprocess.Popen(
            [sys.executable, "-m", "anyreach_agent"], env=env, stdout=open(worker_log_path, "wb"), stderr=subprocess.STDOUT
        )
        registered = await wait_for(lambda: facts.find("registered"), 60, 0.2)
        if not check(registered, f"worker registered as {AGENT_NAME!r} ({time.monotonic() - t0:.1f}s after start)"):
            return 1

        lkapi = api.LiveKitAPI(url.replace("ws://", "http://"), API_KEY, API_SECRET)
        try:
            await conversation_round(url, facts, hooks, lkapi)
        finally:
            await lkapi.aclose()

        check(hooks.bad == 0, f"webhooks all correctly signed ({len(hooks.events)} received)")

        # ---- SIGTERM while a job runs: the job shuts down, the agent leaves, the visitor stays ----
        conversation_id = str(uuid.uuid4())
        room4 = room_name(conversation_id)
        v4 = Visitor("sigterm")
        await v4.connect(url, visitor_token(room4, v4.identity, dispatch_metadata(conversation_id, str(uuid.uuid4()), False)))
        agent_in = await wait_for(
            lambda: v4.agent() is not None and v4.agent().attributes.get("lk.agent.state") == "listening", 20
        )
        check(agent_in, "agent joins a fourth room")
        worker.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(asyncio.to_thread(worker.wait), 20)
        except TimeoutError:
            code = None
        check(code == 0, f"worker exits 0 on SIGTERM with a job running (status {code})")
        check(
            facts.find("usage", room=room4) and v4.agent() is None and v4.room.isconnected(),
            f"SIGTERM: the job wrote its usage and the agent left; the visitor is still in the room "
            f"({facts.find('usage', room=room4)[:1]})",
        )
        await v4.close()
        leaked = [
            name
            for name, text in (("facts", facts.path.read_text()), ("worker log", worker_log_path.read_text()))
            if API_SECRET in text or "eyJ" in text
        ]
        check(not leaked, f"no API secret or JWT in the facts log or the worker's output {leaked or ''}")
        server_text = (tmp / "livekit-server.log").read_text(errors="replace")
        check(
            '"metadata": "<redacted>"' in server_text and '"organization_id"' not in server_text,
            "livekit-server logs the dispatch metadata as <redacted>",
        )
        check(
            '"CanPublishSources": ["microphone"]' in server_text and '"CanUpdateOwnMetadata": false' in server_text,
            "livekit-server saw the visitor's grants: microphone only, no own-metadata updates",
        )
        kinds = sorted({f["event"] for f in facts.all()})
        print(f"      facts logged: {kinds}")
        usage = facts.find("usage")
        if usage:
            print(
                f"      worker process usage at the last job's end: {usage[-1]['cpu_seconds']} CPU s, {usage[-1]['max_rss_mb']} MB max RSS"
            )
        print("      sample facts:")
        for f in (
            facts.all()[:4]
            + facts.find("audio")[:1]
            + facts.find("form_rpc")
            + facts.find("form_submitted")
            + facts.find("ended")
            + facts.find("usage")
        ):
            print("        " + json.dumps(f))
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)
        if server.poll() is None:
            server.kill()
        await runner.cleanup()
        failed = [w for ok, w in results if not ok]
        if failed or os.environ.get("SMOKE_KEEP"):
            print(f"      logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    failed = [w for ok, w in results if not ok]
    print(f"{len(results) - len(failed)}/{len(results)} checks passed")
    return 1 if failed else 0


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
