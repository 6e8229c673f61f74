"""A real conversation: the real loader in Chromium (fake microphone), a real livekit-server on loopback,
the demo agent worker on livekit-agents, and the service, with nothing stubbed (issue 26).

The agent worker writes what it received to its facts log (docs/agents.md); the tests read it to
count what reached the agent, and read the page for what reached the visitor.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from infrastructure.livekit_dev import AGENT_PROJECT
from tests.browser.conftest import CHROMIUM, TIMEOUT_MS, WATCH
from tests.browser.hostpages import HostSite, page_html
from tests.browser.live import AGENT_WAIT, LIVE_ARGS, Rig, live_rig

pytestmark = pytest.mark.browser

AGENT_NAME = "anyreach-live-test"
CONTACT_FORM = {
    "id": "contact",
    "title": "How can we reach you?",
    "trigger": "agent_request",
    "fields": [{"name": "email", "label": "Email", "type": "email", "required": True}],
}
CONFIG = {
    "v1": {
        "branding": {"display_name": "Live agent"},
        "voice": {"enabled": True, "mode": "open_mic"},
        "forms": [CONTACT_FORM],
    }
}


@pytest.fixture(scope="module")
def rig(embed_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with live_rig(tmp_path_factory.mktemp("live-var"), "org_live", AGENT_NAME, rate_conversation_starts="1000/minute") as rig:
        yield rig


@pytest.fixture(scope="module")
def live_browser(playwright: Any) -> Iterator[Any]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LIVE_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def widget(rig: Rig, allowed_site: HostSite) -> dict[str, Any]:
    created = rig.api.create_live_widget([allowed_site.domain], CONFIG)
    rig.api.wait_public(created["id"], allowed_site.origin)
    return created


@pytest.fixture
def page(live_browser: Any, rig: Rig, widget: dict[str, Any], allowed_site: HostSite) -> Iterator[Page]:
    context = live_browser.new_context(viewport={"width": 1024, "height": 800}, reduced_motion="reduce")
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(WATCH)
    page = context.new_page()
    url = allowed_site.serve(f"/live-{widget['id']}.html", page_html(rig.api.base, widget["id"], title="Live site"))
    page.goto(url)
    yield page
    context.close()


# ---- helpers ----


def open_panel(page: Page) -> None:
    page.get_by_role("button", name=re.compile("chat|Live agent", re.I)).first.click()
    expect(page.get_by_role("dialog")).to_be_visible()


def message_box(page: Page) -> Any:
    return page.get_by_role("textbox", name=re.compile("message", re.I))


def type_and_send(page: Page, text: str) -> None:
    box = message_box(page)
    box.fill(text)
    box.press("Enter")


def conversation_id(page: Page, widget_id: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        raw = page.evaluate("key => localStorage.getItem(key)", f"anyreach:{widget_id}")
        if raw:
            return json.loads(raw)["conversation_id"]
        assert time.monotonic() < deadline, "no conversation was started"
        time.sleep(0.05)


def agent_reply(page: Page, text: str) -> Any:
    """The agent's final reply that echoes `text` (a reply still streaming is aria-busy)."""
    return page.get_by_role("log").locator("[data-role=agent][aria-busy=false]").filter(has_text=f'You said: "{text}"')


def status(page: Page) -> Any:
    return page.get_by_role("status").first


# ---- text ----


def test_the_first_message_typed_right_after_opening_reaches_the_agent_exactly_once(
    page: Page, rig: Rig, widget: dict[str, Any]
) -> None:
    open_panel(page)
    type_and_send(page, "hello")  # the conversation starts here; the agent is dispatched after the room exists
    conversation = conversation_id(page, widget["id"])
    expect(agent_reply(page, "hello")).to_have_count(1, timeout=AGENT_WAIT * 1000)
    texts = rig.wait_facts("text", conversation, lambda found: len(found) >= 1)
    time.sleep(1.0)  # anything sent twice would arrive within this
    assert [f["text"] for f in rig.facts("text", conversation)] == ["hello"]
    (job,) = rig.facts("job", conversation)
    assert job["agent_version_id"] == widget["agent_version_id"] and job["resumed"] is False
    assert texts[0]["room"] == job["room"]


