"""The `widgets` command line: serve, project, rebuild, history, token."""

from __future__ import annotations

import os
import sys

import click

from infrastructure.settings import Settings


@click.group()
def main() -> None:
    """Anyreach web widgets."""


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
    settings = Settings.from_env()
    if demo:
        from api.demo import prepare_demo

        prepare_demo(settings)
    import uvicorn

    click.echo(f"Serving on http://{settings.host}:{settings.port} (schema at /schema)", err=True)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=20,
    )


@main.command()
@click.option("--org", required=True, help="Organization id (the org_id claim).")
@click.option("--sub", default="dev", show_default=True, help="Actor recorded on every event.")
@click.option("--scope", default="widgets:write widgets:read audit:read", show_default=True, help="Space-separated scopes.")
@click.option("--ttl", type=int, default=3600, show_default=True, help="Lifetime in seconds.")
def token(org: str, sub: str, scope: str, ttl: int) -> None:
    """Print an admin token signed with WIDGETS_AUTH_SECRET (for development)."""
    from infrastructure.auth import TokenAuthority

    click.echo(TokenAuthority(Settings.from_env().auth_secret).mint(org, sub, scope.split(), ttl))


if __name__ == "__main__":
    sys.exit(main())
