"""What the snippet costs a customer's page, beside the same page without it (issue 14).

    uv run python -m tests.bench.bench_embed            # 5 alternated runs of each measurement
    uv run python -m tests.bench.bench_embed --quick    # 1 run each: proves it runs (CI)
    uv run python -m tests.bench.bench_embed --trace /tmp/embed-traces --runs 3   # traced loads, which tasks are ours

In Debian's Chromium (headless, through Playwright), against the real service on loopback, a fresh
browser profile per run (cold caches), each run of the page with the snippet alternated with one of
the same page without it:

1. **Before interaction**: requests and bytes transferred (CDP `encodedDataLength`: headers and
   compressed bodies), in total and to our origin, until the network is idle and 500 ms more.
2. **Loading at 4x CPU slowdown** (CDP `Emulation.setCPUThrottlingRate`): the long tasks (over
   50 ms, `PerformanceObserver`) and the main thread's task and script time (CDP
   `Performance.getMetrics` `TaskDuration`, `ScriptDuration`), from navigation until the network
   is idle and 1 s more. Medians. On a busy machine other processes stretch every task's wall time;
   the output gives the load average, and a control page running one 120 ms script.
3. **Click to open**, at 4x CPU slowdown: from the `pointerdown` of a click on the launcher to the
   first frame that shows the panel, cold (the panel chunk not fetched yet) and warm (after a hover
   fetched it). The baseline is the same page with a plain button that un-hides a panel of its own.

Nothing here asserts on time; `test_bench_embed_smoke.py` runs `--quick` in CI.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.bench.common import load_average, run_main
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.browser.hostpages import HostSite, page_html
from tests.browser.service import ApiServer, running_api

THROTTLE = 4
TIMEOUT_MS = 30_000

LONG_TASKS = """(() => {
  window.__benchLongTasks = [];
  new PerformanceObserver((list) => list.getEntries().forEach((e) => window.__benchLongTasks.push(e.duration)))
    .observe({ type: 'longtask', buffered: true });
})();"""

# Starts at the press, ends at the first frame in which the panel is shown (ours or the baseline's).
CLICK_TO_OPEN = """(() => {
  const shown = () => {
    const host = document.querySelector('anyreach-widget');
    const panel = host ? host.shadowRoot.querySelector('.panel') : document.getElementById('panel');
    return !!panel && panel.checkVisibility({ visibilityProperty: true });
  };
  document.addEventListener('pointerdown', () => {
    const at = performance.now();
    const check = () => (shown() ? (window.__benchOpened = performance.now() - at) : requestAnimationFrame(check));
    requestAnimationFrame(check);
  }, { capture: true, once: true });
})();"""

LAUNCHER_SHOWN = "() => { const h = document.querySelector('anyreach-widget'); " \
    "const l = h && h.shadowRoot.querySelector('.launcher'); return !!l && l.getClientRects().length > 0; }"

BASELINE_PANEL = """<button id="open" type="button" style="position:fixed;right:20px;bottom:20px;width:56px;height:56px">Chat</button>
<div id="panel" hidden style="position:fixed;right:20px;bottom:88px;width:380px;height:640px;border:1px solid #ccc">A panel.</div>
<script>document.getElementById('open').addEventListener('click', () => { document.getElementById('panel').hidden = false; });</script>"""


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


@contextmanager
def browser(args: list[str] = CHROMIUM_ARGS) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def fresh_page(chromium: Any, init: str | None = None) -> Iterator[tuple[Any, Any]]:
    """A page in a fresh profile, and a CDP session on it with the network and metrics enabled."""
    ctx = chromium.new_context(viewport={"width": 1024, "height": 800})
    ctx.set_default_timeout(TIMEOUT_MS)
    if init:
        ctx.add_init_script(init)
    page = ctx.new_page()
    cdp = ctx.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Performance.enable")
    try:
        yield page, cdp
    finally:
        ctx.close()


class Traffic:
    """Requests and bytes a page transfers, as Chromium's network stack counts them."""

    def __init__(self, cdp: Any) -> None:
        self.urls: dict[str, str] = {}
        self.bytes: dict[str, float] = {}
        cdp.on("Network.requestWillBeSent", lambda e: self.urls.setdefault(e["requestId"], e["request"]["url"]))
        cdp.on("Network.loadingFinished", lambda e: self.bytes.__setitem__(e["requestId"], e["encodedDataLength"]))

    def figures(self, ours: str) -> dict[str, float]:
        mine = [rid for rid, url in self.urls.items() if url.startswith(ours + "/")]
        return {
            "requests": len(self.urls),
            "bytes": sum(self.bytes.values()),
            "our_requests": len(mine),
            "our_bytes": sum(self.bytes.get(rid, 0) for rid in mine),
        }


def settle(page: Any, extra_ms: int) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(extra_ms)


