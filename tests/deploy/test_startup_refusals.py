"""What `widgets serve` refuses at startup, and the secrets the embedded mode makes for itself (issue 29).

The embedded mode makes its own admin secret and data key on first start, owner-only, in the data folder, and
every process on that folder reads them (`widgets token` too); production refuses to start without its own; LiveKit's
development secret is refused unless LiveKit is on this machine; a port already served is refused at once.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from infrastructure.embedded_secrets import AUTH_SECRET_FILE, DATA_KEY_FILE, LEGACY_DATA_KEY
from infrastructure.settings import Settings
from tests.conftest import PRODUCTION_SECRETS
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
WIDGETS = str(Path(sys.executable).with_name("widgets"))


def environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIDGETS_")}
    return {**env, "WIDGETS_LOG_FORMAT": "json", "WIDGETS_LOG_LEVEL": "warning", **settings}


def run(*args: str, timeout: float = 60, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WIDGETS, *args], env=environment(**settings), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def assert_refused(done: subprocess.CompletedProcess[str], *named: str) -> None:
    """Exit status 1 at once, a message naming each of `named`, and no traceback."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    for name in named:
        assert name in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr


@contextmanager
def serving(data_dir: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([WIDGETS, "serve", "--port", str(port)], env=environment(WIDGETS_DATA_DIR=str(data_dir)),
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "widgets serve did not answer within 60 s"
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


# ---- the embedded mode's own secrets ----


def test_two_fresh_data_folders_get_different_owner_only_secrets(tmp_path: Path) -> None:
    first, second = Settings(data_dir=str(tmp_path / "one")), Settings(data_dir=str(tmp_path / "two"))

    assert first.auth_secret != second.auth_secret and first.data_key != second.data_key
    assert len(first.auth_secret) >= 32
    for folder in (tmp_path / "one", tmp_path / "two"):
        for name in (AUTH_SECRET_FILE, DATA_KEY_FILE):
            assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    again = Settings(data_dir=str(tmp_path / "one"))  # a later start reads what the first made
    assert (again.auth_secret, again.data_key) == (first.auth_secret, first.data_key)


def test_processes_starting_at_once_on_a_fresh_folder_agree_on_its_secrets(tmp_path: Path) -> None:
    folder = tmp_path / "var"
    script = ("import sys; from infrastructure.settings import Settings; s = Settings(data_dir=sys.argv[1]); "
              "print(s.auth_secret, s.data_key)")
    processes = [subprocess.Popen([sys.executable, "-c", script, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
                 for _ in range(6)]
    answers = {p.communicate(timeout=60)[0].strip() for p in processes}

    assert all(p.returncode == 0 for p in processes)
    assert len(answers) == 1 and answers == {f"{(folder / AUTH_SECRET_FILE).read_text().strip()} "
                                            f"{(folder / DATA_KEY_FILE).read_text().strip()}"}
    assert sorted(p.name for p in folder.iterdir()) == [AUTH_SECRET_FILE, DATA_KEY_FILE]  # no candidate left behind


def test_widgets_token_signs_with_the_secret_the_server_uses_and_a_second_server_on_the_port_is_refused(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "var", free_port()
    with serving(data_dir, port) as first:
        minted = run("token", "--org", "org_a", WIDGETS_DATA_DIR=str(data_dir))
        assert minted.returncode == 0, minted.stderr
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/widgets", headers={"Authorization": f"Bearer {minted.stdout.strip()}"})
        assert listed.status_code == 200, listed.text

        second = run("serve", "--port", str(port), WIDGETS_DATA_DIR=str(tmp_path / "other"), timeout=30)
        assert_refused(second, f"Port {port}")
        assert first.poll() is None
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_a_port_any_other_program_listens_on_is_refused_naming_it(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        done = run("serve", "--port", str(port), WIDGETS_DATA_DIR=str(tmp_path / "var"), timeout=30)
    assert_refused(done, f"Port {port}", "already in use")


def test_a_folder_an_older_version_made_is_served_with_a_warning_and_not_rotated_under_a_running_server(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "var", free_port()
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "events.sqlite3") as db:  # a key table with a row, and no key file
        db.execute("CREATE TABLE widgets_data_keys (conversation_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL)")
        db.execute("INSERT INTO widgets_data_keys VALUES ('00', x'00')")
    with serving(data_dir, port) as server:
        assert (data_dir / DATA_KEY_FILE).read_text().strip() == LEGACY_DATA_KEY
        refused = run("rotate-data-key", WIDGETS_DATA_DIR=str(data_dir))
        assert_refused(refused, "widgets serve", "stop it")
    warning = [line for line in server.stderr.read().splitlines() if "rotate-data-key" in line] if server.stderr else []
    assert len(warning) == 1 and "development key" in warning[0], warning


# ---- production names its own ----


@pytest.mark.postgres
def test_the_postgresql_wiring_does_not_start_without_its_secrets_naming_each(tmp_path: Path, pg_server_url: str) -> None:
    wiring = {"WIDGETS_DATABASE_URL": pg_server_url, "WIDGETS_DATA_DIR": str(tmp_path / "var"), "WIDGETS_PORT": str(free_port())}

    assert_refused(run("serve", **wiring), "WIDGETS_AUTH_SECRET", "WIDGETS_DATA_KEY")
    assert_refused(run("serve", **wiring, WIDGETS_AUTH_SECRET=PRODUCTION_SECRETS["auth_secret"]), "WIDGETS_DATA_KEY")
    only_key = run("serve", **wiring, WIDGETS_DATA_KEY=PRODUCTION_SECRETS["data_key"], WIDGETS_AUTH_SECRET="")
    assert_refused(only_key, "WIDGETS_AUTH_SECRET")
    assert "WIDGETS_DATA_KEY" not in only_key.stderr
    assert not (tmp_path / "var").exists(), "production makes no secret of its own"


@pytest.mark.parametrize("url", ["wss://livekit.example.com", "ws://10.0.0.5:7880", "ws://livekit:7880"])
def test_livekits_development_secret_is_refused_unless_livekit_is_on_this_machine(tmp_path: Path, url: str) -> None:
    done = run("serve", "--port", str(free_port()), WIDGETS_DATA_DIR=str(tmp_path / "var"), WIDGETS_LIVEKIT_URL=url)
    assert_refused(done, "WIDGETS_LIVEKIT_API_SECRET", url)


@pytest.mark.parametrize("url", ["ws://localhost:7880", "ws://127.0.0.1:7880", "ws://[::1]:7880"])
def test_livekits_development_secret_is_accepted_with_livekit_on_loopback(tmp_path: Path, url: str) -> None:
    Settings(data_dir=str(tmp_path / "var"), livekit_url=url).refuse_public_secrets()


def test_another_livekit_secret_is_accepted_anywhere(tmp_path: Path) -> None:
    Settings(data_dir=str(tmp_path / "var"), livekit_url="wss://livekit.example.com",
             livekit_api_secret="a-livekit-secret-of-our-own-0123456789").refuse_public_secrets()


def test_the_old_development_admin_secret_is_refused_wherever_it_is_set(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="WIDGETS_AUTH_SECRET"):
        Settings(data_dir=str(tmp_path / "var"), auth_secret="dev-only-insecure-auth-secret-change-me").refuse_public_secrets()
