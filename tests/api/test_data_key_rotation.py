"""`widgets rotate-data-key`: every data key rewrapped (and every webhook endpoint secret resealed) under the new
deployment key, after which the new key alone reads everything, verified visitors' lookups included."""

from __future__ import annotations

import base64
import dataclasses
import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from litestar import Litestar
from litestar.testing import TestClient

from api.admin_lists import verified_visitor_conversations
from api.app import create_app
from api.cli import main
from infrastructure.embedded_secrets import DATA_KEY_FILE, LEGACY_DATA_KEY, PREVIOUS_DATA_KEY_FILE, begin_key_rotation
from infrastructure.eventstore import open_event_store
from infrastructure.personal_data import DataKeyError, DeploymentKeys
from infrastructure.settings import Settings, env_name
from projections.webhook_endpoints import endpoints_for_delivery
from tests.api.conftest import Admin, _started, client_for
from tests.api.public_helpers import conversation_call, conversations_of, live_widget, started, sync
from tests.api.test_visitor_identity import begin, identity_widget, visitor_list
from tests.visitors import SiteKey


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@contextmanager
def running(settings: Settings) -> Iterator[tuple[Litestar, TestClient[Litestar]]]:
    app = create_app(settings)
    with client_for(app) as client:
        client.blocking_portal.call(_started, app)
        yield app, client


