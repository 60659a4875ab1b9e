"""The door benchmarks on a slow SD card: the same taps, the daemon's storage folder under the
storage shim (faultsuite/storage: LD_PRELOAD), which stalls every fsync/fdatasync of the
journal and the rule cache (one SD card) by a fixed delay.

The shim must be loaded when a process starts, so the benchmark (its in-process daemon, its
taps, and for `tap` the floor loop it starts) runs in a child process started under it:

    python -m benchmarks.slow SPEC.json OUT.json     # what `run_under_shim` starts

Every site the child builds lives under the one folder the shim tracks. The shim counts the
syncs it stalled (`read_stats`): a run in which it stalled none is an error, not a figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.common import Result, SiteFactory, Unmeasurable

CHILD_TIMEOUT_S = 1800


def run_under_shim(sites: SiteFactory, group: str, delay_ms: float, *,
                   samples: int, warmup: int) -> tuple[list[Result], dict[str, float]]:
    """`group` ("tap" or "flood") in a child process with every fsync of its sites' storage
    delayed `delay_ms`; its results and the shim's counters (syncs, delayed, delayed_ms)."""
    try:
        from faultsuite.storage import ShimError, read_stats, shim_env
    except ImportError as exc:  # the suite lives beside the benchmarks in a checkout
        raise Unmeasurable(f"the storage shim (faultsuite/storage) is not here: {exc}") from exc
    template = sites.template()
    n = sum(1 for _ in sites.root.glob(f"slow-{group}-*"))
    root = sites.root / f"slow-{group}-{delay_ms:g}ms-{n}"
    root.mkdir(parents=True)
    stats = sites.root / f"{root.name}.stats"
    spec, out = sites.root / f"{root.name}.spec.json", sites.root / f"{root.name}.out.json"
    spec.write_text(json.dumps({"group": group, "root": str(root), "template": str(template),
                                "samples": samples, "warmup": warmup}))
    try:
        env = shim_env(root, delay_ms=delay_ms, stats=stats)
    except ShimError as exc:
        raise Unmeasurable(str(exc)) from exc
    log = sites.root / f"{root.name}.log"
    with log.open("w") as err:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.slow", str(spec), str(out)],
                              env=env, stdout=err, stderr=subprocess.STDOUT,
                              timeout=CHILD_TIMEOUT_S)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"the benchmark under the shim failed ({proc.returncode}): "
                           f"{log.read_text()[-2000:]}")
    counters: dict[str, float] = {}
    for line in read_stats(stats):
        for key, value in line.items():
            counters[key] = counters.get(key, 0.0) + value
    if not counters.get("delayed"):
        raise RuntimeError(f"the shim delayed no fsync under {root}: {counters}")
    return [result_from_dict(r) for r in json.loads(out.read_text())], counters


def result_from_dict(d: dict[str, Any]) -> Result:
    """A child's `Result` as it was (its note already says its losses)."""
    r = Result(**{**d, "note": ""})
    r.note = d["note"]
    return r


def _child(spec_path: str, out_path: str) -> int:
    from benchmarks import door

    spec: dict[str, Any] = json.loads(Path(spec_path).read_text())
    sites = SiteFactory.from_template(Path(spec["root"]), Path(spec["template"]))
    kw = {"samples": spec["samples"], "warmup": spec["warmup"]}
    if spec["group"] == "tap":
        results = door.bench_tap(sites, **kw)
    elif spec["group"] == "flood":
        results = [door.bench_flood(sites, **kw)]
    else:
        raise SystemExit(f"unknown group {spec['group']!r}")
    Path(out_path).write_text(json.dumps([asdict(r) for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
