"""What the benchmark scripts share: pinning to a core, a process group's CPU time, the load, and cleanup on SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from tests.servers import free_port

__all__ = ["WrkRun", "free_port", "group_cpu_seconds", "load_average", "parse_wrk", "pinned", "run_main"]


def pinned(core: int, command: list[str]) -> list[str]:
    """`command` run on one core (`taskset`), where the machine has more than one."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *command]
    return command


def group_cpu_seconds(pgid: int) -> float | None:
    """User + system CPU seconds of every live process in process group `pgid` (Linux /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    ticks, total = os.sysconf("SC_CLK_TCK"), 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            after_name = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(after_name[2]) == pgid:  # state ppid pgrp ... utime(11) stime(12)
            total += int(after_name[11]) + int(after_name[12])
    return total / ticks


class WrkRun(NamedTuple):
    requests_per_second: float
    p99_ms: float
    requests: int
    errors: int  # socket errors: connect, read, write, timeout
    non_2xx: int


def parse_wrk(output: str) -> WrkRun:
    """The figures of one `wrk --latency` run."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    requests = re.search(r"(\d+) requests in", output)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if not rps or not p99 or not requests:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return WrkRun(float(rps.group(1)), float(p99.group(1)) * scale, int(requests.group(1)), errors,
                  int(non_2xx.group(1)) if non_2xx else 0)


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that the `finally` blocks clean up (SIGKILL cannot be caught)


def run_main(main: Callable[[], Any]) -> None:
    """Run a benchmark's `main` as a script: a SIGTERM still drops its schema, keys and folders."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    main()
