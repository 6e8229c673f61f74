"""A real conversation's first reply and first audio, through our lazy start beside a floor (issue 26).

    uv run python -m tests.bench.bench_live              # 20 conversations of each kind
    uv run python -m tests.bench.bench_live --quick      # 2 of each: proves it runs (CI)

Against a real livekit-server and the agent worker on loopback (tests/browser/live.py), in Debian's
Chromium with a fake microphone, each conversation in a fresh profile and a fresh room, the two
kinds alternated:

1. **First reply.** From the visitor's Enter on their first message to the agent's final reply on
   screen. *Lazy*: the page has only the snippet and the panel open (what a visitor has before the
   first message): the LiveKit chunk, the conversation start, the token, connecting, the agent's
   dispatch and its reply all happen after the press. *Floor*: a page that has livekit-client loaded
   (our LiveKit chunk, imported ahead) and a token minted in advance; it connects, waits for the
   agent and sends at the press. Both include the agent's dispatch into a fresh room.
2. **First audio.** From the microphone press to the first non-silent audio from the agent in the
   page (Web Audio), likewise: the widget's press against a floor page that connects with a token
   minted ahead and switches the microphone on at the press.
3. **One agent job's CPU and memory**: the worker's CPU time per conversation (from its `usage`
   facts) and its peak resident memory.

Times are the page's own clock (`performance.now()`), p50 and p95, and the ratio lazy / floor.
Nothing here asserts on time; `test_bench_live_smoke.py` runs `--quick` in CI.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from api.embed_routes import DIST
from tests.bench import bench_embed
from tests.bench.common import load_average, run_main
from tests.browser.hostpages import HostSite, page_html
from tests.browser.live import LIVE_ARGS, Rig, live_rig

AGENT_NAME = "anyreach-bench"
TIMEOUT_MS = 60_000
CONFIG = {"v1": {"branding": {"display_name": "Bench agent"}, "voice": {"enabled": True, "mode": "open_mic"}}}

# In the widget's page: the time of the Enter that sends the first message, and of the first final agent reply.
WATCH_REPLY = """() => {
  const root = document.querySelector('anyreach-widget').shadowRoot;
  window.__bench = {};
  root.addEventListener('keydown', (e) => { if (e.key === 'Enter' && !window.__bench.sent) window.__bench.sent = performance.now(); }, true);
  const seen = () => root.querySelector('.msg.agent[aria-busy=false][data-testid=anyreach-message]');
  new MutationObserver(() => { if (!window.__bench.reply && seen()) window.__bench.reply = performance.now(); })
    .observe(root, { subtree: true, childList: true, attributes: true, characterData: true });
}"""

# In any page: the time of the first non-silent audio from the agent (an <audio> fed by a remote track).
WATCH_AUDIO = """(inWidget) => {
  const root = inWidget ? document.querySelector('anyreach-widget').shadowRoot : document;
  window.__bench = window.__bench || {};
  const ctx = new AudioContext();
  const data = new Float32Array(512);
  const poll = () => {
    const el = [...root.querySelectorAll('audio')].find((a) => a.srcObject);
    if (el && !window.__benchAnalyser) {
      window.__benchAnalyser = ctx.createAnalyser();
      window.__benchAnalyser.fftSize = 512;
      ctx.createMediaStreamSource(el.srcObject).connect(window.__benchAnalyser);
    }
    if (window.__benchAnalyser) {
      window.__benchAnalyser.getFloatTimeDomainData(data);
      let sum = 0;
      for (const v of data) sum += v * v;
      if (Math.sqrt(sum / data.length) > 0.002) return (window.__bench.audio = performance.now());
    }
    setTimeout(poll, 5);
  };
  poll();
}"""

FLOOR_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Floor</title></head>
<body><button id="go" type="button">Go</button><div id="out"></div><script type="module">
const chunk = await import(%(chunk)s);
const grant = %(grant)s;
const mode = %(mode)s;
window.__bench = {};
const out = document.getElementById('out');
let room, ready, agentHere = false;
const waiting = new Promise((r) => (ready = r));
const hooks = {
  state() {}, micDenied() {}, audioBlocked() {}, formRequested() { return false; },
  agentPresent(p) { agentHere = p; if (p) ready(); },
  text(id, role, text, final) { if (role === 'agent' && final && !window.__bench.reply) window.__bench.reply = performance.now(); },
  mount(el) { el.hidden = true; out.append(el); },
};
document.getElementById('go').addEventListener('click', async () => {
  window.__bench.sent = performance.now();
  room = chunk.open(hooks);
  if (mode === 'voice') void room.setMic(true);
  await room.join(grant);
  if (mode === 'text') { await waiting; await room.sendText('hello'); }
});
window.__benchReady = true;
</script></body></html>"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


@contextmanager
def fresh_page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1024, "height": 800})
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


def lk_chunk_url(base: str) -> str:
    manifest = json.loads((DIST / "manifest.json").read_text())
    return f"{base}/embed/{manifest['chunks']['livekit']['file']}"


def start_grant(rig: Rig, widget_id: str, origin: str) -> dict[str, Any]:
    answer = httpx.post(f"{rig.api.base}/public/v1/widgets/{widget_id}/conversations", json={},
                        headers={"Origin": origin}, timeout=10)
    answer.raise_for_status()
    return answer.json()["livekit"]


def lazy_reply(browser: Any, url: str) -> float:
    with fresh_page(browser) as page:
        page.goto(url)
        page.get_by_role("button", name="Chat with us").click()
        box = page.get_by_role("textbox", name=re.compile("message", re.I))
        box.wait_for()
        page.evaluate(WATCH_REPLY)
        box.fill("hello")
        box.press("Enter")
        page.wait_for_function("() => window.__bench.reply", timeout=TIMEOUT_MS)
        return page.evaluate("() => window.__bench.reply - window.__bench.sent")


def lazy_audio(browser: Any, url: str) -> float:
    with fresh_page(browser) as page:
        page.goto(url)
        page.get_by_role("button", name="Chat with us").click()
        mic = page.get_by_role("button", name="Turn microphone on")
        mic.wait_for()
        page.evaluate("() => { window.__bench = {}; }")
        page.evaluate(WATCH_AUDIO, True)
        page.evaluate("() => document.querySelector('anyreach-widget').shadowRoot.addEventListener("
                      "'pointerdown', () => { window.__bench.sent ||= performance.now(); }, true)")
        mic.click()
        page.wait_for_function("() => window.__bench.audio", timeout=TIMEOUT_MS)
        return page.evaluate("() => window.__bench.audio - window.__bench.sent")


def floor(browser: Any, site: HostSite, rig: Rig, widget_id: str, mode: str, n: int) -> float:
    grant = start_grant(rig, widget_id, site.origin)  # minted before the page, outside the time
    html = FLOOR_PAGE % {"chunk": json.dumps(lk_chunk_url(rig.api.base)), "grant": json.dumps(grant), "mode": json.dumps(mode)}
    url = site.serve(f"/floor-{mode}-{n}.html", html)
    with fresh_page(browser) as page:
        page.goto(url)
        page.wait_for_function("() => window.__benchReady", timeout=TIMEOUT_MS)
        if mode == "voice":
            page.evaluate(WATCH_AUDIO, False)
        page.get_by_role("button", name="Go").click()
        key = "reply" if mode == "text" else "audio"
        page.wait_for_function(f"() => window.__bench.{key}", timeout=TIMEOUT_MS)
        return page.evaluate(f"() => window.__bench.{key} - window.__bench.sent")


def job_figures(rig: Rig) -> dict[str, float]:
    """The worker's CPU per job in steady state: its CPU between the first job's end and the last's, per job
    ended in between (the `usage` facts carry the whole process's figures; jobs overlap a little)."""
    usage = rig.facts("usage")
    per_job = (usage[-1]["cpu_seconds"] - usage[0]["cpu_seconds"]) / (len(usage) - 1) if len(usage) > 1 else float("nan")
    return {"cpu_ms_per_job": per_job * 1000,
            "max_rss_mb": max((u["max_rss_mb"] for u in usage), default=float("nan"))}


def run(conversations: int, log: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp, \
            live_rig(Path(tmp) / "var", "org_bench", AGENT_NAME, rate_conversation_starts="100000/minute") as rig, \
            bench_embed.browser(LIVE_ARGS) as browser:
        site = HostSite("127.0.0.1").start()
        try:
            widget = rig.api.create_live_widget([site.domain], CONFIG)
            rig.api.wait_public(widget["id"], site.origin)
            url = site.serve("/bench.html", page_html(rig.api.base, widget["id"], title="Bench site"))
            times: dict[str, list[float]] = {"reply_lazy": [], "reply_floor": [], "audio_lazy": [], "audio_floor": []}
            for n in range(conversations):
                times["reply_lazy"].append(lazy_reply(browser, url))
                times["reply_floor"].append(floor(browser, site, rig, widget["id"], "text", n))
                times["audio_lazy"].append(lazy_audio(browser, url))
                times["audio_floor"].append(floor(browser, site, rig, widget["id"], "voice", n))
                log(f"  conversation {n + 1}/{conversations}: " + ", ".join(f"{k} {v[-1]:.0f} ms" for k, v in times.items()))
            rig.worker.stop()  # each job writes its usage as it ends
            jobs = job_figures(rig)
        finally:
            site.stop()
    return summarise(times, jobs, conversations)


def summarise(times: dict[str, list[float]], jobs: dict[str, float], conversations: int) -> dict[str, Any]:
    figures = {k: {"p50": statistics.median(v), "p95": percentile(v, 0.95)} for k, v in times.items()}
    ratios = {kind: {q: figures[f"{kind}_lazy"][q] / figures[f"{kind}_floor"][q] for q in ("p50", "p95")}
              for kind in ("reply", "audio")}
    result = {"conversations": conversations, "times_ms": figures, "ratios": ratios, "job": jobs, "load": load_average()}
    result["markdown"] = markdown(result)
    return result


def markdown(r: dict[str, Any]) -> str:
    t, q = r["times_ms"], r["ratios"]
    rows = [
        f"{r['conversations']} conversations of each kind; load average {r['load']}",
        "",
        "| measure | lazy p50 | floor p50 | ratio p50 | lazy p95 | floor p95 | ratio p95 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, label in (("reply", "first send to the agent's reply on screen"), ("audio", "microphone press to the agent's first audio")):
        lazy, fl = t[f"{kind}_lazy"], t[f"{kind}_floor"]
        rows.append(f"| {label} | {lazy['p50']:.0f} ms | {fl['p50']:.0f} ms | {q[kind]['p50']:.2f} | "
                    f"{lazy['p95']:.0f} ms | {fl['p95']:.0f} ms | {q[kind]['p95']:.2f} |")
    rows += ["", f"One agent job: {r['job']['cpu_ms_per_job']:.0f} ms of CPU (mean per conversation), "
             f"worker peak RSS {r['job']['max_rss_mb']:.0f} MB."]
    return "\n".join(rows)


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 conversations of each kind (CI)")
    parser.add_argument("--conversations", type=int, default=20)
    args = parser.parse_args(argv)
    result = run(2 if args.quick else args.conversations, log)
    log(result["markdown"])
    return result


if __name__ == "__main__":
    run_main(main)
