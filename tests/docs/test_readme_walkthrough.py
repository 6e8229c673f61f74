"""The README's walk-through, run as written (issue 31): its shell blocks, from "Walk-through with curl" through the
webhooks, in order, in one shell, against a fresh service in a temporary data folder. Only the host and port are
substituted; every command must exit 0 and every answer must be a success (curl --fail-with-body)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("## Walk-through with curl", "## Verified visitors and context", "## Outgoing webhooks")
# What the test adds around the README's commands: stop at the first failure, and count an error answer as one.
PRELUDE = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'


def walkthrough() -> str:
    """The shell blocks of the README's walk-through sections, in order."""
    text = (ROOT / "README.md").read_text()
    sections = re.split(r"(?m)^(?=## )", text)
    blocks = []
    for section in sections:
        if section.startswith(SECTIONS):
            blocks += re.findall(r"(?ms)^```sh\n(.*?)^```", section)
    assert len(blocks) >= 4, "the README's walk-through blocks were not found"
    return "\n".join(blocks)


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    script = walkthrough()
    assert "uv run widgets serve &" in script and "http://127.0.0.1:8000" in script
    script = script.replace("uv run widgets serve &", f"uv run widgets serve --port {port} &")
    script = script.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIDGETS_")}
    env["WIDGETS_DATA_DIR"] = str(tmp_path / "var")
    log = tmp_path / "walkthrough.log"
    with log.open("w") as out:  # a file, not a pipe: a server left running by a failure must not hold it open
        process = subprocess.Popen(["bash", "-c", PRELUDE + script], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        process.wait(timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the walk-through did not finish in 3 minutes:\n{log.read_text()[-4000:]}")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the server, if a failure left it running
        except ProcessLookupError:
            pass
    output = log.read_text()
    assert process.returncode == 0, f"the walk-through stopped (exit {process.returncode}):\n{output[-4000:]}"
    assert '"live": true' in output, output[-4000:]
    assert not (ROOT / "jwk.json").exists() and not (ROOT / "site-key.pem").exists() and not (ROOT / "endpoint.json").exists()