def test_five_messages_typed_at_once_arrive_once_each_in_order_and_replies_stay_after_a_reload(
    page: Page, rig: Rig, widget: dict[str, Any]
) -> None:
    open_panel(page)
    sent = [f"message {i}" for i in range(1, 6)]
    for text in sent:
        type_and_send(page, text)
    conversation = conversation_id(page, widget["id"])
    for text in sent:
        expect(agent_reply(page, text)).to_have_count(1, timeout=AGENT_WAIT * 1000)
    time.sleep(1.0)
    assert [f["text"] for f in rig.facts("text", conversation)] == sent

    page.reload()
    open_panel(page)
    for text in sent:
        expect(agent_reply(page, text)).to_have_count(1)


def test_a_resume_after_a_reload_joins_a_fresh_room_whose_agent_knows_the_conversation_and_the_resume(
    page: Page, rig: Rig, widget: dict[str, Any]
) -> None:
    open_panel(page)
    type_and_send(page, "before the reload")
    conversation = conversation_id(page, widget["id"])
    expect(agent_reply(page, "before the reload")).to_have_count(1, timeout=AGENT_WAIT * 1000)

    page.reload()
    open_panel(page)
    type_and_send(page, "after the reload")
    expect(agent_reply(page, "after the reload")).to_have_count(1, timeout=AGENT_WAIT * 1000)
    jobs = rig.facts("job", conversation)
    assert [j["resumed"] for j in jobs] == [False, True]
    assert jobs[0]["room"] != jobs[1]["room"]
    assert [f["text"] for f in rig.facts("text", conversation)] == ["before the reload", "after the reload"]
    assert rig.facts("text", conversation)[1]["room"] == jobs[1]["room"]


# ---- voice ----

MEASURE_PAGE_AUDIO = """async () => {
  const host = document.querySelector('anyreach-widget');
  const el = [...host.shadowRoot.querySelectorAll('audio')].find((a) => a.srcObject);
  if (!el) return -1;
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 2048;
  ctx.createMediaStreamSource(el.srcObject).connect(analyser);
  const data = new Float32Array(analyser.fftSize);
  let peak = 0;
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 50));
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const v of data) sum += v * v;
    peak = Math.max(peak, Math.sqrt(sum / data.length));
  }
  await ctx.close();
  return peak;
}"""


def test_voice_goes_both_ways_in_the_same_room_as_the_text(page: Page, rig: Rig, widget: dict[str, Any]) -> None:
    open_panel(page)
    page.get_by_role("button", name="Turn microphone on").click()  # the press starts the conversation
    conversation = conversation_id(page, widget["id"])
    expect(page.get_by_role("button", name="Turn microphone off")).to_be_visible(timeout=AGENT_WAIT * 1000)
    # What the fake microphone said before the agent joined reached it through livekit-client's pre-connect buffer.
    early = rig.wait_facts("pre_connect_audio", conversation, lambda found: len(found) >= 1)
    assert early[0]["seconds"] > 0, early  # (Chromium's fake microphone beeps once a second: it may be between beeps)
    heard = rig.wait_facts("audio", conversation, lambda found: any(f["rms"] > 0.001 for f in found))
    type_and_send(page, "and in text")
    expect(agent_reply(page, "and in text")).to_have_count(1, timeout=AGENT_WAIT * 1000)
    (job,) = rig.facts("job", conversation)
    assert {f["room"] for f in heard} == {job["room"]}
    assert rig.facts("text", conversation)[0]["room"] == job["room"]

    deadline = time.monotonic() + 30
    level = -1.0
    while level <= 0.001:
        level = page.evaluate(MEASURE_PAGE_AUDIO)
        assert time.monotonic() < deadline, f"the page never played audio from the agent (level {level})"
    assert len(rig.facts("job", conversation)) == 1, "switching between voice and text opened a second room"


