"""A tiny web server standing in for a customer's site: it serves the pages a test registers.

Each instance listens on its own loopback port; the origin a browser sees is chosen by the
host name the page is opened with (`127.0.0.1` or `localhost`), so two instances give two
distinct origins without any DNS set-up.
"""

from __future__ import annotations

import threading
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/site.css"{nonce}>
{head}
</head>
<body>
<main><h1>{title}</h1><p>A customer's page. The widget's bubble belongs in the corner.</p></main>
{snippet}
</body>
</html>
"""


# The site's own styles come from a file, so that a page with `style-src 'self'` breaks none of its own.
SITE_CSS = b"body { font: 16px/1.5 Georgia, serif; margin: 2rem; color: #222; }\n"


def snippet(api_base: str, widget_id: str, nonce: str | None = None) -> str:
    """The snippet a site owner pastes, exactly as documented (with the page's nonce when it uses one)."""
    attr = f' nonce="{escape(nonce)}"' if nonce else ""
    return f'<script{attr} src="{escape(api_base)}/embed.js" data-widget-id="{escape(widget_id)}" async></script>'


def page_html(
    api_base: str, widget_id: str, *, title: str = "Customer site", head: str = "", nonce: str | None = None, copies: int = 1
) -> str:
    """A customer page with the snippet pasted `copies` times at the end of its body."""
    return PAGE.format(
        title=escape(title), head=head, nonce=f' nonce="{escape(nonce)}"' if nonce else "",
        snippet="\n".join([snippet(api_base, widget_id, nonce)] * copies),
    )


class HostSite:
    """Serves registered pages on http://<hostname>:<port>; everything else is a 404."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._pages: dict[str, tuple[bytes, dict[str, str]]] = {}
        self._lock = threading.Lock()
        pages, lock = self._pages, self._lock

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/favicon.ico":  # keeps the console free of a 404 no test cares about
                    self.send_response(204)
                    self.end_headers()
                    return
                with lock:
                    found = pages.get(path)
                if path == "/site.css":
                    found = (SITE_CSS, {"Content-Type": "text/css; charset=utf-8"})
                if found is None:
                    self.send_error(404)
                    return
                body, headers = found
                self.send_response(200)
                headers = {"Content-Type": "text/html; charset=utf-8", **headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.origin = f"http://{hostname}:{self.port}"
        # What an allowed-domains entry for this site looks like.
        self.domain = f"{hostname}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"host-{self.domain}", daemon=True)

    def start(self) -> HostSite:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve(self, path: str, html: str, headers: dict[str, str] | None = None) -> str:
        """Registers a page at `path`, sent with `headers` (a policy, say), and answers its URL."""
        with self._lock:
            self._pages[path] = (html.encode(), dict(headers or {}))
        return self.origin + path
