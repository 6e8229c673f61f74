"""The `widgets` command line: serve, project, rebuild, retention, rotate-data-key, verify, history, stats, webhooks, token."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from api.progress import Progress
from infrastructure.embedded_secrets import serving
from infrastructure.settings import Settings


@click.group()
def main() -> None:
    """Anyreach web widgets."""


def serve_metrics(settings: Settings) -> None:
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.host)


@main.command()
@click.option("--host", default=None, help="Address to bind (WIDGETS_HOST).")
@click.option("--port", type=int, default=None, help="Port to bind (WIDGETS_PORT).")
@click.option("--workers", type=int, default=None, help="Worker processes (WIDGETS_WORKERS).")
@click.option("--demo", is_flag=True, help="Create a demo agent and live widget, and print a demo page URL and token.")
def serve(host: str | None, port: int | None, workers: int | None, demo: bool) -> None:
    """Run the API (embedded default: SQLite, in-process read model and projections)."""
    for name, value in (("WIDGETS_HOST", host), ("WIDGETS_PORT", port), ("WIDGETS_WORKERS", workers)):
        if value is not None:
            os.environ[name] = str(value)
    settings = Settings.from_env()  # embedded: the data folder's own secrets, made now on a first start
    settings.refuse_public_secrets()
    from api.server import claim_port, run_server

    port_claim = claim_port(settings.host, settings.port)
    if settings.uses_legacy_data_key:
        click.echo("Warning: this data folder's key is the development key of earlier versions, which anyone can read "
                   "in their source; stop the server and run `widgets rotate-data-key` (README, \"Rotating the deployment "
                   "key\").", err=True)
    stop_livekit = None
    with contextlib.ExitStack() as held:
        if settings.embedded:
            held.enter_context(serving(settings.data_path))
        if demo:
            from api.demo import prepare_demo, start_demo_livekit

            if "WIDGETS_LIVEKIT_URL" not in os.environ:
                stop_livekit = start_demo_livekit(settings.port)
                settings = Settings.from_env()
            prepare_demo(settings)

        click.echo(f"Serving on http://{settings.host}:{settings.port} (schema at /schema)", err=True)
        try:
            run_server("api.app:create_app", host=settings.host, port=settings.port, workers=settings.workers,
                       graceful_timeout=settings.shutdown_timeout)
        finally:
            if stop_livekit is not None:
                stop_livekit()
            if port_claim is not None:
                port_claim.close()


@main.command()
def project() -> None:
    """Run the projections until stopped (production mode), woken by PostgreSQL LISTEN/NOTIFY."""
    import signal
    import threading

    from api.services import wait_for
    from infrastructure.eventstore import open_event_store
    from infrastructure.logging import configure_logging
    from infrastructure.sql import Database
    from projections.setup import build_runners

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    store = wait_for(lambda: open_event_store(settings), "event store", settings.startup_timeout)
    db = wait_for(lambda: Database(settings), "read model database", settings.startup_timeout)
    models = build_runners(settings, store, db)
    serve_metrics(settings)
    stopping = threading.Event()
    from api.retention import RetentionSweep

    RetentionSweep(store, db).start(stopping)
    dispatcher, dispatching = None, None
    if settings.webhook_deliveries:
        from api.webhook_delivery import WebhookDispatcher

        dispatcher = WebhookDispatcher.from_settings(settings, store, db)
        models.webhook_outbox_view.on_queued = dispatcher.wake
        dispatching = dispatcher.start(stopping)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    threads = []
    for runner in models.runners.values():
        thread = threading.Thread(target=runner.run_forever, name=runner.name, daemon=True)
        thread.start()
        threads.append(thread)
    click.echo(f"Projecting {', '.join(models.runners)}", err=True)
    while not stopping.wait(0.5):
        failed = [r for r in models.runners.values() if r.failure is not None]
        if failed:
            click.echo(f"Projection {failed[0].name} stopped: {failed[0].failure!r}", err=True)
            models.stop()
            raise SystemExit(1)
        if dispatching is not None and not dispatching.is_alive() and not stopping.is_set():
            click.echo("The webhook dispatcher stopped (see the log); exiting so that the process is restarted", err=True)
            models.stop()
            raise SystemExit(1)
    models.stop()
    if dispatcher is not None and dispatching is not None:
        dispatcher.wake()  # it sees `stopping` at once; attempts in flight finish (10 s at most)
        dispatching.join(timeout=15)
    db.close()
    store.close()


@main.command()
@click.option("--projection", type=click.Choice(["public_lookup", "widget_list", "conversation_list", "audit_feed", "widget_stats", "webhook_endpoints", "webhook_outbox"]), default=None, help="Only this one.")
def rebuild(projection: str | None) -> None:
    """Replay the event store into fresh read models and switch readers over."""
    from infrastructure.eventstore import open_event_store
    from infrastructure.sql import Database
    from projections.rebuild import rebuild as run_rebuild
    from projections.setup import PROJECTIONS

    settings = Settings.from_env()
    store, db = open_event_store(settings), Database(settings)
    names = (projection,) if projection else PROJECTIONS
    serve_metrics(settings)
    progress = Progress("rebuild", store.recorder.max_notification_id() or 0, metric="+".join(names))
    try:
        run_rebuild(settings, store, db, names, on_page=progress.update)
    finally:
        progress.done()
        db.close()
        store.close()
    if not settings.redis_url and "public_lookup" in names:
        click.echo("public_lookup is in-process in the embedded mode: each server rebuilds it at start.", err=True)


@main.command()
def retention() -> None:
    """Erase now every conversation past its widget's retention (the projection process does it every 30 s)."""
    from api.retention import RetentionSweep
    from infrastructure.eventstore import open_event_store
    from infrastructure.sql import Database
    from projections.positions import ModelBehindError

    settings = Settings.from_env()
    store, db = open_event_store(settings), Database(settings)
    try:
        erased = RetentionSweep(store, db).run_once()
    except ModelBehindError as behind:
        raise click.ClickException(f"The read models are behind the event store (at {behind.at} of {behind.needed}), so "
                                   "nothing was erased: is `widgets project` (or the embedded server) running?") from None
    finally:
        db.close()
        store.close()
    click.echo(f"Erased the personal data of {erased} conversation(s) past their widget's retention.")


