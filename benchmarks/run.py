"""`scripts/bench`: every benchmark of accessd, a table (default) or one JSON object (--json).

    scripts/bench               # full run, < 5 minutes on a 2-core machine
    scripts/bench --quick       # a smoke run (~1 minute): fewer samples, same code paths
    scripts/bench --json        # one JSON object, the keys of issue 5
    scripts/bench --only tap,decision

Progress goes to stderr; the table or the JSON object is the only thing on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Result, SiteFactory, Unmeasurable, pending

#: the keys of `--json`, in the order of the issue (and of the table)
KEYS = (
    "floor_ms", "tap_to_release_ms", "decision_us", "event_to_central_ms", "snapshot_apply_s",
    "decision_during_sync_ms", "outbox_drain_events_per_s", "central_ingest_events_per_s",
    "central_ingest_pg_events_per_s", "rss_mib", "startup_s", "unknown_flood_decision_ms",
    "secure_tap_cpu_ms", "web_page_ms", "web_page_pg_ms", "tap_to_browser_ms",
    "decision_multi_us", "tap_to_release_multi_ms",
)


#: for the table when a benchmark fails before it could describe itself
DESCRIBE = {
    "floor_ms": ("last frame byte written -> parsed, bare pyserial loop on a pty",
                 "(reference)"),
    "tap_to_release_ms": ("same frame through the real Daemon -> relay pin high, 100k "
                          "credentials", "p99 <= 2 ms and <= floor p99 + 1 ms"),
    "decision_us": ("keyed hash + RuleCache.lookup + decide(), 100k credentials",
                    "p99 <= 50 us"),
    "rss_mib": ("peak RSS (VmHWM) of `accessd run`, 100k credentials, uplink on over TLS",
                "<= 45 MiB"),
    "startup_s": ("process spawn -> READY=1 on NOTIFY_SOCKET, uplink on over TLS", "<= 1.0 s"),
    "unknown_flood_decision_ms": ("member tap while unknown cards arrive at reader speed",
                                  "p99 <= 5 ms"),
    "secure_tap_cpu_ms": ("door CPU per authenticated tap (NTAG 424 DNA, DESFire)",
                          "p99 <= 5 ms"),
    "web_page_ms": ("office web pages, 20 sites / ~2M events, SQLite", "p95 <= 300 ms"),
    "web_page_pg_ms": ("office web pages, 20 sites / ~2M events, PostgreSQL", "p95 <= 300 ms"),
    "tap_to_browser_ms": ("tap at a real door -> row shown in Chromium", "p99 <= 1000 ms"),
    "decision_multi_us": ("decision_us with 20 doors, 5,000 windows, 1,000 bookings",
                          "p99 <= 50 us"),
    "tap_to_release_multi_ms": ("tap -> its door's relay on a Pi driving 4 doors",
                                "p99 <= 2 ms"),
}


@dataclass(frozen=True)
class Plan:
    tap_samples: int
    tap_warmup: int
    decision_samples: int
    flood_samples: int
    startup_runs: int
    rss_taps: int
    network: dict[str, Any]
    web: dict[str, Any]


FULL = Plan(tap_samples=1200, tap_warmup=100, decision_samples=50_000, flood_samples=250,
            startup_runs=5, rss_taps=300,
            network={"events": 200, "outbox_events": 100_000, "ingest_doors": 50,
                     "ingest_events": 40_000, "snapshot": 100_000, "sync_runs": 2},
            web={"page_rounds": 60, "page_warmup": 5, "taps": 150, "tap_warmup": 10,
                 "sites_n": 20, "days": 365})
QUICK = Plan(tap_samples=150, tap_warmup=20, decision_samples=5_000, flood_samples=30,
             startup_runs=3, rss_taps=60,
             network={"events": 40, "outbox_events": 5_000, "ingest_doors": 10,
                      "ingest_events": 5_000, "snapshot": 100_000, "sync_runs": 1},
             web={"page_rounds": 15, "page_warmup": 3, "taps": 30, "tap_warmup": 5,
                  "sites_n": 3, "days": 60})


GROUPS = ("tap", "decision", "flood", "startup", "rss", "network", "secure", "web", "doors")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _groups(plan: Plan, sites: SiteFactory) -> list[tuple[str, tuple[str, ...],
                                                          Callable[[], list[Result]]]]:
    from benchmarks import door, network, proc, secure, web

    return [
        ("tap", ("floor_ms", "tap_to_release_ms"),
         lambda: door.bench_tap(sites, samples=plan.tap_samples, warmup=plan.tap_warmup)),
        ("decision", ("decision_us",),
         lambda: [door.bench_decision(sites, samples=plan.decision_samples,
                                      warmup=max(500, plan.decision_samples // 20))]),
        ("flood", ("unknown_flood_decision_ms",),
         lambda: [door.bench_flood(sites, samples=plan.flood_samples,
                                   warmup=max(5, plan.flood_samples // 20))]),
        ("startup", ("startup_s",), lambda: [proc.bench_startup(sites, runs=plan.startup_runs)]),
        ("rss", ("rss_mib",), lambda: [proc.bench_rss(sites, taps=plan.rss_taps)]),
        ("network", network.KEYS, lambda: network.bench_all(sites, **plan.network)),
        ("secure", ("secure_tap_cpu_ms",),
         lambda: [secure.bench_secure_tap(sites, samples=max(40, plan.tap_samples // 4),
                                          warmup=max(10, plan.tap_warmup // 4))]),
        ("web", web.KEYS, lambda: web.bench_all(sites, **plan.web)),
        ("doors", ("decision_multi_us", "tap_to_release_multi_ms"),
         lambda: [door.bench_decision_multi(sites, samples=plan.decision_samples,
                                            warmup=max(500, plan.decision_samples // 20)),
                  door.bench_tap_multi(sites, samples=max(100, plan.tap_samples // 2),
                                       warmup=max(20, plan.tap_warmup // 2))]),
    ]


def run(plan: Plan, only: set[str] | None, workdir: Path) -> tuple[list[Result], float]:
    sites = SiteFactory(workdir)
    results: dict[str, Result] = {}
    started = time.perf_counter()
    log(f"building the rule cache: {sites.n:,} credentials")
    sites.template()
    log(f"rule cache built in {sites.build_s:.1f} s")
    for name, keys, fn in _groups(plan, sites):
        if only and name not in only:
            continue
        log(f"{name} ...")
        t0 = time.perf_counter()
        try:
            for r in fn():
                results[r.key] = r
        except Unmeasurable as exc:
            for key in keys:
                what, target = DESCRIBE.get(key, ("", ""))
                results.setdefault(key, pending(key, what, target, str(exc)))
        except Exception as exc:  # one broken benchmark must not hide the others
            traceback.print_exc(file=sys.stderr)
            for key in keys:
                what, target = DESCRIBE.get(key, ("", ""))
                results.setdefault(key, Result(key, what, None, target, False,
                                               note=f"error: {type(exc).__name__}: {exc}"))
        log(f"{name} done in {time.perf_counter() - t0:.1f} s")
    ordered = [results[k] for k in KEYS if k in results]
    return ordered, time.perf_counter() - started


# -- output --------------------------------------------------------------------------------


def _measured(value: dict[str, Any] | None) -> str:
    if value is None:
        return "null"
    if "p99" in value:
        return f"p50 {value['p50']:g} / p99 {value['p99']:g} / max {value['max']:g}"
    return f"{value['value']:g}"


def _count(value: dict[str, Any] | None, key: str) -> str:
    return "-" if value is None else str(value[key])


def _met(r: Result) -> str:
    return {True: "yes", False: "NO", None: "-"}[r.met]


def table(results: list[Result], elapsed: float, quick: bool) -> str:
    rows = [("key", "what", "measured", "samples", "lost", "target", "met?")]
    rows += [(r.key, r.what, _measured(r.value), _count(r.value, "samples"),
              _count(r.value, "lost"), r.target, _met(r)) for r in results]
    width = [min(max(len(row[i]) for row in rows), 72 if i == 1 else 200)
             for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c if len(c) <= width[i] else c[:width[i] - 1] + "…" for i, c in enumerate(row)]
        lines.append(" | ".join(c.ljust(width[i]) for i, c in enumerate(cells)).rstrip())
        if n == 0:
            lines.append("-+-".join("-" * w for w in width))
    notes = [f"  {r.key}: {r.note}" for r in results if r.note]
    head = (f"accessd benchmarks ({'quick' if quick else 'full'} run, {elapsed:.0f} s) — "
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {cpu_model()} ({os.cpu_count()} cores), "
            f"Python {platform.python_version()}")
    rule = ("every key counts each attempt: `samples` attempts, `lost` of them counted at the "
            "key's timeout; a target is met only with nothing lost")
    return "\n".join([head, rule, "", *lines, "", "notes:", *notes])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def as_json(results: list[Result]) -> dict[str, Any]:
    """Exactly the keys of `KEYS`: {"p50", "p99", "max", "samples", "lost", ...} for a
    distribution, {"value", "samples", "lost", ...} for one figure, or null when not
    measured (the reason is in the table's notes, and on stderr with --json)."""
    by_key = {r.key: r for r in results}
    return {k: (by_key[k].value if k in by_key else None) for k in KEYS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    parser.add_argument("--only", help=f"comma-separated groups: {', '.join(GROUPS)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    if only and only - set(GROUPS):
        parser.error(f"unknown group(s) {', '.join(sorted(only - set(GROUPS)))}; use "
                     f"{', '.join(GROUPS)}")
    workdir = Path(tempfile.mkdtemp(prefix="accessd-bench-"))
    try:
        results, elapsed = run(QUICK if args.quick else FULL, only, workdir)
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        for r in results:
            if r.note:
                log(f"note {r.key}: {r.note}")
        print(json.dumps(as_json(results), indent=2))
    else:
        print(table(results, elapsed, args.quick))
    return exit_status(results)


ALLOW_PENDING = "ACCESSD_BENCH_ALLOW_PENDING"


def exit_status(results: list[Result]) -> int:
    """1 when a key that ran was not measured: a crash always, a missing tool (pending)
    unless ACCESSD_BENCH_ALLOW_PENDING=1 says that this machine may lack it."""
    allow = os.environ.get(ALLOW_PENDING) == "1"
    bad = [r.key for r in results if r.value is None
           and not (allow and r.note.startswith("pending:"))]
    if bad:
        log(f"not measured: {', '.join(bad)} (see the notes; {ALLOW_PENDING}=1 accepts keys "
            "pending for a missing tool)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
