"""`benchmarks/collector_cpu.py` runs and stores every event of every form it reports.

No figure is compared with anything (benchmarks are not timed tests): what is checked is that
the micro-benchmark feeds the real collector, that every event it times was stored (it
raises otherwise), and that a batch really costs fewer messages and signature checks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.collector_cpu import main  # noqa: E402


def test_the_micro_benchmark_stores_every_form_and_reports_cpu_per_event(capsys):
    assert main(["--doors", "4", "--events", "400", "--batch", "5", "--per-message", "25",
                 "--repeat", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    by_form = {r["form"]: r for r in out["results"]}
    assert set(by_form) == {"v2", "single", "batch"}
    for r in by_form.values():
        assert r["events"] == 400 and r["timed_events"] > 0
        assert r["collector_cpu_us_per_event"] > 0 and len(r["runs_us_per_event"]) == 1
    assert by_form["single"]["messages"] == by_form["v2"]["messages"] == 400
    assert by_form["batch"]["messages"] == 16  # 100 events a door, 25 a message
    assert out["verify_alone_us"] > 0