@main.command("rotate-data-key")
@click.option("--batch", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="Keys rewrapped per transaction.")
def rotate_data_key(batch: int) -> None:
    """Rewrap every live data key, and reseal every webhook endpoint secret, under WIDGETS_DATA_KEY.

    Set WIDGETS_DATA_KEY to the new key and WIDGETS_DATA_KEY_PREVIOUS to the old one (on every process, so that
    both are read while this runs), run this, then drop WIDGETS_DATA_KEY_PREVIOUS. Idempotent: what is already
    under the new key is left alone, so a run stopped halfway is finished by running it again.

    Embedded, with neither variable set, the key is the data folder's own: with the server stopped, this makes a
    new one in the folder, rewraps everything under it and deletes the old one."""
    from infrastructure import embedded_secrets

    settings = Settings.from_env()
    if not (settings.embedded and not os.environ.get("WIDGETS_DATA_KEY") and not os.environ.get("WIDGETS_DATA_KEY_PREVIOUS")):
        rewrapped, current, resealed = _rewrap_everything(settings, batch)
        click.echo(f"Rewrapped {rewrapped} data key(s) under WIDGETS_DATA_KEY ({current} already were) and resealed "
                   f"{resealed} webhook endpoint secret(s).")
        if settings.data_key_previous:
            click.echo("Everything is under WIDGETS_DATA_KEY now: WIDGETS_DATA_KEY_PREVIOUS may be removed.", err=True)
        return
    folder = settings.data_path
    with embedded_secrets.not_serving(folder):
        embedded_secrets.begin_key_rotation(folder)
        rewrapped, current, resealed = _rewrap_everything(Settings.from_env(), batch)
        embedded_secrets.finish_key_rotation(folder)
    click.echo(f"Rewrapped {rewrapped} data key(s) under a new key in {folder / embedded_secrets.DATA_KEY_FILE} "
               f"({current} already were) and resealed {resealed} webhook endpoint secret(s); the old key is deleted.")


