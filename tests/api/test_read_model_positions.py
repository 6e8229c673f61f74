"""Reading one read model to act on another's event (projections/positions.py): an act that reads another model first
sees it at least at the position it needs, waiting a moment, or is put off; it never acts on an older state.

The webhook dispatcher's case (endpoints at the delivery's event) is in test_webhook_deliveries.py. Here: the
retention sweep and the erasure of a verified visitor's conversations, which need the conversation list (and the
widget list) at the log's head, on every wiring; and the helper itself. A model is held behind by stopping its
runner, and brought up to date by a runner of the test's own.
"""

from __future__ import annotations

import dataclasses
import time
from uuid import UUID

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.retention import RetentionSweep
from infrastructure.settings import Settings
from projections.positions import ModelBehindError, reached
from projections.runner import ProjectionRunner
from projections.setup import SQL_PROJECTIONS
from tests.api.conftest import Admin, assert_problem
from tests.api.public_helpers import conversation_call, live_widget, started, sync


class At:
    """A read model's position, moved on by the test."""

    def __init__(self, position: int) -> None:
        self.at = position

    def position(self) -> int:
        return self.at


def test_reached_answers_the_lowest_position_of_the_models_and_waits_for_it_no_longer_than_told() -> None:
    ahead, behind = At(9), At(4)
    assert reached([ahead, behind], 4) == 4 and reached(ahead, 4) == 9
    started_at = time.monotonic()
    assert reached([ahead, behind], 7, wait=0.1) == 4  # still behind after the wait: the caller puts its act off
    assert 0.1 <= time.monotonic() - started_at < 1.0

    class Catching(At):
        def position(self) -> int:
            self.at += 1
            return self.at

    assert reached(Catching(0), 5, wait=5.0, poll=0.001) == 5  # answered as soon as it is there


def hold(app: Litestar, name: str) -> None:
    """The read model `name` stays where it is until `catch_up`."""
    sync(app)
    app.state.services.read_models.runners[name].stop()


def catch_up(app: Litestar, name: str) -> None:
    services = app.state.services
    view_class, projection_class = SQL_PROJECTIONS[name]
    ProjectionRunner(name, services.store, view_class(services.db, create=False), projection_factory=projection_class).catch_up()


def erased(app: Litestar, conversation_id: str) -> bool:
    return bool(app.state.services.store.repository.get(UUID(conversation_id)).erased)


def kept_after_all(org_a: Admin, app: Litestar, client: TestClient[Litestar]) -> str:
    """A conversation ended under a widget that erased as soon as one ends, whose owner has since said to keep
    everything: a change the widget list has not applied."""
    widget = live_widget(org_a, app)
    assert org_a.call("PUT", f"/v1/widgets/{widget['id']}/retention", json={"days": 0}).status_code == 200
    grant = started(client, widget["id"], name="Philippa")
    assert conversation_call(client, widget["id"], grant["conversation_id"], "end",
                             {"resume_token": grant["resume_token"]}).status_code == 202
    hold(app, "widget_list")
    assert org_a.call("PUT", f"/v1/widgets/{widget['id']}/retention", json={"days": None}).status_code == 200
    return str(grant["conversation_id"])


def test_a_retention_sweep_is_put_off_while_a_model_it_reads_is_behind_and_erases_nothing_it_should_not(
    org_a: Admin, app: Litestar, client: TestClient[Litestar]
) -> None:
    conversation_id = kept_after_all(org_a, app, client)
    sweep = RetentionSweep(app.state.services.store, app.state.services.db, wait=0.2)

    with pytest.raises(ModelBehindError):  # the widget list still says 0 days: a sweep reading it would erase
        sweep.run_once()
    assert not erased(app, conversation_id)

    catch_up(app, "widget_list")
    assert sweep.run_once() == 0  # kept until erased, as the owner said
    assert not erased(app, conversation_id)


def test_widgets_retention_says_the_read_models_are_behind_and_erases_nothing(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import api.retention
    from api.cli import main
    from infrastructure.settings import env_name

    conversation_id = kept_after_all(org_a, app, client)
    monkeypatch.setattr(api.retention, "WAIT", 0.2)
    env = {env_name(f.name): str(getattr(settings, f.name)) for f in dataclasses.fields(settings)}  # this wiring

    result = CliRunner().invoke(main, ["retention"], env=env)

    assert result.exit_code == 1 and "read models are behind" in result.output, result.output
    assert not erased(app, conversation_id)


def test_an_erasure_by_visitor_is_refused_with_503_while_the_conversation_list_is_behind(
    org_a: Admin, app: Litestar, client: TestClient[Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    import api.personal_data

    monkeypatch.setattr(api.personal_data, "LIST_WAIT", 0.2)
    widget = live_widget(org_a, app)
    hold(app, "conversation_list")
    started(client, widget["id"], name="Quentin")  # a conversation the list does not show yet
    client.event_hooks = {"request": [], "response": []}  # this 503 is the answer expected

    response = org_a.call("DELETE", "/v1/visitors/quentin/personal-data")

    assert_problem(response, 503, "read_model_behind")
    assert response.headers["Retry-After"] == "1"
    catch_up(app, "conversation_list")
    assert org_a.call("DELETE", "/v1/visitors/quentin/personal-data").status_code == 204


@pytest.mark.parametrize("wiring", ["production", "managed"])
def test_the_wait_of_an_api_process_whose_projections_run_elsewhere_answers_once_they_have_reached_the_position(
    wiring: str, request: pytest.FixtureRequest
) -> None:
    """The projections in one process (as `widgets project`), the API in another that reads their positions from
    the stores: `GET /v1/read-models/wait` through `reached`. (Embedded runs its projections in the server.)"""
    from dataclasses import replace

    from api.app import create_app
    from tests.api.conftest import client_for

    settings: Settings = request.getfixturevalue(f"{wiring}_settings")
    projecting, serving = create_app(settings), create_app(replace(settings, projections="external"))
    with client_for(projecting) as writer, client_for(serving) as reader:
        admin = Admin(writer, settings, "org_a", "alice")
        created = admin.call("POST", "/v1/agents", json={"name": "Far away"})
        position = int(created.headers["X-Event-Position"])
        waited = reader.get("/v1/read-models/wait", params={"position": position, "timeout": 10}, headers=admin.headers)
        assert waited.status_code == 200, waited.text
        assert not serving.state.services.read_models.runners  # it read the positions, it ran nothing
        projecting.state.services.read_models.runners["widget_list"].stop()  # one model stays behind
        later = int(admin.call("POST", "/v1/agents", json={"name": "Later"}).headers["X-Event-Position"])
        reader.event_hooks = {"request": [], "response": []}  # this 504 is the answer expected
        behind = reader.get("/v1/read-models/wait", params={"position": later, "timeout": 0.3}, headers=admin.headers)
        assert_problem(behind, 504, "read_model_behind")
