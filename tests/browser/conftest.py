"""Browser fixtures: the real service on a loopback port, two customer sites on two other origins,
and Debian's Chromium driven by Playwright (session-scoped; one fresh context per test).

Nothing here skips: a missing Chromium, bundle or npm fails the test with what to do about it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from api.embed_routes import BUILD_COMMAND, DIST
from tests.browser.hostpages import HostSite, page_html
from tests.browser.service import ApiServer, running_api

ROOT = Path(__file__).resolve().parents[2]
EMBED_DIR = ROOT / "api" / "embed"
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = os.environ.get("WIDGETS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # A fake microphone that needs no prompt: tests see exactly when the page asks for it.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
ORG = "org_browser"
TIMEOUT_MS = 20_000  # generous: CI machines are shared


# ---- the embed bundle ----


def _bundle_is_stale() -> bool:
    manifest = DIST / "manifest.json"
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    sources = [*(EMBED_DIR / "src").glob("*.ts"), EMBED_DIR / "build.mjs", EMBED_DIR / "package-lock.json"]
    return any(p.stat().st_mtime > built for p in sources if p.exists())


@pytest.fixture(scope="package")
def embed_bundle() -> Path:
    """The built loader; built here (never skipped) when it is missing or older than its sources."""
    if not _bundle_is_stale():
        return DIST
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"The embed bundle is missing or stale and npm is not installed. Run `{BUILD_COMMAND}`.")
    steps = [["run", "build"]] if (EMBED_DIR / "node_modules").exists() else [["ci"], ["run", "build"]]
    for step in steps:
        done = subprocess.run([npm, "--prefix", str(EMBED_DIR), *step], capture_output=True, text=True, timeout=240)
        if done.returncode != 0:
            pytest.fail(f"`npm {' '.join(step)}` failed while building the embed bundle:\n{done.stdout}\n{done.stderr}")
    return DIST


# ---- the service ----


@pytest.fixture(scope="package")
def api_server(embed_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The service on the embedded wiring, on a free loopback port (see `running_api`)."""
    with running_api(tmp_path_factory.mktemp("widgets-var"), ORG) as server:
        yield server


# ---- the customer sites ----


@pytest.fixture(scope="package")
def allowed_site() -> Iterator[HostSite]:
    """The site the widget allows: http://127.0.0.1:<port>."""
    site = HostSite("127.0.0.1").start()
    yield site
    site.stop()


@pytest.fixture(scope="package")
def other_site() -> Iterator[HostSite]:
    """Another site on another origin (http://localhost:<port>), which the widget does not allow."""
    site = HostSite("localhost").start()
    yield site
    site.stop()


@pytest.fixture(scope="package")
def embed_page(api_server: ApiServer) -> Callable[..., str]:
    """`embed_page(site, widget_id, path=..., head=..., headers=..., nonce=..., copies=...)`: serves a page
    with the snippet (sent with `headers`, such as a policy), answers its URL."""

    def make(
        site: HostSite, widget_id: str, path: str | None = None, *, head: str = "", title: str = "Customer site",
        headers: dict[str, str] | None = None, nonce: str | None = None, copies: int = 1,
    ) -> str:
        html = page_html(api_server.base, widget_id, title=title, head=head, nonce=nonce, copies=copies)
        return site.serve(path or f"/{widget_id}.html", html, headers)

    return make


# ---- the browser ----