def _rewrap_everything(settings: Settings, batch: int) -> tuple[int, int, int]:
    from infrastructure.eventstore import open_event_store
    from infrastructure.personal_data import DataKeyError
    from infrastructure.sql import Database
    from infrastructure.visitor_tokens import lookup_keys
    from infrastructure.webhook_secrets import reseal_webhook_secrets

    store, db = open_event_store(settings), Database(settings)
    vault = store.personal_data
    try:
        # The visitor lookup keys live in the key table: made now if no server made them yet, from the keys that
        # made the stored lookup values, so that they are rewrapped with the rest.
        lookup_keys(vault, settings.data_key, settings.data_key_previous)
        import time

        last = [time.monotonic()]

        def report(done: int, current: int) -> None:
            if time.monotonic() - last[0] >= 5:
                last[0] = time.monotonic()
                click.echo(f"rotate-data-key: {done} rewrapped, {current} already under the new key", err=True)

        rewrapped, current = vault.rotate(batch, on_batch=report)
        resealed = reseal_webhook_secrets(db, vault.keys)
    except DataKeyError as error:
        raise click.ClickException(f"{error}. Nothing after it was rewrapped; fix the keys and run this again.") from None
    finally:
        db.close()
        store.close()
    return rewrapped, current, resealed


@main.command()
def verify() -> None:
    """Replay every read model into scratch space and compare it with the live one; exit 1 on any difference."""
    from infrastructure.eventstore import open_event_store
    from infrastructure.sql import Database
    from projections.verify import verify as run_verify

    settings = Settings.from_env()
    store, db = open_event_store(settings), Database(settings)
    try:
        differences, checked = run_verify(settings, store, db)
    finally:
        db.close()
        store.close()
    for difference in differences:
        click.echo(str(difference))
    click.echo(f"Checked {', '.join(checked)}: {len(differences)} difference(s).", err=True)
    if not settings.redis_url:
        click.echo("public_lookup is in-process in the embedded mode and is rebuilt by each server at start.", err=True)
    raise SystemExit(1 if differences else 0)


@main.command()
@click.argument("widget_id", type=click.UUID)
@click.option("--json", "as_json", is_flag=True, help="One JSON document, as the history endpoint returns.")
def history(widget_id: object, as_json: bool) -> None:
    """Print a widget's events, oldest first."""
    import msgspec

    from domain.records import describe
    from infrastructure.eventstore import open_event_store

    store = open_event_store(Settings.from_env())
    try:
        records = [describe(e) for e in store.events.get(widget_id)]  # type: ignore[arg-type]
    finally:
        store.close()
    if not records or records[0].type != "widget.created":
        raise click.ClickException(f"No widget {widget_id} in the event store.")
    if as_json:
        items = [{"widget_id": r.aggregate_id, "version": r.version, "type": r.type, "occurred_at": r.occurred_at,
                  "actor": r.actor, "data": r.data} for r in records]
        click.echo(msgspec.json.encode({"items": items}).decode())
        return
    from api.tables import Column, render, utc

    columns = [Column("version", ">"), Column("occurred at"), Column("type", flexible=True, least=12),
               Column("actor", flexible=True), Column("data", flexible=True, least=10)]
    rows = [[str(r.version), utc(r.occurred_at), r.type, r.actor, msgspec.json.encode(r.data).decode()] for r in records]
    for line in render(columns, rows):
        click.echo(line)


SPARKS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 24


