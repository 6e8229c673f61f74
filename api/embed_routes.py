"""The embed loader's static side: ``GET``/``HEAD /embed.js``, its hashed chunks and a demo page.

The bundle is built by ``npm --prefix api/embed ci && npm --prefix api/embed run build`` into
``api/static/dist/``; ``manifest.json`` there names the loader and every chunk that may be served,
each with its brotli and gzip forms, compressed at build time. A request gets the form its
``Accept-Encoding`` prefers (``Vary: Accept-Encoding``). Files are read on first use and kept in
memory. Nothing here is secret: anyone may fetch it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
from litestar import MediaType, Request, Response, Router, get, head
from litestar.datastructures import CacheControlHeader
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery

from api.errors import problem_responses
from infrastructure.settings import Settings

DIST = Path(__file__).parent / "static" / "dist"
BUILD_COMMAND = "npm --prefix api/embed ci && npm --prefix api/embed run build"

JAVASCRIPT = "text/javascript; charset=utf-8"  # RFC 9239; as documented and as sent
JAVASCRIPT_MEDIA_TYPE = "text/javascript"  # Litestar adds "; charset=utf-8" to a text/* media type itself
LOADER_CACHE = "public, max-age=300, stale-while-revalidate=86400"
CHUNK_CACHE = "public, max-age=31536000, immutable"
# The loader runs on other sites' pages, and the chunks are fetched there by module imports (CORS mode).
CROSS_SITE = {
    "Access-Control-Allow-Origin": "*",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "X-Content-Type-Options": "nosniff",
}
ENCODINGS = ("br", "gzip")  # our order of preference among equal q-values; identity comes last

_CHUNK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.js")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


@dataclass(frozen=True)
class Encoded:
    """One representation of a file: its bytes as sent, and an ETag of its own (RFC 9110 8.8.3)."""

    body: bytes
    etag: str  # quoted, as sent in the header
    encoding: str | None  # the Content-Encoding, None for identity


@dataclass(frozen=True)
class Asset:
    identity: Encoded
    encoded: dict[str, Encoded]  # by content coding: "br", "gzip"

    @classmethod
    def read(cls, dist: Path, entry: dict[str, Any]) -> Asset:
        body = (dist / _checked(entry["file"])).read_bytes()
        tag = hashlib.sha256(body).hexdigest()[:32]
        encoded = {}
        for coding, name in (entry.get("encodings") or {}).items():
            if coding in ENCODINGS:
                encoded[coding] = Encoded((dist / _checked(name)).read_bytes(), f'"{tag}-{coding}"', coding)
        return cls(Encoded(body, f'"{tag}"', None), encoded)

    @property
    def body(self) -> bytes:
        return self.identity.body

    def for_request(self, accept_encoding: str | None) -> Encoded:
        coding = preferred_encoding(accept_encoding, tuple(self.encoded))
        return self.encoded[coding] if coding else self.identity


def _checked(name: str) -> str:
    # The manifest is ours, but a name that could leave the directory is never served.
    if not isinstance(name, str) or not _CHUNK_NAME.fullmatch(name.removesuffix(".br").removesuffix(".gz")):
        raise ValueError(f"unexpected file name {name!r}")
    return name


def preferred_encoding(accept_encoding: str | None, available: tuple[str, ...]) -> str | None:
    """The content coding to send (None: identity): the highest q-value the client gives, ties to br."""
    if not accept_encoding or not available:
        return None
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        coding = coding.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        if coding == "x-gzip":
            coding = "gzip"
        if coding:
            weights[coding] = q
    wildcard = weights.get("*", 0.0)
    best, best_q = None, 0.0
    for coding in (c for c in ENCODINGS if c in available):
        q = weights.get(coding, wildcard)
        if q > best_q:
            best, best_q = coding, q
    # Identity is always acceptable; it wins only when the client says it prefers it.
    return best if best is not None and best_q >= weights.get("identity", 0.0) else None


@dataclass(frozen=True)
class Bundle:
    loader: Asset
    chunks: dict[str, Asset]


def load_bundle(dist: Path) -> Bundle | None:
    """The built bundle as the manifest describes it, or None when it has not been built (completely)."""
    try:
        manifest = json.loads((dist / "manifest.json").read_text("utf-8"))
        loader = Asset.read(dist, manifest["loader"])
        chunks = {entry["file"]: Asset.read(dist, entry) for entry in manifest["chunks"].values()}
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


def _no_such_chunk() -> Response[bytes]:
    return _problem(404, "not_found", "Not found", "No such embed file.")


def _headers_only(response: Response[bytes]) -> Response[bytes]:
    """A problem answer to HEAD: its status and headers, Content-Length included, without the body."""
    headers = {**response.headers, "Content-Type": "application/problem+json", "Content-Length": str(len(response.content))}
    return Response(b"", status_code=response.status_code, headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return any(t == "*" or t.removeprefix("W/") == etag for t in tags)


def _serve(request: Request[Any, Any, Any], asset: Asset, cache_control: str, *, body: bool = True) -> Response[Any]:
    chosen = asset.for_request(request.headers.get("accept-encoding"))
    headers = {"ETag": chosen.etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding", **CROSS_SITE}
    if _matches(request.headers.get("if-none-match"), chosen.etag):
        return Response(b"", status_code=304, headers=headers)
    if chosen.encoding:
        headers["Content-Encoding"] = chosen.encoding
    if not body:  # HEAD: what GET would send, without the body
        headers |= {"Content-Type": JAVASCRIPT, "Content-Length": str(len(chosen.body))}
        return Response(b"", headers=headers)
    return Response(chosen.body, media_type=JAVASCRIPT_MEDIA_TYPE, headers=headers)


def livekit_connect_sources(livekit_url: str | None) -> str:
    """The LiveKit host in both schemes livekit-client uses: the WebSocket and HTTP(S) for its checks."""
    if not livekit_url:
        return ""
    parts = urlsplit(livekit_url)
    secure = parts.scheme in ("wss", "https")
    host = parts.netloc
    return f" {'wss' if secure else 'ws'}://{host} {'https' if secure else 'http'}://{host}"


def demo_base_url(settings: Settings, server: tuple[str, int | None] | None) -> str:
    """Where the demo page's loader comes from: WIDGETS_PUBLIC_BASE_URL, else the address and port the request
    arrived on (the listening socket's, as the server reports it), else WIDGETS_HOST and WIDGETS_PORT. Never the
    Host header: whoever sends the request writes that."""
    if settings.public_base_url or not server:
        return settings.base_url().replace("://0.0.0.0:", "://127.0.0.1:", 1)
    host, port = server
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}" + (f":{port}" if port not in (None, 80) else "")


def demo_policy(nonce: str, livekit_url: str | None, service_url: str = "") -> str:
    """The strictest Content-Security-Policy the widget supports, as the demo page sends it."""
    service = urlsplit(service_url)
    service_origin = f" {service.scheme}://{service.netloc}" if service.scheme and service.netloc else ""
    return "; ".join([
        "default-src 'none'",
        f"script-src 'nonce-{nonce}' 'strict-dynamic'",
        f"style-src 'nonce-{nonce}'",
        f"connect-src 'self'{service_origin}{livekit_connect_sources(livekit_url)}",
        "img-src 'self' https:",
        "base-uri 'none'",
        "object-src 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ])


# The demo page's icon: a chat bubble, so that a browser asks for no /favicon.ico (a 404 on every load).
FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path fill="#2563eb" '
           b'd="M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z"/></svg>')


_DEMO = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Anyreach widget demo</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<style nonce="{nonce}">
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
<p>This page is served with the strictest Content-Security-Policy the widget supports (the README lists
the directives a site adds for it):</p>
<pre><code>{policy}</code></pre>
</main>
{snippet}
</body>
</html>
"""


def create_embed_router(dist: Path = DIST) -> Router:
    """The routes serving the bundle built into `dist`."""
    cache = BundleCache(dist)

    async def loader(request: Request[Any, Any, Any], *, body: bool) -> Response[Any]:
        bundle = await cache.aget()
        if bundle is None:
            return _not_built() if body else _headers_only(_not_built())
        return _serve(request, bundle.loader, LOADER_CACHE, body=body)

    async def chunk(request: Request[Any, Any, Any], name: str, *, body: bool) -> Response[Any]:
        bundle = await cache.aget()
        asset = bundle.chunks.get(name) if bundle is not None else None
        if asset is None:
            problem = _not_built() if bundle is None else _no_such_chunk()
            return problem if body else _headers_only(problem)
        return _serve(request, asset, CHUNK_CACHE, body=body)

    @get("/embed.js", tags=["embed"], operation_id="get_embed_loader", summary="The embed loader script",
         description="The script a site owner's pages load with `<script src=\".../embed.js\" data-widget-id=\"...\" async>`. "
                     "Static, public, nothing secret; cacheable (`ETag`, `If-None-Match` answers 304). 503 `embed_not_built` "
                     "when the bundle has not been built on this server.",
         media_type=JAVASCRIPT_MEDIA_TYPE,
         responses={
             200: ResponseSpec(str, media_type=JAVASCRIPT, description="The loader (JavaScript)", generate_examples=False),
             304: ResponseSpec(None, description="Not modified (If-None-Match names the current ETag)"),
             503: problem_responses(503)[503],
         })
    async def embed_js(request: Request[Any, Any, Any]) -> Response[bytes]:
        return await loader(request, body=True)

    @head("/embed.js", include_in_schema=False)
    async def embed_js_head(request: Request[Any, Any, Any]) -> Response[None]:
        return await loader(request, body=False)

    @get("/embed/{name:str}", include_in_schema=False)
    async def embed_chunk(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
        return await chunk(request, name, body=True)

    @head("/embed/{name:str}", include_in_schema=False)
    async def embed_chunk_head(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[None]:
        return await chunk(request, name, body=False)

    @get("/favicon.svg", include_in_schema=False, media_type="image/svg+xml", cache_control=CacheControlHeader(max_age=86400))
    async def favicon() -> bytes:
        return FAVICON

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
        services = request.app.state.services
        base = demo_base_url(services.settings, request.scope.get("server"))
        nonce = secrets.token_urlsafe(18)
        shown = f'<script src="{escape(base)}/embed.js" data-widget-id="{widget}" async></script>'
        snippet = f'<script nonce="{nonce}" src="{escape(base)}/embed.js" data-widget-id="{widget}" async></script>'
        policy = demo_policy(nonce, services.settings.livekit_url, base)
        page = _DEMO.format(widget=widget, origin=escape(base), snippet_text=escape(shown), snippet=snippet, nonce=nonce,
                            policy=escape(policy))
        return Response(
            page.encode(),
            media_type=MediaType.HTML,
            headers={
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": policy,
            },
        )

    return Router(path="/", route_handlers=[embed_js, embed_js_head, embed_chunk, embed_chunk_head, favicon, demo])


embed_router = create_embed_router()
