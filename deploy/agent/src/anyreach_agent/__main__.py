"""Run the worker: `uv run --project deploy/agent --frozen python -m anyreach_agent` (docs/agents.md)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys

from livekit.agents import AgentServer, JobContext, JobExecutorType

from .agent import entry
from .facts import Facts

DEFAULT_AGENT_NAME = "anyreach-agent"
REQUIRED = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


def job_load(server: AgentServer) -> float:
    """The load this worker reports: 0.01 a running job (at most 0.5), not the machine's CPU.

    livekit-server sends a job only to workers whose reported load is under its `agents.target_load`
    (0.7 by default), and livekit-agents' default load is the whole machine's CPU use: on a busy
    2-core test machine that refused dispatches ("no servers available"). Counting jobs still lets
    the server prefer the least busy of several workers.
    """
    return min(0.01 * len(server.active_jobs), 0.5)


def build_server(agent_name: str, facts: Facts) -> AgentServer:
    # Jobs run as threads of this one process, with no idle processes kept warm; an infinite load
    # threshold because outside dev mode the default (0.7) makes a busy 2-core machine refuse jobs.
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD,
        load_threshold=math.inf,
        num_idle_processes=0,
        host="127.0.0.1",  # the worker's own health endpoint (`GET /`, `GET /worker`), on a free port
        port=0,
        load_fnc=job_load,
    )

    @server.rtc_session(agent_name=agent_name)
    async def anyreach_agent(ctx: JobContext) -> None:
        await entry(ctx, facts)

    def registered(worker_id: str, _server_info: object) -> None:
        facts.write({"event": "registered", "agent_name": agent_name, "worker_id": worker_id})

    server.on("worker_registered", registered)
    return server


async def serve(server: AgentServer) -> None:
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def stop() -> None:
        if not stopping:  # jobs are asked to shut down (their rooms are left), then the worker closes
            stopping.append(loop.create_task(server.aclose()))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    await server.run(devmode=True)
    if stopping:
        await stopping[0]


def main() -> None:
    level = os.environ.get("ANYREACH_AGENT_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        sys.exit(f"anyreach-agent: set {', '.join(missing)}")
    agent_name = os.environ.get("WIDGETS_LIVEKIT_AGENT_NAME") or DEFAULT_AGENT_NAME
    logging.getLogger("anyreach_agent").info("registering as agent %r at %s", agent_name, os.environ["LIVEKIT_URL"])
    asyncio.run(serve(build_server(agent_name, Facts.from_env())))


if __name__ == "__main__":
    main()