def bar(value: int, top: int) -> str:
    """A bar of up to BAR_WIDTH eighths-resolution blocks, for a value out of `top`."""
    if top <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / top * BAR_WIDTH * 8))
    return "█" * (eighths // 8) + ("▏▎▍▌▋▊▉"[eighths % 8 - 1] if eighths % 8 else "")


def sparkline(values: list[int]) -> str:
    top = max(values, default=0)
    return "".join(" " if not v else SPARKS[min(len(SPARKS) - 1, v * len(SPARKS) // (top + 1))] for v in values) if top else ""


@main.command()
@click.argument("widget_id", type=click.UUID)
@click.option("--days", type=click.IntRange(1, 366), default=14, show_default=True, help="UTC days up to today.")
def stats(widget_id: object, days: int) -> None:
    """Print a widget's figures per UTC day (a bar of config reads per day), and where it was installed."""
    import time
    from datetime import timedelta

    from eventsourcing.application import AggregateNotFoundError

    from api.services import installation_store_for
    from api.stats import feedback_type_of, installations_of, widget_stats
    from application.agents import AgentService
    from application.commands import Caller
    from application.widgets import WidgetService
    from domain.liveness import not_live_reasons
    from domain.widget import Widget
    from infrastructure.eventstore import open_event_store
    from infrastructure.installations import day_of
    from infrastructure.sql import Database
    from projections.widget_stats import WidgetStatsView

    settings = Settings.from_env()
    store, db = open_event_store(settings), Database(settings)
    installations = installation_store_for(settings, db)
    try:
        try:
            widget = store.repository.get(widget_id)  # type: ignore[arg-type]
        except AggregateNotFoundError:
            widget = None
        if not isinstance(widget, Widget):
            raise click.ClickException(f"No widget {widget_id} in the event store.")
        state = WidgetService(store, AgentService(store)).state(Caller(widget.organization_id, "cli", frozenset({"widgets:read"})), widget)
        reasons = not_live_reasons(published=widget.published, deleted=widget.deleted, version_published=state.version_published)
        end = day_of(time.time())
        figures = widget_stats(WidgetStatsView(db), installations, str(widget_id), end - timedelta(days=days - 1), end,
                               feedback_type_of(widget.config))
        listed = installations_of(installations, str(widget_id))
    finally:
        installations.close()
        db.close()
        store.close()
    from api.tables import Column, render, terminal_width, utc

    click.echo(f"widget {widget_id}: " + ("live" if state.live else "not live: " + " ".join(r.message for r in reasons)))
    top = max((d.loads for d in figures.days), default=0)
    columns = [Column("day"), Column("loads", ">"), Column("refused", ">"), Column("convs", ">"), Column("resumes", ">"),
               Column("forms", ">"), Column("rated", ">"), Column("avg", ">"), Column("chart", flexible=True, least=5)]

    def average_of(average: float | None) -> str:
        return f"{average:.1f}" if average is not None else "-"

    rows = [[d.date, str(d.loads), str(d.refused_loads), str(d.conversations), str(d.resumes),
             str(d.forms_submitted), str(d.feedback.count), average_of(d.feedback.average), bar(d.loads, top)] for d in figures.days]
    t = figures.totals
    rows.append(["total", str(t.loads), str(t.refused_loads), str(t.conversations), str(t.resumes), str(t.forms_submitted),
                 str(t.feedback.count), average_of(t.feedback.average), ""])
    for line in render(columns, rows, gap=" "):  # nine columns: one space apart, they fit 60 characters
        click.echo(line)
    chart = sparkline([d.conversations for d in figures.days])
    click.echo(f"conversations per day: {f'|{chart}|' if chart else 'no data'}")
    ratings = ", ".join(f"{k}: {n}" for k, n in t.feedback.ratings.items())
    click.echo(f"ratings: {ratings or 'none'}")
    click.echo("")
    click.echo(f"installations ({len(listed.items)}{', truncated' if listed.truncated else ''}):")
    if listed.items:
        columns = [Column("origin is"), Column("origin", flexible=True, least=12), Column("loads", ">"),
                   Column("first seen (UTC)"), Column("last seen (UTC)")]
        rows = [["allowed" if i.allowed else "REFUSED", i.origin, str(i.loads), utc(i.first_seen_at, minutes=True),
                 utc(i.last_seen_at, minutes=True)] for i in listed.items]
        for line in render(columns, rows, terminal_width() - 2):
            click.echo("  " + line)


@main.command()
@click.option("--org", default=None, help="Only this organization's endpoints.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: {\"endpoints\": [...], \"failing_deliveries\": [...]}.")
def webhooks(org: str | None, as_json: bool) -> None:
    """List the webhook endpoints (never their secrets), oldest first, and the deliveries that are failing, newest first."""
    import msgspec

    from infrastructure.sql import Database
    from projections.webhook_endpoints import WebhookEndpointsView, listed_endpoints
    from projections.webhook_outbox import WebhookOutboxView

    settings = Settings.from_env()
    db = Database(settings)
    try:
        WebhookEndpointsView(db)  # its tables, on a database no projection has reached yet
        endpoints = listed_endpoints(db, org)
        failing = WebhookOutboxView(db).failing(org)
    finally:
        db.close()
    items = [{"id": e.id, "organization_id": e.organization_id, "url": e.url, "events": e.events, "description": e.description,
              "disabled": e.disabled, "disabled_reason": e.disabled_reason, "created_at": e.created_at,
              "updated_at": e.updated_at, "version": e.version} for e in endpoints]
    if as_json:
        deliveries = [{"endpoint_id": endpoint_id, **msgspec.structs.asdict(d)} for endpoint_id, d in failing]
        click.echo(msgspec.json.encode({"endpoints": items, "failing_deliveries": deliveries}).decode())
        return
    click.echo(f"endpoints ({len(items)}):")
    for e in endpoints:
        state = f"disabled ({e.disabled_reason})" if e.disabled else "enabled"
        click.echo(f"  {e.id}  {e.organization_id:<16} {state:<26} {e.url}  events: {', '.join(e.events)}")
    click.echo("")
    click.echo(f"failing deliveries ({len(failing)}{', the newest 100' if len(failing) == 100 else ''}):")
    for endpoint_id, d in failing:
        got = d.last_response_status if d.last_response_status is not None else d.last_error
        when = f"next attempt {d.next_attempt_at.isoformat(timespec='seconds')}" if d.next_attempt_at else "no attempt left"
        click.echo(f"  {endpoint_id}  {d.message_id}  {d.event_type:<34} {d.status:<8} {d.attempts} attempts, last: {got}  {when}")


@main.command()
@click.option("--org", required=True, help="Organization id (the org_id claim).")
@click.option("--sub", default="dev", show_default=True, help="Actor recorded on every event.")
@click.option("--scope", default="widgets:write widgets:read audit:read", show_default=True, help="Space-separated scopes.")
@click.option("--ttl", type=click.IntRange(min=1), default=3600, show_default=True,
              help="Lifetime in seconds, at most WIDGETS_AUTH_MAX_TTL.")
def token(org: str, sub: str, scope: str, ttl: int) -> None:
    """Print an admin token signed with WIDGETS_AUTH_SECRET (embedded: the data folder's own secret)."""
    from infrastructure.auth import TokenAuthority

    settings = Settings.from_env()
    settings.require("auth_secret")
    if ttl > settings.auth_max_ttl:
        raise click.BadParameter(f"{ttl} seconds is longer than WIDGETS_AUTH_MAX_TTL ({settings.auth_max_ttl}), the "
                                 "longest lifetime the service accepts.", param_hint="--ttl")
    click.echo(TokenAuthority(settings.auth_secret, settings.auth_max_ttl).mint(org, sub, scope.split(), ttl))


if __name__ == "__main__":
    sys.exit(main())
