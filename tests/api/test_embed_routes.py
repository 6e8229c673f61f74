"""GET and HEAD /embed.js, its hashed chunks and the demo page, on an app holding only the embed router."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import TestClient

from api.embed_routes import (
    BUILD_COMMAND,
    DIST,
    create_embed_router,
    demo_base_url,
    demo_policy,
    embed_router,
    preferred_encoding,
)
from infrastructure.settings import Settings
from tests.conftest import PRODUCTION_SECRETS

EMBED_DIR = Path(__file__).resolve().parents[2] / "api" / "embed"
WIDGET_ID = "3f2b8c1e-7d4a-4e5b-9c6d-0a1b2c3d4e5f"
PUBLIC_URL = "https://widgets.example.com"  # WIDGETS_PUBLIC_BASE_URL, where the demo page's loader comes from
SKIPPED_WIRINGS = {  # `settings` here is the server's address (host, port, public base URL), not a wiring
    "embedded": "the embed routes serve built files and read no store",
    "production": "the embed routes serve built files and read no store",
    "managed": "the embed routes serve built files and read no store",
}


def _build_bundle() -> None:
    """Builds the bundle when it is missing; fails (never skips) when that is not possible."""
    if (DIST / "manifest.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"The embed bundle is not built and npm is not installed. Run `{BUILD_COMMAND}`.")
    steps = [["run", "build"]] if (EMBED_DIR / "node_modules").exists() else [["ci"], ["run", "build"]]
    for step in steps:
        done = subprocess.run([npm, "--prefix", str(EMBED_DIR), *step], capture_output=True, text=True, timeout=240)
        if done.returncode != 0:
            pytest.fail(f"`npm {' '.join(step)}` failed while building the embed bundle:\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="module")
def manifest() -> dict:
    _build_bundle()
    return json.loads((DIST / "manifest.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def client(manifest: dict) -> Iterator[TestClient]:
    with TestClient(embed_app(Settings(public_base_url=PUBLIC_URL, **PRODUCTION_SECRETS))) as c:
        yield c


def embed_app(settings: Settings) -> Litestar:
    """The embed router, and the settings the demo page reads (the full app's `services.settings`)."""
    return Litestar(route_handlers=[embed_router], state=State({"services": SimpleNamespace(settings=settings)}))


@pytest.fixture(scope="module")
def chunk_name(manifest: dict) -> str:
    return manifest["chunks"]["livekit"]["file"]


@pytest.fixture(scope="module")
def panel_name(manifest: dict) -> str:
    return manifest["chunks"]["panel"]["file"]


def copy_bundle(target: Path) -> None:
    for path in DIST.iterdir():
        shutil.copy(path, target / path.name)


def brotli_decompress(data: bytes) -> bytes:
    """Python has no brotli here; Node (which builds the bundle) does."""
    script = "process.stdout.write(require('zlib').brotliDecompressSync(require('fs').readFileSync(0)))"
    return subprocess.run(["node", "-e", script], input=data, capture_output=True, check=True, timeout=30).stdout


def _is_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["code"] == code
    return body


# ---- /embed.js ----


def test_embed_js_is_the_built_loader_served_as_javascript(client: TestClient) -> None:
    response = client.get("/embed.js")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.content == (DIST / "embed.js").read_bytes()


def test_embed_js_is_cached_briefly_and_revalidated_in_the_background(client: TestClient) -> None:
    response = client.get("/embed.js")

    assert response.headers["cache-control"] == "public, max-age=300, stale-while-revalidate=86400"
    assert response.headers["etag"].startswith('"') and response.headers["etag"].endswith('"')


def test_embed_js_may_be_loaded_by_any_site(client: TestClient) -> None:
    response = client.get("/embed.js", headers={"Origin": "https://shop.example.com"})

    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("form", ["{etag}", "W/{etag}", '"stale", {etag}', "*"])
def test_embed_js_answers_304_while_the_etag_still_matches(client: TestClient, form: str) -> None:
    etag = client.get("/embed.js").headers["etag"]

    response = client.get("/embed.js", headers={"If-None-Match": form.format(etag=etag)})

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert response.headers["cache-control"] == "public, max-age=300, stale-while-revalidate=86400"


def test_embed_js_answers_200_to_a_stale_etag(client: TestClient) -> None:
    response = client.get("/embed.js", headers={"If-None-Match": '"0123456789abcdef"'})

    assert response.status_code == 200
    assert response.content == (DIST / "embed.js").read_bytes()


def test_embed_js_names_the_panel_chunk_which_names_the_livekit_chunk(client: TestClient, panel_name: str, chunk_name: str) -> None:
    loader = client.get("/embed.js").content
    panel = client.get(f"/embed/{panel_name}").content

    assert panel_name.encode() in loader and chunk_name.encode() not in loader
    assert chunk_name.encode() in panel


def test_embed_js_compressed_stays_within_its_budget(manifest: dict) -> None:
    """The build fails past the budget (build.mjs); this checks the files it left behind, as served."""
    budget = manifest["budget"]
    loader = manifest["loader"]
    br = (DIST / loader["encodings"]["br"]).stat().st_size
    gz = (DIST / loader["encodings"]["gzip"]).stat().st_size

    assert (br, gz) == (loader["br_bytes"], loader["gzip_bytes"])
    assert br <= budget["br"] and gz <= budget["gzip"], (br, gz, budget)
    # What every page view pays before any interaction is at most 16,000 bytes with the config and headers.
    assert max(budget["br"], budget["gzip"]) <= 8_000


# ---- compression ----


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("gzip, deflate", "gzip"),
        ("gzip, deflate, br, zstd", "br"),
        ("br;q=0.5, gzip", "gzip"),
        ("br;q=0, gzip", "gzip"),
        ("BR", "br"),
        ("x-gzip", "gzip"),
        ("*", "br"),
        ("*;q=0, identity", None),
        ("gzip;q=0.4, identity;q=0.9", None),
        ("gzip;q=0.5", "gzip"),
        ("gzip;q=nonsense, br;q=", None),
        ("deflate, zstd", None),
    ],
)
def test_the_encoding_follows_accept_encoding_and_its_q_values(accept: str | None, chosen: str | None) -> None:
    assert preferred_encoding(accept, ("br", "gzip")) == chosen


