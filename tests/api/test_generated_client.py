"""A typed client generated from our document drives the README's walk-through against `widgets serve`.

openapi-python-client (a dev dependency) generates the client from the
document the live server serves, into a temporary folder that is never
committed. Generation must print no warning (a warning means part of the
document was skipped: an operation, a response or a content type) and must
produce `get_public_widget_config` with its `PublicConfig` answer. The client
then does what the README does with curl, on a real granian server on loopback,
on both wirings: agent, version, publish, widget (idempotent create), publish
with If-Match, feedback turned on by a merge patch, read-your-writes wait, the public config read from an allowed
origin (and refused from another), a conversation started, given feedback and
ended, history, installations and stats. Every answer is parsed by the
generated models, so a field the document leaves out or types wrongly fails here.
"""

from __future__ import annotations

import datetime
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from infrastructure.settings import Settings
from tests.conftest import admin_headers
from tests.live_server import Served, served

PACKAGE = "anyreach_client"
ALLOWED_ORIGIN = "http://localhost:3000"


def generate(document: bytes, folder: Path) -> str:
    """Generate the client package into `folder`; returns what the generator printed."""
    (folder / "openapi.json").write_bytes(document)
    command = [str(Path(sys.executable).parent / "openapi-python-client"), "generate", "--path", "openapi.json",
               "--meta", "none", "--output-path", PACKAGE]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[Served]:
    with served(settings, tmp_path / "serve.log") as running:
        yield running


