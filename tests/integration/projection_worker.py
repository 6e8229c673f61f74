"""A projection process for the crash tests: the public lookup (Redis) and the admin list (PostgreSQL),
each followed by `ProjectionRunner.run_forever()` in its own thread, as `widgets project` runs them.

Run as `python -m tests.integration.projection_worker` with WIDGETS_DATABASE_URL,
WIDGETS_DATABASE_SCHEMA, WIDGETS_REDIS_URL, WIDGETS_REDIS_PREFIX and PAGE_SIZE in the
environment. Prints `ready` once both runners are built; exits 1 if one fails. The
test kills it with SIGKILL at random moments: nothing here cleans up on purpose.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import redis

from infrastructure.eventstore import open_event_store
from infrastructure.settings import Settings
from infrastructure.sql import Database
from projections.public_views import RedisPublicView, current_generation
from projections.runner import ProjectionRunner
from projections.widget_list import WidgetListView


def main() -> int:
    settings = Settings.from_env()
    page_size = int(os.environ.get("PAGE_SIZE", "500"))
    store = open_event_store(settings)
    db = Database(settings)
    client = redis.Redis.from_url(settings.redis_url)

    def public_view() -> RedisPublicView:
        return RedisPublicView(client, settings.redis_prefix, current_generation(client, settings.redis_prefix))

    runners = [
        ProjectionRunner("public_lookup", store, public_view(), page_size=page_size, reopen=public_view),
        ProjectionRunner("widget_list", store, WidgetListView(db, create=False), page_size=page_size),
    ]
    for runner in runners:
        threading.Thread(target=runner.run_forever, name=runner.name, daemon=True).start()
    print("ready", flush=True)
    while True:
        for runner in runners:
            if runner.failure is not None:
                print(f"failed: {runner.name}: {runner.failure!r}", flush=True)
                return 1
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