def test_embed_js_is_served_precompressed_as_the_browser_asks(client: TestClient, manifest: dict) -> None:
    identity = (DIST / "embed.js").read_bytes()

    br = client.get("/embed.js", headers={"Accept-Encoding": "gzip, deflate, br, zstd"})
    gz = client.get("/embed.js", headers={"Accept-Encoding": "gzip, deflate"})
    plain = client.get("/embed.js", headers={"Accept-Encoding": "identity"})

    assert br.headers["content-encoding"] == "br" and gz.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert int(br.headers["content-length"]) == manifest["loader"]["br_bytes"] < len(identity)
    assert int(gz.headers["content-length"]) == manifest["loader"]["gzip_bytes"] < len(identity)
    assert plain.content == identity
    for response in (br, gz, plain):
        assert response.headers["vary"] == "Accept-Encoding"
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert len({br.headers["etag"], gz.headers["etag"], plain.headers["etag"]}) == 3, "each representation has its own ETag"


def test_the_compressed_bytes_sent_decode_to_the_loader(manifest: dict) -> None:
    """Over a raw connection (no client-side decoding): br and gzip bodies decode to embed.js itself."""
    identity = (DIST / "embed.js").read_bytes()
    with TestClient(Litestar(route_handlers=[embed_router])) as c:
        with c.stream("GET", "/embed.js", headers={"Accept-Encoding": "br"}) as response:
            br = b"".join(response.iter_raw())
        with c.stream("GET", "/embed.js", headers={"Accept-Encoding": "gzip"}) as response:
            gz = b"".join(response.iter_raw())

    assert brotli_decompress(br) == identity
    assert gzip.decompress(gz) == identity


def test_an_etag_of_another_encoding_does_not_match(client: TestClient) -> None:
    br_etag = client.get("/embed.js", headers={"Accept-Encoding": "br"}).headers["etag"]

    assert client.get("/embed.js", headers={"Accept-Encoding": "br", "If-None-Match": br_etag}).status_code == 304
    assert client.get("/embed.js", headers={"Accept-Encoding": "gzip", "If-None-Match": br_etag}).status_code == 200


def test_chunks_are_served_precompressed_too(client: TestClient, chunk_name: str, panel_name: str, manifest: dict) -> None:
    for name, entry in ((chunk_name, manifest["chunks"]["livekit"]), (panel_name, manifest["chunks"]["panel"])):
        response = client.get(f"/embed/{name}", headers={"Accept-Encoding": "br"})
        assert response.headers["content-encoding"] == "br"
        assert int(response.headers["content-length"]) == entry["br_bytes"] < entry["bytes"]
        assert response.headers["vary"] == "Accept-Encoding"


# ---- HEAD ----


@pytest.mark.parametrize("accept", ["br", "gzip", "identity"])
def test_head_embed_js_answers_what_get_would_without_the_body(client: TestClient, accept: str) -> None:
    got = client.get("/embed.js", headers={"Accept-Encoding": accept})
    headed = client.head("/embed.js", headers={"Accept-Encoding": accept})

    assert headed.status_code == 200
    assert headed.content == b""
    for name in ("content-type", "content-length", "etag", "cache-control", "vary", "cross-origin-resource-policy",
                 "x-content-type-options", "access-control-allow-origin"):
        assert headed.headers.get(name) == got.headers.get(name), name
    assert headed.headers.get("content-encoding") == got.headers.get("content-encoding")