@pytest.fixture(scope="package")
def playwright() -> Iterator[Any]:
    """Playwright's one driver for the package: a second sync_playwright() in the same thread fails."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: `apt-get install -y chromium` (or set WIDGETS_CHROMIUM).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Any) -> Iterator[Any]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


# Runs before any page script, outside the page's policy: records every CSP violation report and
# every call asking for the microphone, for the tests to read.
WATCH = """(() => {
  const seen = { violations: [], getUserMedia: 0 };
  Object.defineProperty(window, '__anyreachTest', { value: seen });
  document.addEventListener('securitypolicyviolation', (e) => seen.violations.push({
    directive: e.effectiveDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber, sample: e.sample,
  }), true);
  const media = navigator.mediaDevices;
  if (media && media.getUserMedia) {
    const real = media.getUserMedia.bind(media);
    media.getUserMedia = (constraints) => (seen.getUserMedia++, real(constraints));
  }
})();"""

# For the tests of the panel alone, the LiveKit side is a stub: a module with the real chunk's interface,
# served in its place. It joins at once, has an agent present, echoes every text, and asks for the microphone
# exactly when the loader switches it on (as livekit-client does). tests/browser/test_live_conversation.py
# runs the real chunk against a real LiveKit server and agent.
LIVEKIT_STUB = """
export function open(hooks) {
  const stub = (window.__lkStub ||= { connects: 0, sent: [], mic: [] });
  let n = 0;
  return {
    async join(grant) {
      stub.connects++;
      hooks.agentPresent(true);
    },
    async sendText(text) {
      stub.sent.push(text);
      setTimeout(() => hooks.text('agent-' + ++n, 'agent', 'Echo: ' + text, true), 30);
    },
    async setMic(on) {
      stub.mic.push(on);
      if (!on) return true;
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
        stream.getTracks().forEach((t) => t.stop());
        return true;
      } catch {
        return false;
      }
    },
    formSubmitted() {},
    startAudio() {},
    async disconnect() {},
  };
}
"""
LIVEKIT_CHUNK = re.compile(r"/embed/lk-[0-9a-f]{16}\.js$")


def stub_livekit(page: Any) -> None:
    """Serves LIVEKIT_STUB wherever the page imports the LiveKit chunk."""
    page.route(
        LIVEKIT_CHUNK,
        lambda route: route.fulfill(
            status=200, body=LIVEKIT_STUB, content_type="application/javascript",
            headers={"Access-Control-Allow-Origin": "*", "Cross-Origin-Resource-Policy": "cross-origin"},
        ),
    )


def watched(page: Any) -> dict[str, Any]:
    """What WATCH recorded on the page so far."""
    return page.evaluate("() => ({ violations: window.__anyreachTest.violations, getUserMedia: window.__anyreachTest.getUserMedia })")


@dataclass
class Recorder:
    """What one page did: its requests, console messages and uncaught errors."""

    requests: list[Any] = field(default_factory=list)
    console: list[Any] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)
    failed: list[Any] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        # Playwright tags its handlers with an attribute, which bound built-ins cannot carry.
        page.on("request", lambda request: self.requests.append(request))
        page.on("console", lambda message: self.console.append(message))
        page.on("pageerror", lambda error: self.errors.append(error))
        page.on("websocket", lambda ws: self.websockets.append(ws.url))
        page.on("requestfailed", lambda request: self.failed.append(request))

    def to(self, base: str) -> list[Any]:
        """The requests made to `base` (our API), in order."""
        return [r for r in self.requests if r.url.startswith(base + "/")]

    def policy_errors(self) -> list[str]:
        """Console lines in which the browser reports a Content-Security-Policy or Trusted Types refusal."""
        words = ("Content Security Policy", "Refused to", "TrustedHTML", "TrustedScript", "Trusted Type")
        return [m.text for m in self.console if any(w in m.text for w in words)]

    def posts(self, suffix: str) -> list[Any]:
        return [r for r in self.requests if r.method == "POST" and r.url.split("?", 1)[0].endswith(suffix)]

    def warnings(self) -> list[str]:
        return [m.text for m in self.console if m.type == "warning"]


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser profile (own storage) per test."""
    ctx = browser.new_context(viewport={"width": 1024, "height": 800}, color_scheme="light", reduced_motion="reduce")
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.add_init_script(WATCH)
    yield ctx
    ctx.close()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def page(context: Any, recorder: Recorder) -> Any:
    page = context.new_page()
    recorder.attach(page)
    return page


@pytest.fixture(scope="package")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


AXE = EMBED_DIR / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="package")
def axe_source(embed_bundle: Path) -> str:
    """axe-core from the embed package's locked npm dependencies (installed by `npm ci`)."""
    if not AXE.exists():
        pytest.fail(f"axe-core is not installed: run `npm --prefix {EMBED_DIR.relative_to(ROOT)} ci`.")
    return AXE.read_text("utf-8")
