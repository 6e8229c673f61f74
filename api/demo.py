"""`widgets serve --demo`: a demo agent and a live widget allowed on the server's own origin."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import click

from application.agents import AgentService
from application.commands import Caller
from application.widgets import WidgetService
from infrastructure.auth import TokenAuthority
from infrastructure.eventstore import open_event_store
from infrastructure.settings import Settings

DEMO_ORG = "org_demo"
DEMO_CONFIG = {
    "v1": {
        "branding": {"display_name": "Anyreach demo"},
        "text": {"welcome_message": "Hi! This is a demo widget. Type, or press the microphone to talk."},
        "quick_actions": [
            {"label": "What can you do?", "message": "What can you do?"},
            {"label": "Talk to a human", "message": "I'd like to talk to a human."},
        ],
        "feedback": {"enabled": True, "type": "thumbs"},
    }
}


def prepare_demo(settings: Settings) -> str:
    """Create (once; reruns reuse them) a demo agent, version and live widget; print how to see it."""
    store = open_event_store(settings)
    try:
        caller = Caller(DEMO_ORG, "demo", frozenset({"widgets:write", "widgets:read", "audit:read"}))
        agents = AgentService(store)
        widgets = WidgetService(store, agents)
        agent = agents.create_agent(caller, "Demo agent", idempotency_key="demo-agent")
        version = agents.create_version(caller, agent.id, "demo", idempotency_key="demo-version")
        agents.publish_version(caller, agent.id, version.id)
        origins = [f"{settings.host}:{settings.port}", f"localhost:{settings.port}", f"127.0.0.1:{settings.port}"]
        if settings.public_base_url:
            origins.append(settings.public_base_url.split("://", 1)[-1].rstrip("/"))
        domains = sorted({o for o in origins if not o.startswith("0.0.0.0")})
        state = widgets.create_widget(caller, agent.id, version.id, domains, DEMO_CONFIG, idempotency_key="demo-widget")
        widgets.change_domains(caller, state.widget.id, domains)
        widgets.publish(caller, state.widget.id)
    finally:
        store.close()
    ttl = min(86400, settings.auth_max_ttl)
    token = TokenAuthority(settings.auth_secret, settings.auth_max_ttl).mint(
        DEMO_ORG, "demo", ["widgets:write", "widgets:read", "audit:read"], ttl=ttl)
    base = settings.base_url().replace("0.0.0.0", "127.0.0.1")
    click.echo(f"Demo widget {state.widget.id} is live.", err=True)
    click.echo(f"Demo page:   {base}/demo?widget={state.widget.id}", err=True)
    click.echo(f"Admin token (org {DEMO_ORG}, {ttl // 3600} h): {token}" if ttl >= 3600 else
               f"Admin token (org {DEMO_ORG}, {ttl} s): {token}", err=True)
    return str(state.widget.id)


def start_demo_livekit(port: int) -> Callable[[], None] | None:
    """A LiveKit server and the demo agent on loopback beside the service, pointed at by WIDGETS_LIVEKIT_*
    (set here, before the server's workers read their settings); answers how to stop both, or None without Go."""
    from infrastructure.livekit_dev import AgentWorker, LiveKitUnavailableError, LocalLiveKit, build_server

    try:
        if not shutil.which("go") and not Path("/usr/local/go/bin/go").exists():
            build_server()  # raises unless the binary is already there
        click.echo("Demo: starting LiveKit (the first run builds it from the Go module proxy, about three minutes)...", err=True)
        livekit = LocalLiveKit(webhook_url=f"http://127.0.0.1:{port}/webhooks/livekit", port=_demo_livekit_port()).start()
    except LiveKitUnavailableError as e:
        click.echo(f"Demo: no conversation possible ({e}). Everything else runs.", err=True)
        return None
    agent_name = os.environ.get("WIDGETS_LIVEKIT_AGENT_NAME", "anyreach-agent")
    click.echo("Demo: starting the demo agent (the first run installs livekit-agents, about a minute)...", err=True)
    worker = AgentWorker(livekit, agent_name)
    try:
        worker.start()
    except (RuntimeError, TimeoutError, LiveKitUnavailableError) as e:
        livekit.stop()
        click.echo(f"Demo: the demo agent did not start ({str(e).splitlines()[0]}); see {worker.output}.", err=True)
        return None
    os.environ.update({"WIDGETS_LIVEKIT_URL": livekit.url, "WIDGETS_LIVEKIT_API_KEY": livekit.api_key,
                       "WIDGETS_LIVEKIT_API_SECRET": livekit.api_secret, "WIDGETS_LIVEKIT_AGENT_NAME": agent_name})
    click.echo(f"Demo: LiveKit at {livekit.url}, agent {agent_name!r} registered (logs in {livekit.folder}).", err=True)

    def stop() -> None:
        worker.stop()
        livekit.stop()

    return stop


def _demo_livekit_port() -> int:
    """LiveKit's usual 7880 when it is free, another free port otherwise."""
    from infrastructure.livekit_dev import free_port

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 7880))
            return 7880
        except OSError:
            return free_port()
