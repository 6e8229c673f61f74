"""The embedded mode's own admin-token secret and deployment key: random, made on first start in the data folder,
readable by the owner only, and read from there by every later process (the server's workers, `widgets token`).

Two processes starting at once agree: each writes a candidate to a file of its own and links it into place, which
succeeds for one of them; both then read what is there. Versions before issue 29 kept no key file and wrapped data
keys with a development key published in their source: a data folder one of them made (its key table holds rows)
keeps that key, recorded here on its first start, until `widgets rotate-data-key` replaces it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

AUTH_SECRET_FILE = "auth-secret"
DATA_KEY_FILE = "data-key"
PREVIOUS_DATA_KEY_FILE = "data-key.previous"  # only while `widgets rotate-data-key` rewraps an embedded install
LOCK_FILE = ".serving"

# What versions before issue 29 used when WIDGETS_AUTH_SECRET / WIDGETS_DATA_KEY were unset. Both are public: the
# auth secret is refused wherever it is configured, the data key is kept only for a data folder those versions made.
LEGACY_AUTH_SECRET = "dev-only-insecure-auth-secret-change-me"
LEGACY_DATA_KEY = "ZGV2LW9ubHktaW5zZWN1cmUtZGF0YS1rZXktMzJCeSE="

# Where an older version's data folder kept something wrapped by the deployment key (infrastructure/eventstore.py,
# infrastructure/data_keys.py; infrastructure/sql.py, infrastructure/webhook_secrets.py).
_WRAPPED_BY_THE_DATA_KEY = (("events.sqlite3", "widgets_data_keys"), ("read_models.sqlite3", "webhook_endpoint_secrets"))


def new_auth_secret() -> str:
    return secrets.token_urlsafe(48)


def new_data_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def kept_auth_secret(folder: Path) -> str:
    return _kept(folder, AUTH_SECRET_FILE, new_auth_secret, "WIDGETS_AUTH_SECRET")


def kept_data_key(folder: Path) -> str:
    """The folder's deployment key; on first start, a new one, or the legacy one for data an older version wrapped."""
    key = _kept(folder, DATA_KEY_FILE, lambda: LEGACY_DATA_KEY if made_by_an_older_version(folder) else new_data_key(),
                "WIDGETS_DATA_KEY")
    _check_data_key(folder / DATA_KEY_FILE, key)
    return key


def kept_previous_data_key(folder: Path) -> str:
    """The key an unfinished rotation of the folder's own key is moving away from; empty when none is under way."""
    path = folder / PREVIOUS_DATA_KEY_FILE
    if not path.exists():
        return ""
    key = _read(path)
    _check_data_key(path, key)
    return key


def made_by_an_older_version(folder: Path) -> bool:
    """Whether the folder holds something wrapped by the deployment key while no key file exists: an older version
    made it, with LEGACY_DATA_KEY."""
    for name, table in _WRAPPED_BY_THE_DATA_KEY:
        path = folder / name
        if not path.exists():
            continue
        try:
            with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
                if conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
                    return True
        except sqlite3.Error:  # no such table (a folder from before it existed), or not a database
            continue
    return False


def begin_key_rotation(folder: Path) -> None:
    """Put a new key in the folder's key file and keep the old one beside it, so that both are read while
    everything is rewrapped. Idempotent: a rotation already begun is continued, not begun again."""
    current, previous = folder / DATA_KEY_FILE, folder / PREVIOUS_DATA_KEY_FILE
    if not previous.exists():
        _write_private(previous, _read(current))
    if _read(previous) == _read(current):
        candidate = _candidate(folder, DATA_KEY_FILE, new_data_key())
        os.replace(candidate, current)


def finish_key_rotation(folder: Path) -> None:
    """Everything is under the new key: the old one goes."""
    (folder / PREVIOUS_DATA_KEY_FILE).unlink(missing_ok=True)


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[None]:
    """Held by `widgets serve` while it runs, so that a rotation of the folder's key waits for no server."""
    with _locked(folder, fcntl.LOCK_SH):
        yield


@contextlib.contextmanager
def not_serving(folder: Path) -> Iterator[None]:
    """Held by `widgets rotate-data-key` on an embedded install: refuses while a server runs on the folder, whose
    workers hold the old key and would go on wrapping with it."""
    try:
        with _locked(folder, fcntl.LOCK_EX | fcntl.LOCK_NB):
            yield
    except BlockingIOError:
        raise SystemExit(f"A `widgets serve` is running on {folder}: stop it, rotate, then start it again.") from None


@contextlib.contextmanager
def _locked(folder: Path, operation: int) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)


def _kept(folder: Path, name: str, make: Callable[[], str], variable: str) -> str:
    path = folder / name
    if not path.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_private(path, make())
        except FileExistsError:
            pass  # another process made it first: its value is the one
        except OSError as error:
            raise SystemExit(f"Cannot keep the embedded mode's {name} in {folder} ({error.strerror}): make the folder "
                             f"writable, or set {variable}.") from None
    return _read(path)


def _write_private(path: Path, text: str) -> None:
    """Create `path`, owner-only, holding `text`, whole or not at all; FileExistsError if it exists."""
    candidate = _candidate(path.parent, path.name, text)
    try:
        os.link(candidate, path)
    finally:
        candidate.unlink(missing_ok=True)


def _candidate(folder: Path, name: str, text: str) -> Path:
    candidate = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
        out.flush()
        os.fsync(out.fileno())
    return candidate


def _read(path: Path) -> str:
    for _ in range(50):  # a file is linked into place whole; this only waits out a copy made by hand
        text = path.read_text().strip()
        if text:
            return text
        time.sleep(0.02)
    raise SystemExit(f"{path} is empty: put back what it held (a backup of the data folder has it).")


def _check_data_key(path: Path, key: str) -> None:
    try:
        valid = len(base64.b64decode(key, validate=True)) == 32
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise SystemExit(f"{path} must hold the base64 of 32 bytes, as it was made.")
