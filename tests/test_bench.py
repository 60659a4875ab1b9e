"""`scripts/bench --json --quick` runs and emits every key with the right shape.

Benchmarks are not timed tests: nothing here compares a figure with a target.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DISTRIBUTIONS = ("floor_ms", "tap_to_release_ms", "decision_us", "event_to_central_ms",
                 "decision_during_sync_ms", "unknown_flood_decision_ms", "secure_tap_cpu_ms")
VALUES = ("snapshot_apply_s", "outbox_drain_events_per_s", "central_ingest_events_per_s",
          "central_ingest_pg_events_per_s", "rss_mib", "startup_s")
#: measured on any machine that runs the test suite; the others need Mosquitto / PostgreSQL
#: and report null (with a note on stderr) where those are missing
ALWAYS = ("floor_ms", "tap_to_release_ms", "decision_us", "rss_mib", "startup_s",
          "unknown_flood_decision_ms", "secure_tap_cpu_ms")


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@pytest.mark.slow
def test_bench_json_quick_emits_every_key() -> None:
    proc = subprocess.run([str(ROOT / "scripts" / "bench"), "--json", "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(proc.stdout)
    assert set(data) == set(DISTRIBUTIONS) | set(VALUES), sorted(data)
    for key in DISTRIBUTIONS:
        value = data[key]
        if value is None:
            assert key not in ALWAYS, f"{key} was not measured:\n{proc.stderr[-4000:]}"
            assert f"note {key}:" in proc.stderr, f"{key} is null without a note"
            continue
        assert isinstance(value, dict), (key, value)
        assert _number(value["p50"]) and _number(value["p99"]), (key, value)
        assert value["p50"] <= value["p99"], (key, value)
        assert isinstance(value["samples"], int) and value["samples"] > 0, (key, value)
    for key in VALUES:
        value = data[key]
        if value is None:
            assert key not in ALWAYS, f"{key} was not measured:\n{proc.stderr[-4000:]}"
            assert f"note {key}:" in proc.stderr, f"{key} is null without a note"
            continue
        assert _number(value) and value >= 0, (key, value)