def test_head_on_a_chunk_and_on_what_is_not_one(client: TestClient, chunk_name: str) -> None:
    headed = client.head(f"/embed/{chunk_name}", headers={"Accept-Encoding": "gzip"})
    missing = client.head("/embed/nope.js")

    assert headed.status_code == 200 and headed.content == b""
    assert headed.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headed.headers["content-encoding"] == "gzip"
    assert missing.status_code == 404 and missing.content == b""
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_head_while_etag_matches_is_304(client: TestClient) -> None:
    etag = client.get("/embed.js").headers["etag"]

    assert client.head("/embed.js", headers={"If-None-Match": etag}).status_code == 304


def test_head_on_a_missing_build_is_503_without_a_body(tmp_path: Path) -> None:
    with TestClient(Litestar(route_handlers=[create_embed_router(tmp_path)])) as c:
        response = c.head("/embed.js")

    assert response.status_code == 503 and response.content == b""
    assert response.headers["retry-after"]


# ---- /embed/{name} ----


@pytest.mark.parametrize("which", ["livekit", "panel"])
def test_hashed_chunk_is_cached_for_a_year_as_immutable(client: TestClient, manifest: dict, which: str) -> None:
    name = manifest["chunks"][which]["file"]
    response = client.get(f"/embed/{name}", headers={"Accept-Encoding": "identity"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == (DIST / name).read_bytes()
    # Content-hashed: the name changes whenever the bytes do.
    assert name.split("-")[1].removesuffix(".js") == manifest["chunks"][which]["sha256"][:16]


def test_hashed_chunk_can_be_imported_as_a_module_from_another_site(client: TestClient, chunk_name: str) -> None:
    response = client.get(f"/embed/{chunk_name}", headers={"Origin": "https://shop.example.com"})

    assert response.headers["access-control-allow-origin"] == "*"


def test_hashed_chunk_answers_304_while_the_etag_still_matches(client: TestClient, chunk_name: str) -> None:
    etag = client.get(f"/embed/{chunk_name}").headers["etag"]

    assert client.get(f"/embed/{chunk_name}", headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize("name", ["lk-0000000000000000.js", "manifest.json", "embed.js", "embed.js.br", "nope"])
def test_a_file_the_manifest_does_not_list_as_a_chunk_is_404(client: TestClient, name: str) -> None:
    _is_problem(client.get(f"/embed/{name}"), 404, "not_found")


@pytest.mark.parametrize(
    "path",
    [
        "/embed/..%2Fmanifest.json",
        "/embed/..%2F..%2Fembed_routes.py",
        "/embed/%2e%2e%2f%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/embed/..%5C..%5Cembed_routes.py",
        "/embed/%252e%252e%252fmanifest.json",
    ],
)
def test_path_traversal_out_of_the_bundle_is_refused(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 404
    assert b"embed_router" not in response.content
    assert b"[project]" not in response.content
    assert b'"chunks"' not in response.content


# ---- not built ----


def test_a_missing_build_answers_503_saying_how_to_build(tmp_path: Path) -> None:
    with TestClient(Litestar(route_handlers=[create_embed_router(tmp_path)])) as c:
        response = c.get("/embed.js")

    body = _is_problem(response, 503, "embed_not_built")
    assert "npm --prefix api/embed run build" in body["detail"]
    assert response.headers["retry-after"]


def test_the_bundle_is_read_once_and_then_served_from_memory(tmp_path: Path, manifest: dict) -> None:
    copy_bundle(tmp_path)
    with TestClient(Litestar(route_handlers=[create_embed_router(tmp_path)])) as c:
        first = c.get("/embed.js")
        (tmp_path / "embed.js").write_text("changed on disk")
        second = c.get("/embed.js")

    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]


def test_a_build_that_appears_later_is_picked_up(tmp_path: Path, manifest: dict) -> None:
    with TestClient(Litestar(route_handlers=[create_embed_router(tmp_path)])) as c:
        assert c.get("/embed.js").status_code == 503
        copy_bundle(tmp_path)
        assert c.get("/embed.js").status_code == 200


# ---- /demo ----


def test_demo_page_embeds_the_snippet_for_the_widget(client: TestClient) -> None:
    response = client.get("/demo", params={"widget": WIDGET_ID})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    nonce = response.headers["content-security-policy"].split("'nonce-", 1)[1].split("'", 1)[0]
    snippet = f'<script nonce="{nonce}" src="{PUBLIC_URL}/embed.js" data-widget-id="{WIDGET_ID}" async></script>'
    assert snippet in response.text
    # The snippet shown to copy is the plain one.
    assert f"&lt;script src=&quot;{PUBLIC_URL}/embed.js&quot;" in response.text
    assert "allowed domains" in response.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "widgets.example.com.evil.example", "127.0.0.1:1"])
def test_the_demo_page_takes_the_loader_from_the_configured_url_whatever_the_host_header_says(client: TestClient, host: str) -> None:
    response = client.get("/demo", params={"widget": WIDGET_ID}, headers={"Host": host})

    assert response.status_code == 200
    assert f'src="{PUBLIC_URL}/embed.js"' in response.text
    assert host not in response.text and host not in response.headers["content-security-policy"]


def test_without_a_public_url_the_demo_page_uses_the_address_the_request_arrived_on(manifest: dict) -> None:
    with TestClient(embed_app(Settings(**PRODUCTION_SECRETS)), base_url="http://127.0.0.1:8123") as c:
        response = c.get("/demo", params={"widget": WIDGET_ID}, headers={"Host": "evil.example"})

    assert 'src="http://127.0.0.1:8123/embed.js"' in response.text
    assert "connect-src 'self' http://127.0.0.1:8123 " in response.headers["content-security-policy"]
    assert "evil.example" not in response.text


@pytest.mark.parametrize(("settings", "server", "base"), [
    ({"public_base_url": "https://chat.example.org/"}, ("127.0.0.1", 8000), "https://chat.example.org"),
    ({}, ("::1", 8000), "http://[::1]:8000"),
    ({}, ("10.0.0.5", 80), "http://10.0.0.5"),
    ({"host": "127.0.0.1", "port": 8123}, None, "http://127.0.0.1:8123"),
    ({"host": "0.0.0.0", "port": 8000}, None, "http://127.0.0.1:8000"),  # a wildcard bind, read as this machine
])
def test_the_demo_base_is_the_public_url_else_the_listening_address_else_the_configured_one(
    settings: dict, server: tuple[str, int] | None, base: str
) -> None:
    assert demo_base_url(Settings(**settings, **PRODUCTION_SECRETS), server) == base


def test_the_demo_page_links_an_icon_that_is_served_so_no_favicon_request_fails(client: TestClient) -> None:
    page = client.get("/demo", params={"widget": WIDGET_ID}).text
    assert '<link rel="icon" href="/favicon.svg" type="image/svg+xml">' in page
    icon = client.get("/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg")


def test_demo_page_is_served_with_the_strictest_policy_we_support(client: TestClient) -> None:
    first = client.get("/demo", params={"widget": WIDGET_ID})
    second = client.get("/demo", params={"widget": WIDGET_ID})
    policy = first.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))

    nonce = directives["script-src"].split("'nonce-", 1)[1].split("'", 1)[0]
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == f"'nonce-{nonce}' 'strict-dynamic'"
    assert directives["style-src"] == f"'nonce-{nonce}'"
    assert directives["require-trusted-types-for"] == "'script'" and directives["trusted-types"] == "'none'"
    assert "unsafe" not in policy
    assert f'<style nonce="{nonce}">' in first.text
    assert first.text.count(f'nonce="{nonce}"') == 2, "only our script and the page's own style carry it"
    assert second.headers["content-security-policy"] != policy, "a fresh nonce for every answer"


