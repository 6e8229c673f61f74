"""One conversation room, as the test-and-demo agent handles it (the contract is docs/agents.md).

No LLM and no paid service: typed messages are echoed (naming the conversation and the agent
version), the demo's quick actions get scripted answers, `/form <id>` asks the visitor's widget to
show a form over RPC, `/end` deletes the room (which ends the conversation), and the visitor's
microphone is played back half a second late on the agent's own microphone track.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import AutoSubscribe, JobContext

# livekit-agents' own reader of livekit-client's pre-connect audio buffer (what RoomIO uses), and the
# track feature that announces one; both private to livekit-agents 1.8.9 / livekit 1.1.21, pinned exactly.
from livekit.agents.voice.room_io._pre_connect_audio import PreConnectAudioHandler
from livekit.rtc._proto.track_pb2 import AudioTrackFeature

from .facts import Facts

logger = logging.getLogger("anyreach_agent")

# Topics, attributes and methods (the same strings livekit-agents uses in livekit/agents/types.py).
TOPIC_CHAT = "lk.chat"
TOPIC_TRANSCRIPTION = "lk.transcription"
TOPIC_FORM_SUBMITTED = "anyreach.form_submitted"
RPC_REQUEST_FORM = "anyreach.requestForm"
ATTR_AGENT_STATE = "lk.agent.state"
ATTR_FINAL = "lk.transcription_final"
ATTR_SEGMENT_ID = "lk.segment_id"
ATTR_TRACK_ID = "lk.transcribed_track_id"
VISITOR_PREFIX = "visitor_"

SAMPLE_RATE = 48000
FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms
ECHO_DELAY = 0.5  # seconds
PRE_CONNECT_TIMEOUT = 3.0  # seconds, livekit-agents' default (RoomInputOptions.pre_connect_audio_timeout)
TONE_HZ, TONE_SECONDS, TONE_LEVEL = 440.0, 0.3, 0.3

QUICK_ANSWERS = {
    "what can you do?": (
        "I'm Anyreach's demo agent. I repeat what you type, and what you say into the microphone "
        "half a second later. Try /form contact to see a form."
    ),
    "i'd like to talk to a human.": (
        "This is a demo, so there is no human on the other end. In a real deployment, "
        "this is where the agent would hand over to your team."
    ),
}


@dataclass(frozen=True)
class Dispatch:
    """The job's metadata, as `LiveKitIssuer.grant` writes it (docs/agents.md)."""

    conversation_id: str | None
    agent_version_id: str | None
    resumed: bool
    raw: dict[str, Any]

    @classmethod
    def parse(cls, metadata: str) -> Dispatch:
        try:
            found = json.loads(metadata) if metadata else {}
        except ValueError:
            found = None
        if not isinstance(found, dict):
            logger.warning("the dispatch metadata is not a JSON object; going on without it")
            found = {}
        return cls(
            conversation_id=_str_or_none(found.get("conversation_id")),
            agent_version_id=_str_or_none(found.get("agent_version_id")),
            resumed=found.get("resumed") is True,
            raw=found,
        )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def is_visitor(participant: rtc.Participant | None) -> bool:
    return (
        participant is not None
        and participant.identity.startswith(VISITOR_PREFIX)
        and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
    )


def tone_frames() -> list[rtc.AudioFrame]:
    """A short 440 Hz tone with 10 ms fades, as 10 ms int16 mono frames."""
    n = int(SAMPLE_RATE * TONE_SECONDS)
    t = np.arange(n) / SAMPLE_RATE
    wave = np.sin(2 * math.pi * TONE_HZ * t) * TONE_LEVEL
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / FRAME_SAMPLES)
    pcm = (wave * fade * 32767).astype(np.int16)
    pcm = np.pad(pcm, (0, -n % FRAME_SAMPLES))
    return [
        rtc.AudioFrame(pcm[i : i + FRAME_SAMPLES].tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES)
        for i in range(0, len(pcm), FRAME_SAMPLES)
    ]


