"""HEAD wherever GET is, and an `Allow` that lists exactly what a resource supports.

Litestar answers HEAD with 405 unless a route declares it, and the `OPTIONS`
handler it adds to a path is built from the first handler registered there, so
`OPTIONS /v1/widgets` said `Allow: OPTIONS, POST` though `GET` works too. This
front, in front of Litestar's router, serves HEAD (where no route declares it
itself) as the GET it stands for with the body left out (headers, `Content-Length` included, unchanged, as RFC 9110
asks), and rewrites `Allow` on every `OPTIONS` and 405 answer from the routes'
own methods.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.exceptions import MethodNotAllowedException
from litestar.routes import HTTPRoute
from litestar.utils import normalize_path

ASGIApp = Any


def allowed_methods(app: Litestar) -> dict[str, bytes]:
    """Each route's path template -> its `Allow` value (HEAD wherever GET is; OPTIONS always)."""
    found: dict[str, bytes] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            methods = set(route.methods) | {"OPTIONS"}
            if "GET" in methods:
                methods.add("HEAD")
            found[route.path_format] = ", ".join(sorted(methods)).encode()
    return found


def _with_head(allow: bytes) -> bytes:
    methods = {m.strip().upper() for m in allow.decode("latin-1").split(",") if m.strip()} | {"OPTIONS"}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods)).encode()


class MethodsFront:
    def __init__(self, app: Litestar, handler: ASGIApp) -> None:
        self.app, self.handler = app, handler
        self._allow: dict[str, bytes] | None = None

    def allow_for(self, template: str | None) -> bytes | None:
        if self._allow is None:
            self._allow = allowed_methods(self.app)
        return self._allow.get(template or "")

    def declares_head(self, path: str) -> bool:
        """Whether a route answers HEAD itself (the embed assets do); routing is cached per path by Litestar."""
        try:
            self.app.asgi_router.handle_routing(path=normalize_path(path), method="HEAD")
        except MethodNotAllowedException:
            return False
        except Exception:  # no such path: the GET it stands for says 404
            return False
        return True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] == "GET":  # the hot path pays nothing (a GET's 405 keeps Litestar's Allow)
            await self.handler(scope, receive, send)
            return
        head = scope["method"] == "HEAD" and not self.declares_head(scope["path"])
        options = scope["method"] == "OPTIONS"
        if head:
            scope["method"] = "GET"

        async def send_fixed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 405 or (options and status < 300):
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                    allow = self.allow_for(scope.get("path_template"))
                    if allow is None:
                        given = next((v for k, v in message.get("headers", []) if k.lower() == b"allow"), None)
                        allow = _with_head(given) if given is not None else None
                    if allow is not None:
                        headers.append((b"allow", allow))
                    message = {**message, "headers": headers}
            elif head and message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the body of a HEAD answer is never sent; only its end
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.handler(scope, receive, send_fixed)