def measure_load(chromium: Any, url: str, api: str, snippet: bool) -> dict[str, float]:
    """One cold load: traffic before interaction, and long tasks and task time at 4x CPU slowdown."""
    with fresh_page(chromium, LONG_TASKS) as (page, cdp):
        traffic = Traffic(cdp)
        cdp.send("Emulation.setCPUThrottlingRate", {"rate": THROTTLE})
        page.goto(url)
        # Only plain evaluations, the same on both pages: Playwright's locators would first run its own
        # injected script in the page, a long task that is not ours.
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not page.evaluate(LAUNCHER_SHOWN) and snippet:
            assert time.monotonic() < deadline, "the launcher did not appear"
            page.wait_for_timeout(20)
        settle(page, 1000)
        long_tasks = page.evaluate("() => window.__benchLongTasks")
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        return {
            **traffic.figures(api),
            "long_task_ms": sum(long_tasks),
            "blocking_ms": sum(max(0.0, d - 50) for d in long_tasks),
            "task_ms": metrics.get("TaskDuration", 0.0) * 1000,
            "script_ms": metrics.get("ScriptDuration", 0.0) * 1000,
        }


def measure_open(chromium: Any, url: str, snippet: bool, warm: bool) -> float:
    """Milliseconds from the press on the launcher (or the baseline's button) to the open panel, at 4x slowdown."""
    with fresh_page(chromium, CLICK_TO_OPEN) as (page, cdp):
        page.goto(url)
        target = page.get_by_test_id("anyreach-launcher") if snippet else page.locator("#open")
        target.wait_for(state="visible")
        settle(page, 200)
        if warm:
            target.hover()
            settle(page, 200)
        cdp.send("Emulation.setCPUThrottlingRate", {"rate": THROTTLE})
        target.click()
        page.wait_for_function("() => window.__benchOpened !== undefined")
        return float(page.evaluate("() => window.__benchOpened"))


TRACE_CATEGORIES = ["devtools.timeline", "toplevel", "v8.execute", "blink.user_timing"]
TASKS = ("ThreadControllerImpl::RunTask", "BlinkScheduler_PerformMicrotaskCheckpoint")


def our_tasks(trace: dict[str, Any], ours: str) -> list[tuple[str, float]]:
    """The renderer main thread's tasks that ran our scripts: (what ran, as the long-animation-frame
    attribution names it, and the task's milliseconds), in order."""
    events = trace["traceEvents"]
    main = {(e["pid"], e["tid"]) for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
            and e["args"].get("name") == "CrRendererMain"}
    tasks = [e for e in events if (e.get("pid"), e.get("tid")) in main and e.get("ph") == "X" and e["name"] in TASKS]
    found = []
    for e in events:
        info = (e.get("args") or {}).get("animation_frame_script_timing_info")
        if e.get("name") != "AnimationFrame::Script::Execute" or e.get("ph") != "b" or not info:
            continue
        if not info.get("source_location_url", "").startswith(ours + "/"):
            continue
        around = [t for t in tasks if t["ts"] - 200 <= e["ts"] <= t["ts"] + t["dur"]]
        if around:
            what = f"{info['invoker_type']} {info['class_like_name']}.{info['property_like_name']}".rstrip(" .")
            found.append((what, max(t["dur"] for t in around) / 1000))
    return found


def trace_loads(chromium: Any, url: str, api: str, runs: int, out: Path, log: Callable[[str], None]) -> None:
    """Cold loads of the page with the snippet at 4x, each traced (the trace slows them: no figures
    from these); writes each trace to `out` and logs the tasks that ran our scripts and the long tasks."""
    out.mkdir(parents=True, exist_ok=True)
    for i in range(runs):
        with fresh_page(chromium, LONG_TASKS) as (page, cdp):
            cdp.send("Emulation.setCPUThrottlingRate", {"rate": THROTTLE})
            chromium.start_tracing(page=page, categories=TRACE_CATEGORIES)
            page.goto(url)
            deadline = time.monotonic() + TIMEOUT_MS / 1000
            while not page.evaluate(LAUNCHER_SHOWN):
                assert time.monotonic() < deadline, "the launcher did not appear"
                page.wait_for_timeout(20)
            settle(page, 1000)
            long_tasks = page.evaluate("() => window.__benchLongTasks")
            raw = chromium.stop_tracing()
        (out / f"load-{i + 1}.json").write_bytes(raw)
        tasks = ", ".join(f"{what} {ms:.1f} ms" for what, ms in our_tasks(json.loads(raw), api))
        log(f"traced load {i + 1}: our tasks: {tasks or 'none found'}; long tasks: {[round(d) for d in long_tasks]} ms")


BUSY = "<script>{ const end = performance.now() + 120; while (performance.now() < end); }</script>"


def setup(api: ApiServer, site: HostSite) -> tuple[str, str, str, str]:
    """The widget, and four pages: with the snippet, the same without it, without it with a native
    panel, and without it running one 120 ms script (the control: long tasks are seen)."""
    config = {"v1": {"branding": {"display_name": "Bench Co"}, "text": {"welcome_message": "Hello!"},
                     "quick_actions": [{"label": "Pricing", "message": "What does it cost?"}]}}
    widget = api.create_live_widget([site.domain], config)
    api.wait_public(widget["id"], site.origin)
    with_snippet = page_html(api.base, widget["id"], title="Product page")
    without = with_snippet.split('<script src="', 1)[0] + "</body>\n</html>\n"
    return (
        site.serve("/with.html", with_snippet),
        site.serve("/without.html", without),
        site.serve("/native.html", without.replace("</body>", BASELINE_PANEL + "\n</body>")),
        site.serve("/busy.html", without.replace("</body>", BUSY + "\n</body>")),
    )