def to_mono_48k(frames: list[rtc.AudioFrame]) -> np.ndarray:
    """int16 frames of any rate and channel count, as one 48 kHz mono int16 array."""
    out: list[np.ndarray] = []
    resampler: rtc.AudioResampler | None = None
    for frame in frames:
        pcm = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        if frame.sample_rate == SAMPLE_RATE:
            out.append(pcm)
            continue
        if resampler is None:
            resampler = rtc.AudioResampler(frame.sample_rate, SAMPLE_RATE, num_channels=1)
        mono = rtc.AudioFrame(pcm.tobytes(), frame.sample_rate, 1, pcm.size)
        out += [np.frombuffer(f.data, dtype=np.int16) for f in resampler.push(mono)]
    if resampler is not None:
        out += [np.frombuffer(f.data, dtype=np.int16) for f in resampler.flush()]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)


def deltas(text: str, parts: int = 3) -> list[str]:
    """The reply cut into a few pieces at word boundaries (the pieces join back to the text)."""
    words = text.split(" ")
    size = max(1, math.ceil(len(words) / parts))
    pieces = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [p + (" " if i < len(pieces) - 1 else "") for i, p in enumerate(pieces)]


class Conversation:
    """The agent's side of one room."""

    def __init__(self, ctx: JobContext, facts: Facts) -> None:
        self.ctx = ctx
        self.room = ctx.room
        self.facts = facts
        self.dispatch = Dispatch.parse(ctx.job.metadata)
        self.room_name = ctx.job.room.name
        self.source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=200)
        self.track_sid: str | None = None
        self.replying = asyncio.Lock()  # one reply at a time, in the order messages came
        self.playout: asyncio.Queue[tuple[float, rtc.AudioFrame]] = asyncio.Queue(maxsize=500)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.last_chat: asyncio.Task[Any] | None = None
        self.echo_task: asyncio.Task[None] | None = None
        self.echo_track_sid: str | None = None
        self.pre_connect = PreConnectAudioHandler(self.room, timeout=PRE_CONNECT_TIMEOUT)

    # ---- facts -------------------------------------------------------------------------------

    def fact(self, event: str, **fields: Any) -> None:
        self.facts.write({"event": event, "conversation_id": self.dispatch.conversation_id, "room": self.room_name, **fields})

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self.tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                logger.error("%s failed", name, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    # ---- the job -----------------------------------------------------------------------------

    async def run(self) -> None:
        d = self.dispatch
        self.fact("job", agent_version_id=d.agent_version_id, resumed=d.resumed)
        self.ctx.add_shutdown_callback(self.on_shutdown)
        # Handlers first, so nothing the visitor sends right after we join is dropped.
        self.room.register_text_stream_handler(TOPIC_CHAT, self.on_chat)
        self.room.on("data_received", self.on_data)
        self.room.on("track_subscribed", self.on_track_subscribed)
        self.pre_connect.register()  # byte streams on lk.agent.pre-connect-audio-buffer

        await self.ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
        lp = self.room.local_participant
        await lp.set_attributes({ATTR_AGENT_STATE: "initializing"})
        self.spawn(self.play_out(), "play_out")
        track = rtc.LocalAudioTrack.create_audio_track("agent-voice", self.source)
        publication = await lp.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        self.track_sid = publication.sid
        for participant in self.room.remote_participants.values():  # tracks subscribed before we listened
            for pub in participant.track_publications.values():
                if pub.track is not None and pub.subscribed:
                    self.on_track_subscribed(pub.track, pub, participant)
        await lp.set_attributes({ATTR_AGENT_STATE: "listening"})
        self.spawn(self.greet(publication), "greet")

    async def greet(self, publication: rtc.LocalTrackPublication) -> None:
        """The tone, once someone hears the track (as livekit-agents waits before it speaks)."""
        try:
            await asyncio.wait_for(publication.wait_for_subscription(), timeout=30)
        except TimeoutError:
            return
        now = time.monotonic()
        for frame in tone_frames():
            await self.playout.put((now, frame))

    async def on_shutdown(self, reason: str) -> None:
        usage = self.facts.usage()
        self.fact("usage", reason=reason, **usage)
        for task in list(self.tasks):
            task.cancel()
        await self.pre_connect.aclose()
        await self.source.aclose()

    # ---- text --------------------------------------------------------------------------------

    def on_chat(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        if not participant_identity.startswith(VISITOR_PREFIX):
            return
        # Streams are opened in the order the visitor sent them, but read concurrently: each message waits for the
        # one before it, so that they are taken (and answered) in that order.
        self.last_chat = self.spawn(self.read_chat(reader, self.last_chat), "chat")

    async def read_chat(self, reader: rtc.TextStreamReader, before: asyncio.Task[Any] | None) -> None:
        text = (await reader.read_all()).strip()
        if before is not None:
            await asyncio.wait([before])
        # Test-only fact: the log is the test's own file. Anywhere else this text is personal data.
        self.fact("text", text=text)
        if text:
            await self.answer(text)

    async def answer(self, text: str) -> None:
        async with self.replying:
            await self.set_state("thinking")
            try:
                if text == "/end":
                    await self.say("Ending this conversation. Goodbye!")
                    await self.end()
                    return
                if text.startswith("/form"):
                    reply = await self.request_form(text.removeprefix("/form").strip())
                else:
                    reply = QUICK_ANSWERS.get(text.lower()) or self.echo(text)
                await self.say(reply)
            finally:
                if self.room.isconnected():
                    await self.set_state("listening")

    def echo(self, text: str) -> str:
        d = self.dispatch
        return (
            f'You said: "{text}" (conversation {d.conversation_id}, agent version {d.agent_version_id}, '
            f"resumed: {'yes' if d.resumed else 'no'})"
        )

    async def say(self, reply: str) -> None:
        """One segment on `lk.transcription`, in deltas, the way livekit-agents streams a reply."""
        await self.set_state("speaking")
        segment = f"SG_{uuid.uuid4().hex[:12]}"
        opening = {ATTR_FINAL: "false", ATTR_SEGMENT_ID: segment}
        closing = {ATTR_FINAL: "true", ATTR_SEGMENT_ID: segment}
        if self.track_sid:
            opening[ATTR_TRACK_ID] = closing[ATTR_TRACK_ID] = self.track_sid
        writer = await self.room.local_participant.stream_text(topic=TOPIC_TRANSCRIPTION, attributes=opening)
        for piece in deltas(reply):
            await writer.write(piece)
            await asyncio.sleep(0.05)
        await writer.aclose(attributes=closing)

    async def set_state(self, state: str) -> None:
        if self.room.isconnected():
            await self.room.local_participant.set_attributes({ATTR_AGENT_STATE: state})

    def visitor(self) -> rtc.RemoteParticipant | None:
        return next((p for p in self.room.remote_participants.values() if is_visitor(p)), None)

    # ---- forms -------------------------------------------------------------------------------

    async def request_form(self, form_id: str) -> str:
        if not form_id:
            return "Which form? Say /form <form_id>."
        visitor = self.visitor()
        if visitor is None:
            self.fact("form_rpc", form_id=form_id, ok=False, code=None, message="no visitor in the room")
            return f'I could not show the form "{form_id}": no visitor is in the room.'
        try:
            answer = await self.room.local_participant.perform_rpc(
                destination_identity=visitor.identity,
                method=RPC_REQUEST_FORM,
                payload=json.dumps({"form_id": form_id}),
                response_timeout=10,
            )
        except rtc.RpcError as e:
            self.fact("form_rpc", form_id=form_id, ok=False, code=e.code, message=e.message)
            return f'I could not show the form "{form_id}" (error {e.code}: {e.message}).'
        try:
            response: Any = json.loads(answer)
        except ValueError:
            response = answer
        self.fact("form_rpc", form_id=form_id, ok=True, response=response)
        return f'I asked your browser to show the form "{form_id}"; it answered {answer}.'

    def on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != TOPIC_FORM_SUBMITTED or not is_visitor(packet.participant):
            return
        try:
            body = json.loads(packet.data)
        except ValueError:
            body = None
        form_id = body.get("form_id") if isinstance(body, dict) else None
        if not isinstance(form_id, str):
            logger.warning("a form submission without a form_id; ignored")
            return
        self.fact("form_submitted", form_id=form_id)  # never the values: they are personal data
        self.spawn(self.acknowledge(form_id), "form_ack")

    async def acknowledge(self, form_id: str) -> None:
        async with self.replying:
            await self.say(f'Thanks, I received the form "{form_id}".')
            await self.set_state("listening")

    # ---- ending ------------------------------------------------------------------------------

    async def end(self) -> None:
        """Delete the room: LiveKit disconnects everyone and sends `room_finished`, which ends the conversation."""
        await self.ctx.delete_room()
        self.fact("ended")

    # ---- voice -------------------------------------------------------------------------------

    def on_track_subscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if (
            not is_visitor(participant)
            or track.kind != rtc.TrackKind.KIND_AUDIO
            or publication.source != rtc.TrackSource.SOURCE_MICROPHONE
        ):
            return
        if self.echo_task is not None and not self.echo_task.done():
            if self.echo_track_sid == track.sid:
                return
            self.echo_task.cancel()
        self.echo_track_sid = track.sid
        self.echo_task = asyncio.ensure_future(self.listen(track, publication))
        self.tasks.add(self.echo_task)
        self.echo_task.add_done_callback(self.tasks.discard)

    async def listen(self, track: rtc.Track, publication: rtc.RemoteTrackPublication) -> None:
        """Measure the visitor's audio once a second, and queue it to be played back late.

        A track published with livekit-client's pre-connect buffer (what the visitor said before the
        agent joined) has that audio sent separately as a byte stream; it is played back first.
        """
        stream = rtc.AudioStream.from_track(track=track, sample_rate=SAMPLE_RATE, num_channels=1)
        window_start, squares, samples, frames = time.monotonic(), 0.0, 0, 0
        try:
            if AudioTrackFeature.TF_PRECONNECT_BUFFER in publication.audio_features:
                await self.replay_pre_connect(track.sid)
                window_start = time.monotonic()
            async for event in stream:
                frame = event.frame
                pcm = np.frombuffer(frame.data, dtype=np.int16).astype(np.float64) / 32768.0
                squares += float(np.dot(pcm, pcm))
                samples += pcm.size
                frames += 1
                now = time.monotonic()
                try:
                    self.playout.put_nowait((now + ECHO_DELAY, frame))
                except asyncio.QueueFull:
                    pass  # playback fell behind; drop rather than grow
                if now - window_start >= 1.0:
                    rms = math.sqrt(squares / samples) if samples else 0.0
                    self.fact("audio", rms=round(rms, 6), frames=frames)
                    window_start, squares, samples, frames = now, 0.0, 0, 0
        finally:
            await stream.aclose()

    async def replay_pre_connect(self, track_sid: str) -> None:
        try:
            frames = await self.pre_connect.wait_for_data(track_sid)
        except TimeoutError:
            frames = []
        pcm = to_mono_48k(frames)
        rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64) / 32768.0)))) if pcm.size else 0.0
        self.fact("pre_connect_audio", seconds=round(pcm.size / SAMPLE_RATE, 3), rms=round(rms, 6))
        now = time.monotonic()
        for i in range(0, pcm.size, FRAME_SAMPLES):
            chunk = pcm[i : i + FRAME_SAMPLES]
            await self.playout.put((now, rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, chunk.size)))

    async def play_out(self) -> None:
        while True:
            at, frame = await self.playout.get()
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.source.capture_frame(frame)


async def entry(ctx: JobContext, facts: Facts) -> None:
    await Conversation(ctx, facts).run()
