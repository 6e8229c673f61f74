"""Projection processes for the crash test, forked on demand so that they can be killed often.

`python -m tests.integration.projection_worker` imports everything once, then reads
`start <page size>` lines on stdin. For each it forks a child that follows the log into
the public lookup (Redis) and the admin list (PostgreSQL), each with
`ProjectionRunner.run_forever()` in its own thread, as `widgets project` runs them, and
prints `ready <pid>`. The test kills that child with SIGKILL at a random moment, then
asks for the next. A child that fails prints `failed <pid>: ...` and exits 1.

`project <log file>` forks a child that prints `ready <pid>` and runs `widgets project` itself (every
projection, the webhook dispatcher and the retention sweep, from WIDGETS_* settings), its stderr in
the log file (which says `Projecting ...` once the runners run): a restart costs a fork, not an import.

Settings come from WIDGETS_DATABASE_URL, WIDGETS_DATABASE_SCHEMA, WIDGETS_REDIS_URL
(one Redis or a cluster), WIDGETS_REDIS_PREFIX, WIDGETS_DATABASE_POOLER and WIDGETS_DATABASE_LISTEN_URL. Nothing is opened before the fork.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time

from infrastructure.eventstore import open_event_store
from infrastructure.redis_clients import sync_client
from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections.public_views import RedisPublicView, current_generation
from projections.runner import ProjectionRunner
from projections.widget_list import WidgetListView


def run(settings: Settings, page_size: int) -> int:
    store = open_event_store(settings)
    db = Database(settings)
    client = sync_client(settings.redis_url)

    def public_view() -> RedisPublicView:
        return RedisPublicView(client, settings.redis_prefix, current_generation(client, settings.redis_prefix))

    runners = [
        ProjectionRunner("public_lookup", store, public_view(), page_size=page_size, reopen=public_view,
                         listen_url=settings.database_listen_url),
        ProjectionRunner("widget_list", store, WidgetListView(db, create=False), page_size=page_size,
                         listen_url=settings.database_listen_url),
    ]
    for runner in runners:
        threading.Thread(target=runner.run_forever, name=runner.name, daemon=True).start()
    print(f"ready {os.getpid()}", flush=True)
    while True:
        for runner in runners:
            if runner.failure is not None:
                print(f"failed {os.getpid()}: {runner.name}: {runner.failure!r}", flush=True)
                return 1
        time.sleep(0.02)


def project(log_file: str) -> int:
    """`widgets project`, its stderr in `log_file`."""
    from api.cli import project as command

    print(f"ready {os.getpid()}", flush=True)
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 2)
    try:
        command.main(args=[], standalone_mode=False)
    except SystemExit as stopped:
        return int(stopped.code or 0)
    return 0


def main() -> int:
    settings = Settings.from_env()
    for module in ("api.cli", "api.retention", "api.services", "api.webhook_delivery", "projections.setup"):
        importlib.import_module(module)  # what `widgets project` imports as it starts: a fork starts warm
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed children are reaped at once
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command not in ("start", "project"):
            continue
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                code = run(settings, int(argument)) if command == "start" else project(argument)
            except BaseException as error:  # noqa: BLE001 (the test reads this line)
                print(f"failed {os.getpid()}: {error!r}", flush=True)
                code = 1
            os._exit(code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