def test_blocked_autoplay_is_noticed_and_a_button_plays_the_agents_voice(
    playwright: Any, rig: Rig, widget: dict[str, Any], allowed_site: HostSite
) -> None:
    # A browser that plays audio only after the visitor interacts. The page's own script starts the conversation and
    # notes when the widget offers its play button: Playwright's calls into the page would count as the visitor's gesture,
    # so the test makes none until the agent has joined and spoken.
    args = [a for a in LIVE_ARGS if not a.startswith("--autoplay-policy")] + ["--autoplay-policy=document-user-activation-required"]
    starts = ("<script>const t = setInterval(() => { if (window.Anyreach && document.querySelector('anyreach-widget')) "
              "{ clearInterval(t); window.Anyreach.startConversation(); } }, 100);"
              "setInterval(() => { const h = document.querySelector('anyreach-widget');"
              " const b = h && h.shadowRoot && h.shadowRoot.querySelector('.play');"
              " if (b && !b.hidden) window.__playOffered = true; }, 50);</script>")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
    try:
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        jobs = len(rig.facts("job"))
        page.goto(allowed_site.serve(f"/autoplay-{widget['id']}.html",
                                     page_html(rig.api.base, widget["id"], title="Autoplay", head=starts)))
        deadline = time.monotonic() + AGENT_WAIT
        while len(rig.facts("job")) == jobs:
            assert time.monotonic() < deadline, "no agent joined"
            time.sleep(0.2)
        time.sleep(4)  # the agent's greeting tone, refused by the browser
        assert page.evaluate("() => window.__playOffered === true"), "the widget did not offer to play the blocked audio"
        play = page.get_by_role("button", name="Play the assistant’s voice")
        play.click()
        expect(play).to_be_hidden()
    finally:
        browser.close()


# ---- failures ----


def test_a_killed_and_restarted_server_loses_nothing_the_visitor_typed(page: Page, rig: Rig, widget: dict[str, Any]) -> None:
    open_panel(page)
    type_and_send(page, "first")
    conversation = conversation_id(page, widget["id"])
    expect(agent_reply(page, "first")).to_have_count(1, timeout=AGENT_WAIT * 1000)

    rig.livekit.kill()
    expect(status(page)).to_have_attribute("data-state", re.compile("reconnecting|unavailable"), timeout=30_000)
    type_and_send(page, "typed while the server was down")
    rig.livekit.start()
    expect(agent_reply(page, "typed while the server was down")).to_have_count(1, timeout=90_000)
    type_and_send(page, "after the restart")
    expect(agent_reply(page, "after the restart")).to_have_count(1, timeout=AGENT_WAIT * 1000)
    texts = [f["text"] for f in rig.facts("text", conversation)]
    assert texts == ["first", "typed while the server was down", "after the restart"]


def test_a_killed_agent_shows_a_state_and_comes_back_on_the_next_message(page: Page, rig: Rig, widget: dict[str, Any]) -> None:
    open_panel(page)
    type_and_send(page, "are you there")
    conversation = conversation_id(page, widget["id"])
    expect(agent_reply(page, "are you there")).to_have_count(1, timeout=AGENT_WAIT * 1000)

    rig.worker.kill()
    expect(status(page)).to_have_text(re.compile("assistant left", re.I), timeout=60_000)
    rig.worker.start()
    type_and_send(page, "come back")
    expect(agent_reply(page, "come back")).to_have_count(1, timeout=AGENT_WAIT * 1000)
    assert [f["text"] for f in rig.facts("text", conversation)][-1:] == ["come back"]
    assert rig.facts("job", conversation)[-1]["resumed"] is True


# ---- forms and the end ----


def test_the_agent_asks_for_a_form_over_rpc_and_the_submission_is_recorded(
    page: Page, rig: Rig, widget: dict[str, Any]
) -> None:
    open_panel(page)
    type_and_send(page, "/form contact")
    conversation = conversation_id(page, widget["id"])
    email = page.get_by_role("textbox", name=re.compile("Email"))
    expect(email).to_be_visible(timeout=AGENT_WAIT * 1000)
    email.fill("visitor@example.com")
    page.get_by_role("button", name="Submit").click()
    rig.wait_facts("form_submitted", conversation, lambda found: [f["form_id"] for f in found] == ["contact"])
    row = rig.api.wait_conversation(widget["id"], conversation, lambda c: bool(c["forms"]))
    assert [(f["form_id"], f["values"]) for f in row["forms"]] == [("contact", {"email": "visitor@example.com"})]


def test_the_real_servers_room_finished_webhook_ends_the_conversation(page: Page, rig: Rig, widget: dict[str, Any]) -> None:
    open_panel(page)
    type_and_send(page, "/end")
    conversation = conversation_id(page, widget["id"])
    rig.wait_facts("ended", conversation, lambda found: len(found) == 1)
    row = rig.api.wait_conversation(widget["id"], conversation, lambda c: c["ended"], timeout=60)
    assert row["ended_by"] == "room_finished"