def cli(settings: Settings, *args: str) -> Any:
    env = {env_name(f.name): str(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    return CliRunner().invoke(main, list(args), env=env)


def key_fingerprints(settings: Settings) -> set[bytes]:
    store = open_event_store(settings)
    try:
        return {bytes(w[1:9]) for rows in store.recorder.iter_data_keys() for _, w in rows}
    finally:
        store.close()


def test_after_a_rotation_the_new_key_alone_reads_conversations_visitors_and_endpoint_secrets(settings: Settings) -> None:
    old, new = new_key(), new_key()
    before = dataclasses.replace(settings, data_key=old)
    key = SiteKey.generate("ES256", "k")
    with running(before) as (app, client):
        admin = Admin(client, before, "org_a", "alice")
        widget = live_widget(admin, app)
        names = {started(client, widget["id"], name=f"Rotated Person {i}")["conversation_id"]: f"Rotated Person {i}"
                 for i in range(5)}
        grant = started(client, widget["id"], name="Formful Person")
        conversation_call(client, widget["id"], grant["conversation_id"], "forms/pre",
                          {"resume_token": grant["resume_token"], "values": {"email": "rotated@mail.example"}})
        erased = started(client, widget["id"], name="Erased Person")["conversation_id"]
        assert admin.call("DELETE", f"/v1/widgets/{widget['id']}/conversations/{erased}/personal-data").status_code == 204
        verified_widget = identity_widget(admin, app, "optional", key)
        ada = key.token(verified_widget["id"], sub="ada", name="Ada Rotated")
        verified = begin(client, verified_widget["id"], visitor_token=ada)["conversation_id"]
        endpoint = admin.call("POST", "/v1/webhook-endpoints",
                              json={"url": "https://hooks.example.com/rotation", "events": ["*"]}).json()
        sync(app)

    # The new key without the previous one reads nothing yet: the test below is not vacuous.
    store = open_event_store(before)
    wrapped = store.recorder.select_data_keys([uuid.UUID(verified)])[uuid.UUID(verified)]
    store.close()
    with pytest.raises(DataKeyError):
        DeploymentKeys.from_settings(dataclasses.replace(settings, data_key=new)).unwrap(uuid.UUID(verified), wrapped)

    rotating = dataclasses.replace(settings, data_key=new, data_key_previous=old)
    result = cli(rotating, "rotate-data-key", "--batch", "3")
    assert result.exit_code == 0, result.output
    live = len(names) + 2 + 1  # the conversations, the verified one, the visitor lookup keys; not the erased one
    assert f"Rewrapped {live} data key(s) under WIDGETS_DATA_KEY (0 already were) and resealed 1 webhook" in result.output
    again = cli(rotating, "rotate-data-key")
    assert again.exit_code == 0, again.output
    assert f"Rewrapped 0 data key(s) under WIDGETS_DATA_KEY ({live} already were) and resealed 0" in again.output
    assert key_fingerprints(rotating) == {DeploymentKeys.from_settings(rotating).fingerprint}

    after = dataclasses.replace(settings, data_key=new)  # the old key is gone from the configuration
    with running(after) as (app, client):
        admin = Admin(client, after, "org_a", "alice")
        rows = conversations_of(admin, app, widget["id"])
        for cid, name in names.items():
            assert rows[cid]["visitor"]["name"] == name
        assert rows[grant["conversation_id"]]["forms"][0]["values"] == {"email": "rotated@mail.example"}
        assert rows[erased]["visitor"] == {} and rows[erased]["erased_at"] is not None
        assert conversations_of(admin, app, verified_widget["id"])[verified]["visitor"]["name"] == "Ada Rotated"
        listed = visitor_list(client, verified_widget["id"], ada)
        assert listed.status_code == 200 and [i["conversation_id"] for i in listed.json()["items"]] == [verified]
        assert verified_visitor_conversations(app.state.services, "org_a", "ada") == [uuid.UUID(verified)]
        delivery = endpoints_for_delivery(app.state.services.db, DeploymentKeys.from_settings(after), "org_a",
                                          "conversation.started", None)
        assert [base64.b64encode(s).decode() for s in delivery[0].signing_secrets] == [endpoint["secret"].removeprefix("whsec_")]
        # New conversations of the same visitor are found beside the old one.
        later = begin(client, verified_widget["id"], visitor_token=ada)["conversation_id"]
        sync(app)
        assert {i["conversation_id"] for i in visitor_list(client, verified_widget["id"], ada).json()["items"]} == {verified, later}
        assert admin.call("DELETE", "/v1/visitors/ada/personal-data").status_code == 204
        sync(app)
        assert verified_visitor_conversations(app.state.services, "org_a", "ada") == []


def test_a_rotation_stopped_halfway_is_finished_by_running_it_again_and_reads_meanwhile(settings: Settings) -> None:
    old, new = new_key(), new_key()
    before = dataclasses.replace(settings, data_key=old)
    with running(before) as (app, client):
        admin = Admin(client, before, "org_a", "alice")
        widget = live_widget(admin, app)
        names = {started(client, widget["id"], name=f"Halfway {i}")["conversation_id"]: f"Halfway {i}" for i in range(6)}
        sync(app)

    rotating = dataclasses.replace(settings, data_key=new, data_key_previous=old)
    store = open_event_store(rotating)
    calls = []

    def stop_after_two(done: int, current: int) -> None:
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the operator's ^C, or the pod killed, between two batches

    with pytest.raises(KeyboardInterrupt):
        store.personal_data.rotate(batch=2, on_batch=stop_after_two)
    store.close()
    assert len(key_fingerprints(rotating)) == 2  # half under each key

    with running(rotating) as (app, client):  # the servers read both while the rotation is under way
        rows = conversations_of(Admin(client, rotating, "org_a", "alice"), app, widget["id"])
        assert {cid: rows[cid]["visitor"]["name"] for cid in names} == names
    result = cli(rotating, "rotate-data-key", "--batch", "2")
    assert result.exit_code == 0, result.output
    assert "Rewrapped 3 data key(s) under WIDGETS_DATA_KEY (4 already were)" in result.output

    after = dataclasses.replace(settings, data_key=new)
    with running(after) as (app, client):
        rows = conversations_of(Admin(client, after, "org_a", "alice"), app, widget["id"])
        assert {cid: rows[cid]["visitor"]["name"] for cid in names} == names


def test_a_rotation_without_the_previous_key_stops_naming_the_setting_and_writes_nothing(settings: Settings) -> None:
    old = new_key()
    before = dataclasses.replace(settings, data_key=old)
    with running(before) as (app, client):
        widget = live_widget(Admin(client, before, "org_a", "alice"), app)
        started(client, widget["id"], name="Unrotated")
        sync(app)
    wrong = dataclasses.replace(settings, data_key=new_key())
    result = cli(wrong, "rotate-data-key")
    assert result.exit_code == 1
    assert "WIDGETS_DATA_KEY_PREVIOUS" in result.output and old not in result.output
    assert key_fingerprints(before) == {DeploymentKeys.from_settings(before).fingerprint}


# ---- an embedded data folder's own key ----


def test_a_folder_an_older_version_made_stays_readable_and_rotates_to_a_key_of_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "var"
    # As versions before issue 29 ran with no WIDGETS_DATA_KEY: the published development key, and no key file.
    older = Settings(data_dir=str(folder), data_key=LEGACY_DATA_KEY, auth_secret="an-older-version-s-secret-0123456789",
                     log_format="json", log_level="warning", webhook_deliveries=False)
    with running(older) as (app, client):
        widget = live_widget(Admin(client, older, "org_a", "alice"), app)
        conversation = started(client, widget["id"], name="Legacy Person")["conversation_id"]
        sync(app)
    assert not (folder / DATA_KEY_FILE).exists()

    upgraded = dataclasses.replace(older, data_key="", auth_secret="")  # this version's first start, nothing set
    assert upgraded.data_key == LEGACY_DATA_KEY and upgraded.uses_legacy_data_key
    assert (folder / DATA_KEY_FILE).read_text().strip() == LEGACY_DATA_KEY  # recorded, so that every process reads it
    assert upgraded.auth_secret != older.auth_secret  # the admin secret, on the other hand, is new and random
    assert visitor_name(upgraded, widget["id"], conversation) == "Legacy Person"

    result = CliRunner().invoke(main, ["rotate-data-key"], env={"WIDGETS_DATA_DIR": str(folder), "WIDGETS_DATA_KEY": None,
                                                                "WIDGETS_DATA_KEY_PREVIOUS": None})
    assert result.exit_code == 0, result.output
    assert "Rewrapped 2 data key(s) under a new key" in result.output  # the conversation's and the visitor lookup keys

    rotated = dataclasses.replace(older, data_key="", auth_secret="")
    assert rotated.data_key not in (LEGACY_DATA_KEY, "") and not rotated.uses_legacy_data_key
    assert rotated.data_key_previous == "" and not (folder / PREVIOUS_DATA_KEY_FILE).exists()
    assert stat.S_IMODE((folder / DATA_KEY_FILE).stat().st_mode) == 0o600
    assert key_fingerprints(rotated) == {DeploymentKeys.from_settings(rotated).fingerprint}
    assert visitor_name(rotated, widget["id"], conversation) == "Legacy Person"


def test_a_rotation_of_the_folders_key_stopped_halfway_reads_both_and_finishes_when_run_again(tmp_path: Path) -> None:
    folder = tmp_path / "var"
    first = Settings(data_dir=str(folder), log_format="json", log_level="warning", webhook_deliveries=False)
    with running(first) as (app, client):
        widget = live_widget(Admin(client, first, "org_a", "alice"), app)
        conversation = started(client, widget["id"], name="Halfway Person")["conversation_id"]
        sync(app)

    begin_key_rotation(folder)  # as a run stopped before rewrapping anything leaves the folder
    begin_key_rotation(folder)  # and starting again does not make a third key
    meanwhile = dataclasses.replace(first, data_key="", data_key_previous="")
    assert (meanwhile.data_key_previous, meanwhile.data_key != first.data_key) == (first.data_key, True)
    assert visitor_name(meanwhile, widget["id"], conversation) == "Halfway Person"

    result = CliRunner().invoke(main, ["rotate-data-key"], env={"WIDGETS_DATA_DIR": str(folder), "WIDGETS_DATA_KEY": None,
                                                                "WIDGETS_DATA_KEY_PREVIOUS": None})
    assert result.exit_code == 0, result.output
    done = dataclasses.replace(first, data_key="", data_key_previous="")
    assert done.data_key == meanwhile.data_key and done.data_key_previous == ""
    assert visitor_name(done, widget["id"], conversation) == "Halfway Person"


def visitor_name(settings: Settings, widget_id: str, conversation_id: str) -> str:
    with running(settings) as (app, client):
        rows = conversations_of(Admin(client, settings, "org_a", "alice"), app, widget_id)
    return rows[conversation_id]["visitor"]["name"]
