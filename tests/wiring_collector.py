"""A pytest plugin for tests/test_wiring_matrix.py: after collection, writes what each test module runs on.

Loaded with `-p tests.wiring_collector` in a `--collect-only` run; the JSON file named by `WIDGETS_WIRING_MATRIX`
gets, per test module: whether any of its tests takes the `settings` fixture, the values its tests were collected
with of `settings` (or of a `wiring` parameter, for a test that gets `<wiring>_settings` by name), and the module's
`SKIPPED_WIRINGS` (as written, for the test to judge).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

OUTPUT = "WIDGETS_WIRING_MATRIX"


def pytest_collection_finish(session: pytest.Session) -> None:
    target = os.environ.get(OUTPUT)
    if not target:
        return
    matrix: dict[str, dict[str, Any]] = {}
    for item in session.items:
        module = item.nodeid.split("::", 1)[0]
        entry = matrix.setdefault(module, {"takes_settings": False, "settings": set(), "skipped": None})
        if entry["skipped"] is None:
            skipped = getattr(getattr(item, "module", None), "SKIPPED_WIRINGS", {})
            entry["skipped"] = skipped if isinstance(skipped, dict) else repr(skipped)
        callspec = getattr(item, "callspec", None)
        if "settings" in getattr(item, "fixturenames", ()):
            entry["takes_settings"] = True
        for name in ("settings", "wiring"):  # `wiring`: a test that takes `<wiring>_settings` by name itself
            if callspec is not None and name in callspec.params:
                value = callspec.params[name]
                entry["settings"].add(value if isinstance(value, str) else repr(value))
    with open(target, "w") as out:
        json.dump({m: {**e, "settings": sorted(e["settings"])} for m, e in sorted(matrix.items())}, out, indent=1, default=repr)