@pytest.fixture
def client_package(server: Served, tmp_path: Path) -> Iterator[ModuleType]:
    folder = tmp_path / "generated"
    folder.mkdir()
    output = generate(httpx.get(f"{server.url}/schema/openapi.json").content, folder)
    assert "warning" not in output.lower(), f"the generator skipped part of the document:\n{output}"
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_generation_keeps_every_operation_and_the_public_config_answer(client_package: ModuleType, server: Served) -> None:
    document = httpx.get(f"{server.url}/schema/openapi.json").json()
    for item in document["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and "operationId" in operation:
                tag = operation["tags"][0].replace("-", "_")
                generated = module(f"api.{tag}.{operation['operationId']}")
                assert callable(generated.sync_detailed), operation["operationId"]
    public_config = module("api.public.get_public_widget_config")
    models = module("models")
    response = httpx.Response(200, json={"id": "w", "config": {"v1": {}}, "channel": "webrtc"})
    parsed = public_config._parse_response(client=client_package.Client(base_url=server.url), response=response)
    assert isinstance(parsed, models.PublicConfig)


def test_the_readme_walk_through_with_the_generated_client(client_package: ModuleType, server: Served, settings: Settings) -> None:
    models = module("models")
    api = _Api()
    token = admin_headers(settings, "org_acme", "user_42")["Authorization"].removeprefix("Bearer ")
    admin = client_package.AuthenticatedClient(base_url=server.url, token=token, raise_on_unexpected_status=True)
    page = client_package.Client(base_url=server.url, headers={"Origin": ALLOWED_ORIGIN}, raise_on_unexpected_status=True)
    stranger = client_package.Client(base_url=server.url, headers={"Origin": "https://evil.example.net"},
                                     raise_on_unexpected_status=True)

    agent = api.ok(201, module("api.agents.create_agent").sync_detailed(client=admin, body=models.AgentCreate(name="Support")))
    assert isinstance(agent, models.AgentOut) and agent.name == "Support"
    version = api.ok(201, module("api.agents.create_agent_version").sync_detailed(agent.id, client=admin, body=None))
    assert isinstance(version, models.VersionOut) and version.number == 1 and not version.published
    published = api.ok(200, module("api.agents.publish_agent_version").sync_detailed(agent.id, version.id, client=admin))
    assert published.published

    body = models.WidgetCreate(
        agent_id=agent.id, agent_version_id=version.id, domains=["example.com", "*.shop.example.org", "localhost:3000"],
        config=models.WidgetConfig.from_dict({"v1": {"branding": {"display_name": "Acme help"}}}),
    )
    create = module("api.widgets.create_widget")
    created = create.sync_detailed(client=admin, body=body, idempotency_key="first-widget")
    widget = api.ok(201, created)
    assert isinstance(widget, models.WidgetOut) and widget.version == 1 and not widget.live
    assert created.headers["etag"] == '"1"'
    again = api.ok(201, create.sync_detailed(client=admin, body=body, idempotency_key="first-widget"))
    assert again.id == widget.id, "a retry with the same Idempotency-Key creates nothing"
    assert widget.domains == ["example.com", "*.shop.example.org", "localhost:3000"]

    publish = module("api.widgets.publish_widget")
    stale = publish.sync_detailed(widget.id, client=admin, if_match='"7"')
    problem = api.ok(412, stale)
    assert isinstance(problem, models.Problem) and problem.code == "precondition_failed"
    response = publish.sync_detailed(widget.id, client=admin, if_match='"1"')
    live = api.ok(200, response)
    assert (live.live, live.version) == (True, 2)

    # Feedback, off by default, turned on by a merge patch naming the version just answered.
    patch = models.WidgetConfigPatch.from_dict({"v1": {"feedback": {"enabled": True, "type": "thumbs"}}})
    response = module("api.widgets.patch_widget_config").sync_detailed(widget.id, client=admin, body=patch,
                                                                       if_match=response.headers["etag"])
    patched = api.ok(200, response)
    assert patched.version == 3 and patched.config.v1.feedback.enabled
    assert patched.config.v1.branding.display_name == "Acme help"

    wait = module("api.operations.wait_for_read_models")
    api.ok(200, wait.sync_detailed(client=admin, position=int(response.headers["x-event-position"])))
    ahead = api.ok(400, wait.sync_detailed(client=admin, position=int(response.headers["x-event-position"]) + 10**9))
    assert ahead.code == "position_ahead"

    read = module("api.public.get_public_widget_config")
    config_response = read.sync_detailed(str(widget.id), client=page)
    config = api.ok(200, config_response)
    assert isinstance(config, models.PublicConfig) and config.id == str(widget.id)
    assert config.config.v1.branding.display_name == "Acme help"
    assert config_response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    refused = api.ok(403, read.sync_detailed(str(widget.id), client=stranger))
    assert isinstance(refused, models.Problem) and refused.status == 403
    # Readable by any page (so the loader can say why), never granted to the stranger's origin.
    assert read.sync_detailed(str(widget.id), client=stranger).headers["access-control-allow-origin"] == "*"

    loader = module("api.embed.get_embed_loader").sync_detailed(client=page)
    assert loader.status_code == 200 and loader.headers["content-type"].startswith("text/javascript")

    grant = api.ok(201, module("api.public.start_conversation").sync_detailed(
        str(widget.id), client=page, body=models.ConversationStart(visitor=models.Visitor(name="Ada", locale="en-GB"))))
    assert isinstance(grant, models.GrantOut) and grant.livekit.token and grant.resume_token
    api.ok(202, module("api.public.give_conversation_feedback").sync_detailed(
        str(widget.id), grant.conversation_id, client=page,
        body=models.FeedbackSubmission(resume_token=grant.resume_token, rating=1, comment="Quick and kind")))
    api.ok(202, module("api.public.end_conversation").sync_detailed(
        str(widget.id), grant.conversation_id, client=page, body=models.Resume(resume_token=grant.resume_token)))

    history = api.ok(200, module("api.widgets.get_widget_history").sync_detailed(widget.id, client=admin))
    assert [event.version for event in history.items] == [1, 2, 3]
    assert [event.type_ for event in history.items][:2] == ["widget.created", "widget.published"]
    installations = api.ok(200, module("api.widgets.list_widget_installations").sync_detailed(widget.id, client=admin))
    assert isinstance(installations, models.InstallationList)
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    stats = api.ok(200, module("api.widgets.get_widget_stats").sync_detailed(widget.id, client=admin, from_=today, to=today))
    assert isinstance(stats, models.WidgetStats) and [day.date for day in stats.days] == [today]
    listed = api.ok(200, module("api.widgets.list_widgets").sync_detailed(client=admin))
    assert [w.id for w in listed.items] == [widget.id]


class _Api:
    """Checks a generated `Response`: the status, and that the generated models parsed its body."""

    @staticmethod
    def ok(status: int, response: Any) -> Any:
        assert response.status_code == status, f"{response.status_code}: {response.content[:2000]!r}"
        assert response.parsed is not None, f"the generated client could not parse {response.content[:2000]!r}"
        return response.parsed
