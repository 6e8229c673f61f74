"""Progress of long operations: a bar with counts and rate on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time

from infrastructure.metrics import REBUILD_PROGRESS


class Progress:
    def __init__(self, label: str, total: int, stream=sys.stderr, every: float = 0.2, metric: str | None = None) -> None:  # type: ignore[no-untyped-def]
        self.label, self.total, self.stream, self.every = label, max(total, 0), stream, every
        self.metric = metric
        self.started = self._last = time.monotonic()
        self.position = self.count = 0
        self.tty = stream.isatty()

    def update(self, position: int, count: int) -> None:
        self.position, self.count = position, count
        if self.metric:
            REBUILD_PROGRESS.labels(self.metric).set(position)
        now = time.monotonic()
        if now - self._last >= (self.every if self.tty else 5.0):
            self._last = now
            self._show(final=False)

    def done(self) -> None:
        self._show(final=True)

    def _show(self, final: bool) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.count / elapsed
        fraction = min(1.0, self.position / self.total) if self.total else 1.0
        if self.tty:
            bar = "#" * int(fraction * 30)
            self.stream.write(f"\r{self.label} [{bar:<30}] {self.position}/{self.total} events, {rate:,.0f}/s")
            if final:
                self.stream.write("\n")
        else:
            self.stream.write(f"{self.label}: {self.position}/{self.total} positions, {self.count} events, {rate:,.0f}/s\n")
        self.stream.flush()
