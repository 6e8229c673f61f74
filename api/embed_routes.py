"""The embed loader's static side: ``GET /embed.js``, its hashed chunks and a demo page.

The bundle is built by ``npm --prefix api/embed ci && npm --prefix api/embed run build`` into
``api/static/dist/``; ``manifest.json`` there names the loader and every chunk that may be served.
Files are read on first use and kept in memory. Nothing here is secret: anyone may fetch it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import anyio.to_thread
from litestar import MediaType, Request, Response, Router, get
from litestar.params import FromPath, FromQuery

DIST = Path(__file__).parent / "static" / "dist"
BUILD_COMMAND = "npm --prefix api/embed ci && npm --prefix api/embed run build"

JAVASCRIPT = "application/javascript; charset=utf-8"
LOADER_CACHE = "public, max-age=300, stale-while-revalidate=86400"
CHUNK_CACHE = "public, max-age=31536000, immutable"
# The loader runs on other sites' pages, and the chunk is fetched there by a module import (CORS mode).
CROSS_SITE = {
    "Access-Control-Allow-Origin": "*",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "X-Content-Type-Options": "nosniff",
}

_CHUNK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.js")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


@dataclass(frozen=True)
class Asset:
    body: bytes
    etag: str  # quoted, as sent in the header

    @classmethod
    def read(cls, path: Path) -> Asset:
        body = path.read_bytes()
        return cls(body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


@dataclass(frozen=True)
class Bundle:
    loader: Asset
    chunks: dict[str, Asset]


def load_bundle(dist: Path) -> Bundle | None:
    """The built bundle as the manifest describes it, or None when it has not been built (completely)."""
    try:
        manifest = json.loads((dist / "manifest.json").read_text("utf-8"))
        loader = Asset.read(dist / manifest["loader"]["file"])
        chunks = {}
        for entry in manifest["chunks"].values():
            name = entry["file"]
            # The manifest is ours, but a name that could leave the directory is never served.
            if not _CHUNK_NAME.fullmatch(name):
                raise ValueError(f"unexpected chunk name {name!r}")
            chunks[name] = Asset.read(dist / name)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return Bundle(loader, chunks)


class BundleCache:
    """Reads the bundle on first use and keeps it; a missing build is looked for again on the next request."""

    def __init__(self, dist: Path) -> None:
        self._dist = dist
        self._lock = threading.Lock()
        self.bundle: Bundle | None = None

    def get(self) -> Bundle | None:
        with self._lock:
            if self.bundle is None:
                self.bundle = load_bundle(self._dist)
            return self.bundle

    async def aget(self) -> Bundle | None:
        return self.bundle or await anyio.to_thread.run_sync(self.get)


def _problem(status: int, code: str, title: str, detail: str, **extra: Any) -> Response[bytes]:
    headers = extra.pop("headers", {})
    body = {
        "type": f"https://docs.anyreach.dev/errors/{code.replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return Response(
        json.dumps(body).encode(), status_code=status, media_type="application/problem+json", headers=headers
    )


def _not_built() -> Response[bytes]:
    return _problem(
        503,
        "embed_not_built",
        "The embed loader has not been built",
        f"Build it with `{BUILD_COMMAND}`.",
        headers={"Retry-After": "60"},
    )


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return any(t == "*" or t.removeprefix("W/") == etag for t in tags)


def _serve(request: Request[Any, Any, Any], asset: Asset, cache_control: str) -> Response[bytes]:
    headers = {"ETag": asset.etag, "Cache-Control": cache_control, **CROSS_SITE}
    if _matches(request.headers.get("if-none-match"), asset.etag):
        return Response(b"", status_code=304, headers=headers)
    return Response(asset.body, media_type=JAVASCRIPT, headers=headers)


_DEMO = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Anyreach widget demo</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 44rem; margin: 3rem auto; padding: 0 1rem; color: #111827; }}
pre {{ background: #f3f4f6; padding: 1rem; border-radius: .5rem; overflow-x: auto; white-space: pre-wrap; }}
code {{ font: 14px/1.4 ui-monospace, monospace; }}
</style>
</head>
<body>
<main>
<h1>Anyreach widget demo</h1>
<p>This page embeds widget <code>{widget}</code>. Its chat-and-voice bubble appears in the corner
when the widget is live (published, and its pinned agent version published) and this page's origin,
<code>{origin}</code>, is one of its allowed domains. Otherwise nothing appears and the browser console
says why.</p>
<p>To put the widget on a site, paste this snippet into the site's pages:</p>
<pre><code>{snippet_text}</code></pre>
</main>
{snippet}
</body>
</html>
"""


def create_embed_router(dist: Path = DIST) -> Router:
    """The routes serving the bundle built into `dist`."""
    cache = BundleCache(dist)

    @get("/embed.js", summary="The embed loader script")
    async def embed_js(request: Request[Any, Any, Any]) -> Response[bytes]:
        bundle = await cache.aget()
        if bundle is None:
            return _not_built()
        return _serve(request, bundle.loader, LOADER_CACHE)

    @get("/embed/{name:str}", include_in_schema=False)
    async def embed_chunk(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
        bundle = await cache.aget()
        if bundle is None:
            return _not_built()
        asset = bundle.chunks.get(name)
        if asset is None:
            return _problem(404, "not_found", "Not found", "No such embed file.")
        return _serve(request, asset, CHUNK_CACHE)

    @get("/demo", include_in_schema=False)
    async def demo(request: Request[Any, Any, Any], widget: FromQuery[str | None] = None) -> Response[bytes]:
        if widget is None or not _UUID.fullmatch(widget):
            return _problem(
                400,
                "invalid_request",
                "The request is not valid",
                "Name the widget to show: /demo?widget=<widget id>.",
                errors=[{"field": "widget", "message": "must be a UUID"}],
            )
        widget = widget.lower()
        base = str(request.base_url).rstrip("/")
        origin = f"{request.url.scheme}://{request.url.netloc}"
        snippet = f'<script src="{escape(base)}/embed.js" data-widget-id="{widget}" async></script>'
        page = _DEMO.format(widget=widget, origin=escape(origin), snippet_text=escape(snippet), snippet=snippet)
        return Response(
            page.encode(),
            media_type=MediaType.HTML,
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    return Router(path="/", route_handlers=[embed_js, embed_chunk, demo])


embed_router = create_embed_router()