@pytest.mark.parametrize(
    ("livekit", "sources"),
    [
        ("wss://lk.example.com", "'self' wss://lk.example.com https://lk.example.com"),
        ("ws://127.0.0.1:7880", "'self' ws://127.0.0.1:7880 http://127.0.0.1:7880"),
        (None, "'self'"),
    ],
)
def test_the_demo_policy_lets_the_page_reach_livekit_in_both_schemes(livekit: str | None, sources: str) -> None:
    policy = demo_policy("n0nce", livekit)

    assert f"connect-src {sources};" in policy


def test_demo_page_writes_the_widget_id_in_canonical_lower_case(client: TestClient) -> None:
    response = client.get("/demo", params={"widget": WIDGET_ID.upper()})

    assert f'data-widget-id="{WIDGET_ID}"' in response.text


@pytest.mark.parametrize(
    "widget",
    ["not-a-uuid", "", "3f2b8c1e7d4a4e5b9c6d0a1b2c3d4e5f0", '"><script>alert(1)</script>', f"{WIDGET_ID}x"],
)
def test_demo_refuses_a_widget_id_that_is_not_a_uuid(client: TestClient, widget: str) -> None:
    response = client.get("/demo", params={"widget": widget})

    body = _is_problem(response, 400, "invalid_request")
    assert body["errors"] == [{"field": "widget", "message": "must be a UUID"}]
    assert "<script>" not in response.text


def test_demo_without_a_widget_id_is_400(client: TestClient) -> None:
    _is_problem(client.get("/demo"), 400, "invalid_request")
