"""GET /embed.js, its hashed chunks and the demo page, on an app holding only the embed router."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.embed_routes import BUILD_COMMAND, DIST, create_embed_router, embed_router

EMBED_DIR = Path(__file__).resolve().parents[2] / "api" / "embed"
WIDGET_ID = "3f2b8c1e-7d4a-4e5b-9c6d-0a1b2c3d4e5f"


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
    with TestClient(Litestar(route_handlers=[embed_router])) as c:
        yield c


@pytest.fixture(scope="module")
def chunk_name(manifest: dict) -> str:
    return manifest["chunks"]["livekit"]["file"]


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
    assert response.headers["content-type"] == "application/javascript; charset=utf-8"
    assert response.content == (DIST / "embed.js").read_bytes()


def test_embed_js_is_cached_briefly_and_revalidated_in_the_background(client: TestClient) -> None:
    response = client.get("/embed.js")

    assert response.headers["cache-control"] == "public, max-age=300, stale-while-revalidate=86400"
    assert response.headers["etag"].startswith('"') and response.headers["etag"].endswith('"')


def test_embed_js_may_be_loaded_by_any_site(client: TestClient) -> None:
    response = client.get("/embed.js", headers={"Origin": "https://shop.example.com"})

    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"


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


def test_embed_js_names_the_hashed_livekit_chunk_of_the_manifest(client: TestClient, chunk_name: str) -> None:
    assert chunk_name.encode() in client.get("/embed.js").content


def test_embed_js_stays_within_its_size_budget(manifest: dict) -> None:
    assert manifest["loader"]["gzip_bytes"] < 20 * 1024


# ---- /embed/{name} ----


def test_hashed_chunk_is_cached_for_a_year_as_immutable(client: TestClient, chunk_name: str) -> None:
    response = client.get(f"/embed/{chunk_name}")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.content == (DIST / chunk_name).read_bytes()


def test_hashed_chunk_can_be_imported_as_a_module_from_another_site(client: TestClient, chunk_name: str) -> None:
    response = client.get(f"/embed/{chunk_name}", headers={"Origin": "https://shop.example.com"})

    assert response.headers["access-control-allow-origin"] == "*"


def test_hashed_chunk_answers_304_while_the_etag_still_matches(client: TestClient, chunk_name: str) -> None:
    etag = client.get(f"/embed/{chunk_name}").headers["etag"]

    assert client.get(f"/embed/{chunk_name}", headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize("name", ["lk-0000000000000000.js", "manifest.json", "embed.js", "nope"])
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
    for name in ["manifest.json", "embed.js", manifest["chunks"]["livekit"]["file"]]:
        shutil.copy(DIST / name, tmp_path / name)
    with TestClient(Litestar(route_handlers=[create_embed_router(tmp_path)])) as c:
        first = c.get("/embed.js")
        (tmp_path / "embed.js").write_text("changed on disk")
        second = c.get("/embed.js")

    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]


def test_a_build_that_appears_later_is_picked_up(tmp_path: Path, manifest: dict) -> None:
    with TestClient(Litestar(route_handlers=[create_embed_router(tmp_path)])) as c:
        assert c.get("/embed.js").status_code == 503
        for name in ["manifest.json", "embed.js", manifest["chunks"]["livekit"]["file"]]:
            shutil.copy(DIST / name, tmp_path / name)
        assert c.get("/embed.js").status_code == 200


# ---- /demo ----


def test_demo_page_embeds_the_snippet_for_the_widget(client: TestClient) -> None:
    response = client.get("/demo", params={"widget": WIDGET_ID})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    snippet = f'<script src="http://testserver.local/embed.js" data-widget-id="{WIDGET_ID}" async></script>'
    assert snippet in response.text
    assert "&lt;script src=&quot;http://testserver.local/embed.js&quot;" in response.text
    assert "allowed domains" in response.text


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