# ---- what a visitor's token allows on the real server ----

PROBE = r"""
import asyncio, json, sys
from livekit import api, rtc

async def attempt(room, name, source):
    track = rtc.LocalVideoTrack.create_video_track(name, rtc.VideoSource(16, 16))
    try:
        await asyncio.wait_for(room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=source)), 5)
    except Exception as e:
        return "refused: " + (type(e).__name__ or "error")
    published = [p for p in room.local_participant.track_publications.values() if p.source == source]
    return "published" if published else "refused: no publication"

async def main(url, token, _unused, key, secret):
    out = {}
    room = rtc.Room()
    await room.connect(url, token, rtc.RoomOptions(auto_subscribe=False))
    out["camera"] = await attempt(room, "camera", rtc.TrackSource.SOURCE_CAMERA)
    out["screen_share"] = await attempt(room, "screen", rtc.TrackSource.SOURCE_SCREENSHARE)
    # What the server holds for this participant, asked with the server's own credentials.
    async with api.LiveKitAPI(url.replace("ws://", "http://"), key, secret) as server:
        me = await server.room.get_participant(api.RoomParticipantIdentity(room=room.name, identity=room.local_participant.identity))
        out["server_tracks"] = [api.TrackSource.Name(t.source) for t in me.tracks]
    await room.disconnect()
    print(json.dumps(out))

asyncio.run(main(*sys.argv[1:6]))
"""

# Joining with a token: prints "joined", or fails (an error, or the SDK's native side aborting on the refusal).
JOIN = r"""
import asyncio, sys
from livekit import rtc

async def main(url, token):
    room = rtc.Room()
    await asyncio.wait_for(room.connect(url, token), 15)
    print("joined")
    await room.disconnect()

asyncio.run(main(*sys.argv[1:3]))
"""


