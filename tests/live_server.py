"""`widgets serve` in its own process, as production runs it (granian), on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import httpx

from infrastructure.settings import Settings, env_name
from tests.servers import free_port


@dataclass
class Served:
    """`widgets serve` in its own process: the production server (granian) on a free port."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def served(settings: Settings, log: Path, **overrides: str) -> Iterator[Served]:
    """Run `widgets serve` with these settings (as WIDGETS_* variables) until the block ends, then SIGTERM it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIDGETS_")}
    env.update({env_name(f.name): str(getattr(settings, f.name)) for f in fields(Settings) if getattr(settings, f.name) != f.default})
    env.update({"WIDGETS_HOST": "127.0.0.1", "WIDGETS_PORT": str(port), "WIDGETS_WORKERS": "1", **overrides})
    command = [str(Path(sys.executable).parent / "widgets"), "serve"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    server = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"widgets serve exited with {process.returncode}:\n{server.output()[-3000:]}"
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"widgets serve did not answer:\n{server.output()[-3000:]}"
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
