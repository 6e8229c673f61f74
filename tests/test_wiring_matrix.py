"""Every integration suite on every wiring: embedded, production and managed, unless it says why not.

The suites: every module of tests/api/ and tests/integration/, and every other test module one of whose tests takes
the `settings` fixture. pytest collects them in a process of its own (`--collect-only` with the plugin
tests/wiring_collector.py), so that what is checked is what pytest runs: the wirings a suite runs on are the
values its tests' `settings` take (its `wirings` marker, else the default of tests/conftest.py: the three), and
those of a parameter named `wiring` (a test that takes `request.getfixturevalue(f"{wiring}_settings")` itself).

The reason convention: a suite that does not run on one of the three wirings says why in a module-level constant
beside its `pytestmark`, one entry per wiring it leaves out, each a sentence:

    SKIPPED_WIRINGS = {"managed": "why this suite cannot run there"}

A suite none of whose tests takes `settings` (it builds its own stores, or needs none) runs on none of the three by
this count, and names each. The test fails for a wiring left out without a reason, for a reason given for a wiring
the suite does run on (a stale one), and for a name that is not a wiring. It prints the matrix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ALL_WIRINGS, WIRINGS

ROOT = Path(__file__).resolve().parents[1]
ALWAYS = ("tests/api/", "tests/integration/")

pytestmark = pytest.mark.timeout(300)


def collected() -> dict[str, dict[str, Any]]:
    """Per test module: whether its tests take `settings`, the values they take, and its SKIPPED_WIRINGS."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "matrix.json"
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "tests.wiring_collector", "tests"],
            cwd=ROOT, env={**os.environ, "WIDGETS_WIRING_MATRIX": str(target)}, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0 and target.exists(), f"collection failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return dict(json.loads(target.read_text()))


def suites(matrix: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {module: entry for module, entry in matrix.items()
            if module.startswith(ALWAYS) and Path(module).name.startswith("test_") or entry["takes_settings"]}


def problems_of(module: str, entry: dict[str, Any]) -> list[str]:
    runs_on = {w for w in entry["settings"] if w in ALL_WIRINGS}
    skipped = entry["skipped"]
    if not isinstance(skipped, dict):
        return [f"{module}: SKIPPED_WIRINGS must be a dict of wiring to reason, not {skipped}"]
    found = []
    for wiring in WIRINGS:
        reason = skipped.get(wiring)
        if wiring not in runs_on and not (isinstance(reason, str) and reason.strip()):
            found.append(f"{module}: does not run on {wiring} and SKIPPED_WIRINGS gives no reason")
        if wiring in runs_on and reason is not None:
            found.append(f"{module}: runs on {wiring}, yet SKIPPED_WIRINGS gives a reason not to (stale)")
    found += [f"{module}: SKIPPED_WIRINGS names {name!r}, which is not one of {', '.join(WIRINGS)}"
              for name in skipped if name not in WIRINGS]
    return found


def test_every_integration_suite_runs_on_every_wiring_or_says_why_not() -> None:
    matrix = suites(collected())
    assert "tests/api/test_admin_widgets.py" in matrix and "tests/integration/test_projections.py" in matrix  # it looked

    problems = [p for module, entry in matrix.items() for p in problems_of(module, entry)]

    width = max(len(m) for m in matrix)
    print(f"\n{'suite':{width}}  " + "  ".join(f"{w:10}" for w in WIRINGS))
    for module, entry in matrix.items():
        runs_on, skipped = set(entry["settings"]), entry["skipped"] if isinstance(entry["skipped"], dict) else {}
        print(f"{module:{width}}  " + "  ".join(f"{'yes' if w in runs_on else 'no':10}" for w in WIRINGS))
        for wiring in WIRINGS:
            if wiring not in runs_on:
                print(f"    not {wiring}: {skipped.get(wiring, 'NO REASON')}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("entry", "expected"), [
    ({"settings": list(WIRINGS), "skipped": {}}, []),
    ({"settings": ["embedded", "production"], "skipped": {"managed": "a reason"}}, []),
    ({"settings": ["embedded", "production"], "skipped": {}}, ["does not run on managed"]),
    ({"settings": ["embedded", "production"], "skipped": {"managed": " "}}, ["does not run on managed"]),
    ({"settings": list(WIRINGS), "skipped": {"managed": "old"}}, ["runs on managed, yet"]),
    ({"settings": [], "skipped": {"embedded": "a", "production": "b", "managed": "c", "clustr": "d"}}, ["names 'clustr'"]),
    ({"settings": ["{'host': '0.0.0.0'}"], "skipped": {}}, ["on embedded", "on production", "on managed"]),
    ({"settings": list(WIRINGS), "skipped": "'no'"}, ["must be a dict"]),
])
def test_a_suite_that_skips_a_wiring_without_a_reason_is_named(entry: dict[str, Any], expected: list[str]) -> None:
    found = problems_of("tests/api/test_x.py", entry)
    assert len(found) == len(expected) and all(e in f for e, f in zip(expected, found, strict=True)), found