def in_agent_env(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A script run with the LiveKit Python SDK (the agent's environment), against the real server."""
    return subprocess.run(["uv", "run", "--project", str(AGENT_PROJECT), "--frozen", "--quiet", "python", "-c", script, *args],
                          capture_output=True, text=True, timeout=120)


def probe(rig: Rig, token: str) -> dict[str, str]:
    done = in_agent_env(PROBE, rig.livekit.url, token, "", rig.livekit.api_key, rig.livekit.api_secret)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def room_service(rig: Rig, method: str, token: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{rig.livekit.http_url}/twirp/livekit.RoomService/{method}", json=body,
                      headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_the_real_server_refuses_a_visitors_token_a_camera_a_screen_share_and_any_other_room_and_an_expired_token(
    rig: Rig, widget: dict[str, Any], allowed_site: HostSite
) -> None:
    import datetime as dt

    from livekit import api

    start = httpx.post(f"{rig.api.base}/public/v1/widgets/{widget['id']}/conversations", json={},
                       headers={"Origin": allowed_site.origin}, timeout=10)
    assert start.status_code == 201, start.text
    grant = start.json()["livekit"]
    # A token of the same shape, signed with the server's real key, that expired two minutes ago (the server
    # allows a minute of clock skew): what a visitor holds long after the grant.
    expired = (api.AccessToken(rig.livekit.api_key, rig.livekit.api_secret).with_identity("visitor_expired")
               .with_ttl(dt.timedelta(seconds=-120)).with_grants(api.VideoGrants(room_join=True, room=grant["room"])).to_jwt())
    seen = probe(rig, grant["token"])
    assert seen["camera"].startswith("refused") and seen["screen_share"].startswith("refused"), seen
    assert not {"CAMERA", "SCREEN_SHARE", "SCREEN_SHARE_AUDIO"} & set(seen["server_tracks"]), seen
    late = in_agent_env(JOIN, rig.livekit.url, expired)
    assert late.returncode != 0 and "joined" not in late.stdout, late.stdout
    assert "401" in late.stderr, late.stderr[-2000:]  # the server's answer to the handshake: unauthorized

    # Another room, through the server API: the visitor's token carries no admin, create or list grant.
    for method, body in (("ListParticipants", {"room": "conv_someone_else"}), ("CreateRoom", {"name": "conv_mine"}),
                         ("ListRooms", {}), ("DeleteRoom", {"room": grant["room"]})):
        answer = room_service(rig, method, grant["token"], body)
        assert answer.status_code in (401, 403), f"{method}: {answer.status_code} {answer.text}"


# ---- one room at a time ----

JOINER = r"""
import asyncio, json, sys
from livekit import rtc

async def main(url, token, stay):
    room = rtc.Room()
    gone = asyncio.Event()
    why = {}

    def disconnected(reason):
        try:
            why["reason"] = rtc.DisconnectReason.Name(reason)
        except Exception:
            why["reason"] = str(reason)
        gone.set()

    room.on("disconnected", disconnected)
    await room.connect(url, token, rtc.RoomOptions(auto_subscribe=False))
    print(json.dumps({"joined": room.name}), flush=True)
    try:
        await asyncio.wait_for(gone.wait(), float(stay))
    except asyncio.TimeoutError:
        why["reason"] = "still connected"
        await room.disconnect()
    print(json.dumps({"left": room.name, "reason": why.get("reason")}), flush=True)

asyncio.run(main(*sys.argv[1:4]))
"""


class Participant:
    """A participant in a room with a visitor's grant: the LiveKit Python SDK in the agent's environment, kept
    connected until the server disconnects it (or `stay` seconds pass), saying why it left."""

    def __init__(self, rig: Rig, grant: dict[str, Any], stay: float = 90) -> None:
        self.process = subprocess.Popen(
            ["uv", "run", "--project", str(AGENT_PROJECT), "--frozen", "--quiet", "python", "-c", JOINER,
             rig.livekit.url, grant["token"], str(stay)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        read = self.process.stdout.readline()
        assert read, f"the participant exited: {self.process.stderr.read()[-3000:] if self.process.stderr else ''}"
        return json.loads(read)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def rooms_named(rig: Rig, *names: str) -> set[str]:
    """The rooms among `names` that the server holds, asked with the server's own credentials (on a thread of its own:
    Playwright's sync API keeps an event loop running on this one)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from livekit import api

    async def listed() -> set[str]:
        async with api.LiveKitAPI(rig.livekit.http_url, rig.livekit.api_key, rig.livekit.api_secret) as server:
            found = await server.room.list_rooms(api.ListRoomsRequest(names=list(names)))
            return {room.name for room in found.rooms}

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(lambda: asyncio.run(listed())).result(timeout=30)


def test_a_resume_ends_the_previous_room_on_the_real_server_and_its_finish_ends_nothing(
    rig: Rig, widget: dict[str, Any], allowed_site: HostSite
) -> None:
    headers = {"Origin": allowed_site.origin}
    path = f"{rig.api.base}/public/v1/widgets/{widget['id']}/conversations"
    start = httpx.post(path, json={}, headers=headers, timeout=10)
    assert start.status_code == 201, start.text
    first = start.json()
    conversation, old_room = first["conversation_id"], first["livekit"]["room"]
    visitor = Participant(rig, first["livekit"])
    try:
        assert visitor.line() == {"joined": old_room}
        assert rooms_named(rig, old_room) == {old_room}
        rig.wait_facts("job", conversation, lambda found: len(found) == 1)  # the agent is in the first room too

        resumed = httpx.post(f"{path}/{conversation}/resume", json={"resume_token": first["resume_token"]}, headers=headers,
                             timeout=10)
        assert resumed.status_code == 200, resumed.text
        new_room = resumed.json()["livekit"]["room"]
        assert new_room != old_room
        # Ended before the answer: whoever was in the old room (a visitor's other tab, the agent) was put out of it.
        assert visitor.line() == {"left": old_room, "reason": "ROOM_DELETED"}
        assert rooms_named(rig, old_room, new_room) == set()
        again = Participant(rig, resumed.json()["livekit"], stay=5)
        try:
            assert again.line() == {"joined": new_room}
            assert rooms_named(rig, old_room, new_room) == {new_room}, "two rooms of one conversation"
            jobs = rig.wait_facts("job", conversation, lambda found: len(found) == 2)
            assert [(j["room"], j["resumed"]) for j in jobs] == [(old_room, False), (new_room, True)]
            # The old room's `room_finished` reached the service meanwhile (sent as the room was deleted): it is
            # history, and ends nothing.
            time.sleep(2)
            row = rig.api.wait_conversation(widget["id"], conversation, lambda c: c["rooms"] == 2)
            assert row["ended"] is False and row["ended_by"] is None
        finally:
            again.close()
    finally:
        visitor.close()