def run(runs: int, log: Callable[[str], None], trace: Path | None = None) -> dict[str, Any]:
    site = HostSite("127.0.0.1").start()
    try:
        with tempfile.TemporaryDirectory() as data, running_api(Path(data), "org_bench") as api, browser() as chromium:
            with_url, without_url, native_url, busy_url = setup(api, site)
            if trace:
                trace_loads(chromium, with_url, api.base, runs, trace, log)
                return {}
            control = measure_load(chromium, busy_url, api.base, snippet=False)["long_task_ms"]
            loads: dict[str, list[dict[str, float]]] = {"with": [], "without": []}
            opens: dict[str, list[float]] = {"cold": [], "warm": [], "native": []}
            for i in range(runs):
                log(f"run {i + 1}/{runs}")
                loads["without"].append(measure_load(chromium, without_url, api.base, snippet=False))
                loads["with"].append(measure_load(chromium, with_url, api.base, snippet=True))
                opens["native"].append(measure_open(chromium, native_url, snippet=False, warm=False))
                opens["cold"].append(measure_open(chromium, with_url, snippet=True, warm=False))
                opens["warm"].append(measure_open(chromium, with_url, snippet=True, warm=True))
    finally:
        site.stop()
    return summarise(loads, opens, runs, control)


def summarise(loads: dict[str, list[dict[str, float]]], opens: dict[str, list[float]], runs: int, control: float) -> dict[str, Any]:
    keys = loads["with"][0].keys()
    load = {side: {k: median([r[k] for r in rows]) for k in keys} for side, rows in loads.items()}
    added = {k: load["with"][k] - load["without"][k] for k in keys}
    click = {kind: median(values) for kind, values in opens.items()}
    results = {"runs": runs, "throttle": THROTTLE, "load": load, "added": added, "open_ms": click, "control_long_task_ms": control,
               "raw": {"loads": loads, "opens": opens}}
    results["markdown"] = markdown(results)
    return results


def markdown(r: dict[str, Any]) -> str:
    w, wo, add = r["load"]["with"], r["load"]["without"], r["added"]
    o = r["open_ms"]
    lines = [
        f"Medians of {r['runs']} cold loads each, alternated; Chromium headless, CPU throttled {r['throttle']}x for the load and the click.",
        "",
        "| before interaction | page without the snippet | with the snippet | added | of which to us |",
        "|---|---:|---:|---:|---:|",
        f"| requests | {wo['requests']:.0f} | {w['requests']:.0f} | {add['requests']:.0f} | {w['our_requests']:.0f} |",
        f"| bytes transferred | {wo['bytes']:,.0f} | {w['bytes']:,.0f} | {add['bytes']:,.0f} | {w['our_bytes']:,.0f} (budget 16,000) |",
        f"| long tasks while loading, {r['throttle']}x CPU | {wo['long_task_ms']:.0f} ms | {w['long_task_ms']:.0f} ms | {add['long_task_ms']:.0f} ms | (target ≤ 50 ms) |",
        f"| (control: the page without the snippet, plus one 120 ms script) | {r['control_long_task_ms']:.0f} ms | | | |",
        f"| total blocking time, {r['throttle']}x CPU | {wo['blocking_ms']:.0f} ms | {w['blocking_ms']:.0f} ms | {add['blocking_ms']:.0f} ms | |",
        f"| main-thread task time, {r['throttle']}x CPU | {wo['task_ms']:.0f} ms | {w['task_ms']:.0f} ms | {add['task_ms']:.0f} ms | |",
        f"| script time, {r['throttle']}x CPU | {wo['script_ms']:.0f} ms | {w['script_ms']:.0f} ms | {add['script_ms']:.0f} ms | |",
        "",
        f"| click to open panel, {r['throttle']}x CPU | ms | vs a native panel on the same page |",
        "|---|---:|---:|",
        f"| native `<div hidden>` un-hidden by a button (baseline) | {o['native']:.0f} | 1.0 |",
        f"| launcher, panel chunk already fetched (hovered first) | {o['warm']:.0f} | {o['warm'] / max(o['native'], 0.001):.1f} |",
        f"| launcher, cold (chunk fetched at the click) | {o['cold']:.0f} | {o['cold'] / max(o['native'], 0.001):.1f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one run of each measurement (CI smoke)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--trace", type=Path, metavar="DIR",
                        help="instead of the figures: trace --runs loads with the snippet into DIR and name the tasks running our scripts")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    log(f"load average at start: {load_average()}")
    if args.trace:
        run(runs, log, args.trace)
        return {}
    results = run(runs, log)
    log(f"load average at end: {load_average()}")
    log(results["markdown"])
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in results.items() if k != "markdown"}, indent=2))
    return results


if __name__ == "__main__":
    run_main(main)
