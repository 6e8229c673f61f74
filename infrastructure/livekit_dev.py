"""A real LiveKit server and the demo agent worker on loopback: for `widgets serve --demo`, the tests and the benchmarks.

The server is `livekit-server` built by `make livekit` from the version pinned in deploy/livekit/go.mod. Its config
keeps everything on the machine: it binds 127.0.0.1, offers loopback candidates only, looks up no external address
and hands browsers no STUN server of the internet. The agent worker (deploy/agent, its own uv environment) registers
with it under the agent name that our tokens dispatch, as a production agent would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / ".cache" / "bin" / "livekit-server"
GO_MODULE = ROOT / "deploy" / "livekit"
AGENT_PROJECT = ROOT / "deploy" / "agent"
BUILD_HINT = "install Go 1.26 (https://go.dev/doc/install), then run `make livekit`"


class LiveKitUnavailableError(RuntimeError):
    """The LiveKit server binary is missing and cannot be built here (no Go)."""


def build_server(quiet: bool = True) -> Path:
    """The pinned `livekit-server`, built once into .cache/bin (about three minutes cold on two cores)."""
    if BINARY.exists():
        return BINARY
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise LiveKitUnavailableError(f"No LiveKit server: {BINARY} is missing and Go is not installed; {BUILD_HINT}.")
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0"}
    done = subprocess.run([go, "build", "-o", str(BINARY), "github.com/livekit/livekit-server/cmd/server"], cwd=GO_MODULE,
                          env=env, capture_output=quiet, text=True, check=False)
    if done.returncode != 0:
        raise LiveKitUnavailableError(f"`go build` of livekit-server failed: {(done.stderr or '').strip()[-2000:]}")
    return BINARY


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"livekit-server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"livekit-server does not listen on 127.0.0.1:{port} after {timeout}s")


@dataclass
class LocalLiveKit:
    """One livekit-server process on loopback ports of its own; `restart` keeps the ports (clients reconnect)."""

    webhook_url: str | None = None
    api_key: str = "local"
    api_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    port: int = field(default_factory=free_port)
    tcp_port: int = field(default_factory=free_port)
    udp_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    empty_timeout: int = 10
    departure_timeout: int = 5
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="widgets-livekit-")))
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "livekit.log"

    def config(self) -> str:
        webhook = (f"webhook:\n  api_key: {self.api_key}\n  urls: [\"{self.webhook_url}\"]\n" if self.webhook_url else "")
        return (
            f"port: {self.port}\n"
            "bind_addresses: [\"127.0.0.1\"]\n"
            "rtc:\n"
            f"  tcp_port: {self.tcp_port}\n"
            f"  udp_port: {self.udp_port}\n"
            "  node_ip: 127.0.0.1\n"
            "  use_external_ip: false\n"
            "  enable_loopback_candidate: true\n"
            # Browsers get no STUN server of the internet: a loopback address where nothing answers.
            "  stun_servers: [\"127.0.0.1:3478\"]\n"
            f"keys:\n  {self.api_key}: {self.api_secret}\n"
            f"room:\n  empty_timeout: {self.empty_timeout}\n  departure_timeout: {self.departure_timeout}\n"
            f"{webhook}"
            "logging:\n  level: info\n"
        )

    def start(self, timeout: float = 30.0) -> LocalLiveKit:
        binary = build_server()
        config = self.folder / "livekit.yaml"
        config.write_text(self.config())
        config.chmod(0o600)  # it holds the API secret
        with self.log.open("ab") as out:
            self._process = subprocess.Popen([str(binary), "--config", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_for_port(self.port, self._process, timeout, self.log)
        return self

    def kill(self) -> None:
        """Ends the server at once (SIGKILL), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


@dataclass
class AgentWorker:
    """The demo agent worker (deploy/agent) registered with a LiveKit server under `agent_name`."""

    livekit: LocalLiveKit
    agent_name: str
    # The worker's facts, one JSON object a line (docs/agents.md, "The test worker's log"): tests read them.
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.log_path is None:
            self.log_path = self.livekit.folder / f"agent-{self.agent_name}.jsonl"

    @property
    def output(self) -> Path:
        return self.livekit.folder / f"agent-{self.agent_name}.out"

    def start(self, timeout: float = 120.0) -> AgentWorker:
        uv = shutil.which("uv")
        if uv is None:
            raise LiveKitUnavailableError("uv is not on the PATH; run `make serve` or `make test` once")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))},
            "LIVEKIT_URL": self.livekit.url,
            "LIVEKIT_API_KEY": self.livekit.api_key,
            "LIVEKIT_API_SECRET": self.livekit.api_secret,
            "WIDGETS_LIVEKIT_AGENT_NAME": self.agent_name,
            "ANYREACH_AGENT_LOG": str(self.log_path),
        }
        with self.output.open("ab") as out:
            self._process = subprocess.Popen([uv, "run", "--project", str(AGENT_PROJECT), "--frozen", "--quiet", "python", "-m", "anyreach_agent"],
                                             cwd=AGENT_PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_registered(timeout)
        return self

    def facts(self) -> list[dict[str, Any]]:
        """What the worker wrote so far, oldest first."""
        assert self.log_path is not None
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def registrations(self) -> int:
        return sum(1 for fact in self.facts() if fact.get("event") == "registered")

    def _wait_registered(self, timeout: float) -> None:
        """Until the worker writes that it registered with the server (one more `registered` fact than before)."""
        before = self.registrations()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"the agent worker exited with {self._process.returncode}: {self.output.read_text()[-3000:]}")
            if self.registrations() > before:
                return
            time.sleep(0.1)
        raise TimeoutError(f"the agent worker did not register within {timeout}s: {self.output.read_text()[-3000:]}")

    def kill(self) -> None:
        """Ends the worker and its jobs at once (SIGKILL to its process group), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
