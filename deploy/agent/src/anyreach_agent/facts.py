"""The optional JSON-lines log of what the agent saw (`ANYREACH_AGENT_LOG`), for tests.

One JSON object a line, appended and flushed at once, from any job thread. It carries ids, room
names, counts and, for `text` facts, what the visitor typed: it is meant for a test's own temp
file. Never tokens or secrets.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from typing import Any


class Facts:
    def __init__(self, path: str | None) -> None:
        self.path = path or None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> Facts:
        return cls(os.environ.get("ANYREACH_AGENT_LOG"))

    def write(self, fact: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps({**fact, "ts": round(time.time(), 3)}, ensure_ascii=False, separators=(",", ":"))
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

    @staticmethod
    def usage() -> dict[str, float]:
        """The worker process's CPU time so far and its peak resident memory (all jobs together)."""
        r = resource.getrusage(resource.RUSAGE_SELF)
        return {"cpu_seconds": round(r.ru_utime + r.ru_stime, 3), "max_rss_mb": round(r.ru_maxrss / 1024, 1)}
