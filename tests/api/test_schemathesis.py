"""schemathesis, as anyone would run it against our document: every check but positive-data acceptance, stateful phase included.

`widgets serve` (granian) runs on a loopback port on either wiring, and the
schemathesis CLI runs its four phases (examples, coverage, fuzzing, stateful)
against `/schema/openapi.json` with an admin token and an allowed `Origin`.
Every check is on except `positive_data_acceptance`: a schema-valid request is
rightly refused when its opaque cursor was never issued, its Idempotency-Key was
used for another body, its If-Match names another version or its position is
beyond the store's head. Zero failures are allowed.

Bounded for CI: few examples per operation, deterministic generation (the same
inputs on every run), one worker. `WIDGETS_SCHEMATHESIS_EXAMPLES` raises the count
for a longer local run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infrastructure.settings import Settings
from tests.conftest import admin_headers
from tests.live_server import served

EXAMPLES = int(os.environ.get("WIDGETS_SCHEMATHESIS_EXAMPLES", "5"))
STATEFUL_EXAMPLES = 4 * EXAMPLES
CONFIG = f"""\
[generation]
deterministic = true
database = "none"

[phases.stateful]
max-steps = 12

[phases.stateful.generation]
max-examples = {STATEFUL_EXAMPLES}
"""


def schemathesis(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "schemathesis"), *args]
    env = {**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "NO_COLOR": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_schemathesis_finds_no_failure_with_every_check(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    with served(settings, tmp_path / "serve.log") as server:
        result = schemathesis(
            "--config-file", str(tmp_path / "schemathesis.toml"),
            "run", f"{server.url}/schema/openapi.json",
            "--checks", "all", "--exclude-checks", "positive_data_acceptance",
            "--phases", "examples,coverage,fuzzing,stateful",
            "--max-examples", str(EXAMPLES),
            "--workers", "1",
            "--header", f"Authorization: {admin_headers(settings, 'org_a', 'schemathesis')['Authorization']}",
            "--header", "Origin: https://example.com",
            "--report", "junit", "--report-dir", str(tmp_path / "report"),
            cwd=tmp_path,
        )
        log = server.output()
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis failed:\n{output[-20000:]}\n\nserver log:\n{log[-3000:]}"
    summary = output[output.rfind("SUMMARY"):]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}\b", summary), f"the {phase} phase did not pass:\n{summary}"
    assert re.search(r"Tested: +\d+", summary), summary
    assert " failed" not in summary.split("Test cases:")[-1], summary
    stateful = re.search(r"Stateful \(in [^)]*\)\s+Scenarios: +(\d+)\s+API Links: +(\d+) covered", output)
    assert stateful and int(stateful.group(1)) > 0 and int(stateful.group(2)) >= 10, output[-6000:]
    print(output[output.find("Stateful ("):output.find("WARNINGS")], summary)


pytestmark = pytest.mark.timeout(600)
