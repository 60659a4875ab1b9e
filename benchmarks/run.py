"""`scripts/bench`: every benchmark of accessd, a table (default) or one JSON object (--json).

    scripts/bench               # full run, < 5 minutes on a 2-core machine
    scripts/bench --quick       # a smoke run (~1 minute): fewer samples, same code paths
    scripts/bench --json        # one JSON object, the keys of issue 5
    scripts/bench --only tap,decision
    scripts/bench --only flood --repeat 5                    # one key, five runs, all shown
    scripts/bench --only flood --repeat 5 --fsync-delay-ms 200   # the same on a slow SD card

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
    "floor_ms", "tap_to_release_ms", "tap_to_release_slow_storage_ms", "decision_us",
    "event_to_central_ms", "snapshot_apply_s",
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
    "tap_to_release_slow_storage_ms": ("tap_to_release_ms with every fsync of the storage "
                                       "delayed 50 ms, then 200 ms (LD_PRELOAD shim)",
                                       "p99 <= floor p99 + 1 ms at each delay"),
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
    slow_tap_samples: int  # per fsync delay
    decision_samples: int
    flood_samples: int
    startup_runs: int
    rss_taps: int
    network: dict[str, Any]
    web: dict[str, Any]


FULL = Plan(tap_samples=1200, tap_warmup=100, slow_tap_samples=600, decision_samples=50_000,
            flood_samples=250,
            startup_runs=5, rss_taps=300,
            network={"events": 200, "outbox_events": 100_000, "ingest_doors": 50,
                     "ingest_events": 40_000, "snapshot": 100_000, "sync_runs": 2},
            web={"page_rounds": 60, "page_warmup": 5, "taps": 150, "tap_warmup": 10,
                 "sites_n": 20, "days": 365})
QUICK = Plan(tap_samples=150, tap_warmup=20, slow_tap_samples=60, decision_samples=5_000,
             flood_samples=30,
             startup_runs=3, rss_taps=60,
             network={"events": 40, "outbox_events": 5_000, "ingest_doors": 10,
                      "ingest_events": 5_000, "snapshot": 100_000, "sync_runs": 1},
             web={"page_rounds": 15, "page_warmup": 3, "taps": 30, "tap_warmup": 5,
                  "sites_n": 3, "days": 60})


GROUPS = ("tap", "slow", "decision", "flood", "startup", "rss", "network", "secure", "web",
          "doors")
SLOW_DELAYS_MS = (50.0, 200.0)  # an SD card's fsync under write load: tens to hundreds of ms
SHIMMED = ("tap", "flood")  # the groups --fsync-delay-ms can run under the storage shim


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _groups(plan: Plan, sites: SiteFactory, fsync_delay_ms: float | None = None
            ) -> list[tuple[str, tuple[str, ...], Callable[[], list[Result]]]]:
    from benchmarks import door, network, proc, secure, slow, web

    def tap() -> list[Result]:
        if fsync_delay_ms is None:
            return door.bench_tap(sites, samples=plan.tap_samples, warmup=plan.tap_warmup)
        return _shimmed(slow.run_under_shim(sites, "tap", fsync_delay_ms,
                                            samples=plan.tap_samples,
                                            warmup=plan.tap_warmup), fsync_delay_ms)

    def flood() -> list[Result]:
        kw = {"samples": plan.flood_samples, "warmup": max(5, plan.flood_samples // 20)}
        if fsync_delay_ms is None:
            return [door.bench_flood(sites, **kw)]
        return _shimmed(slow.run_under_shim(sites, "flood", fsync_delay_ms, **kw),
                        fsync_delay_ms)

    return [
        ("tap", ("floor_ms", "tap_to_release_ms"), tap),
        ("slow", ("tap_to_release_slow_storage_ms",),
         lambda: [slow_storage_tap(sites, plan)]),
        ("decision", ("decision_us",),
         lambda: [door.bench_decision(sites, samples=plan.decision_samples,
                                      warmup=max(500, plan.decision_samples // 20))]),
        ("flood", ("unknown_flood_decision_ms",), flood),
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


def _shimmed(out: tuple[list[Result], dict[str, float]], delay_ms: float) -> list[Result]:
    """Results measured under the shim, saying so (and how many syncs it stalled)."""
    results, counters = out
    for r in results:
        r.what += f" [every fsync of the storage +{delay_ms:g} ms]"
        if r.value is not None:
            r.value["fsync_delay_ms"] = delay_ms
        r.note += (f"; storage shim: {counters.get('delayed', 0):.0f} of "
                   f"{counters.get('syncs', 0):.0f} syncs delayed {delay_ms:g} ms")
    return results


def slow_storage_tap(sites: SiteFactory, plan: Plan) -> Result:
    """`tap_to_release_slow_storage_ms`: the tap benchmark (floor and door, alternating) under
    the storage shim at each of SLOW_DELAYS_MS; met when every delay's p99 is within 1 ms of
    that run's floor p99 and nothing was lost. The figure shown is the delay with the least
    margin; `by_fsync_delay_ms` has each, with its release-to-durable time."""
    from benchmarks.slow import run_under_shim

    runs: dict[str, dict[str, Any]] = {}
    worst: tuple[float, dict[str, Any]] | None = None
    notes = []
    for delay in SLOW_DELAYS_MS:
        results, counters = run_under_shim(sites, "tap", delay, samples=plan.slow_tap_samples,
                                           warmup=plan.tap_warmup // 2)
        by = {r.key: r for r in results}
        floor, tap = by["floor_ms"].value, by["tap_to_release_ms"].value
        if floor is None or tap is None:
            raise RuntimeError(f"fsync +{delay:g} ms: not measured: {by}")
        margin = tap["p99"] - (floor["p99"] + 1.0)
        runs[f"{delay:g}"] = {
            **{k: tap[k] for k in ("p50", "p99", "max", "samples", "lost")},
            "floor_p99": floor["p99"], "floor_lost": floor["lost"],
            "release_to_durable_ms": tap["release_to_durable_ms"],
            "syncs_delayed": int(counters.get("delayed", 0))}
        if worst is None or margin > worst[0]:
            worst = (margin, {**tap, "fsync_delay_ms": delay})
        notes.append(f"+{delay:g} ms: p99 {tap['p99']} vs floor p99 {floor['p99']} "
                     f"(over the floor {margin + 1.0:+.3f} ms), release to durable p50 "
                     f"{tap['release_to_durable_ms']['p50']} / p99 "
                     f"{tap['release_to_durable_ms']['p99']} ms, "
                     f"{counters.get('delayed', 0):.0f} syncs delayed")
    assert worst is not None
    value = {**worst[1], "samples": sum(r["samples"] for r in runs.values()),
             "lost": sum(r["lost"] + r["floor_lost"] for r in runs.values()),
             "by_fsync_delay_ms": runs}
    met = all(r["p99"] <= r["floor_p99"] + 1.0 for r in runs.values())
    what, target = DESCRIBE["tap_to_release_slow_storage_ms"]
    return Result("tap_to_release_slow_storage_ms", what, value, target, met,
                  note="; ".join(notes))


def run(plan: Plan, only: set[str] | None, workdir: Path, *, repeat: int = 1,
        fsync_delay_ms: float | None = None) -> tuple[list[Result], float]:
    """Each group selected, `repeat` times in a row; a key measured several times is one
    result that shows every run (`combine_runs`)."""
    sites = SiteFactory(workdir)
    results: dict[str, list[Result]] = {}
    started = time.perf_counter()
    log(f"building the rule cache: {sites.n:,} credentials")
    sites.template()
    log(f"rule cache built in {sites.build_s:.1f} s")
    for name, keys, fn in _groups(plan, sites, fsync_delay_ms):
        if only and name not in only:
            continue
        for n in range(repeat):
            log(f"{name} ..." + (f" (run {n + 1} of {repeat})" if repeat > 1 else ""))
            t0 = time.perf_counter()
            for r in _measure(keys, fn):
                results.setdefault(r.key, []).append(r)
            log(f"{name} done in {time.perf_counter() - t0:.1f} s")
    ordered = [combine_runs(results[k]) for k in KEYS if k in results]
    return ordered, time.perf_counter() - started


def _measure(keys: tuple[str, ...], fn: Callable[[], list[Result]]) -> list[Result]:
    """One run of a group: its results, a pending result per key for a missing tool, an
    error result per key for a crash (one broken benchmark must not hide the others)."""
    try:
        out = fn()
    except Unmeasurable as exc:
        return [pending(key, *DESCRIBE.get(key, ("", "")), str(exc)) for key in keys]
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return [_failed(key, f"error: {type(exc).__name__}: {exc}") for key in keys]
    got = {r.key for r in out}
    return out + [_failed(key, "error: the benchmark did not return this key")
                  for key in keys if key not in got]


def _failed(key: str, note: str) -> Result:
    what, target = DESCRIBE.get(key, ("", ""))
    return Result(key, what, None, target, False, note=note)


def _worse(key: str, a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether value `a` is worse than `b`: a higher p99, a lower rate, a higher figure."""
    if "p99" in a:
        return a["p99"] > b["p99"]
    return a["value"] < b["value"] if key.endswith("_per_s") else a["value"] > b["value"]


def combine_runs(runs: list[Result]) -> Result:
    """One key measured in several consecutive runs (`--repeat`): the worst run's figure,
    every run's in `runs`, met only if every run met the target, and a key not measured in
    one run is not measured."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    missing = [r for r in runs if r.value is None]
    if missing and all(r.note.startswith("pending:") for r in missing):
        return missing[0]  # a tool this machine lacks: pending, as in one run
    if missing:
        notes = "; ".join(f"run {n + 1}: {r.note}" for n, r in enumerate(runs) if r.note)
        return Result(first.key, first.what, None, first.target, False, note=notes)
    values = [r.value for r in runs if r.value is not None]
    worst = values[0]
    for v in values[1:]:
        if _worse(first.key, v, worst):
            worst = v
    fields = ("p50", "p99", "max", "samples", "lost") if "p99" in worst else (
        "value", "samples", "lost")
    each = [{**{k: v[k] for k in fields}, "met": r.met,
             **({"same_reader_p99": v["same_reader_decision"]["p99"]}
                if "same_reader_decision" in v else {})}
            for r, v in zip(runs, values, strict=True)]
    met = None if first.met is None else all(bool(r.met) for r in runs)
    shown = "p99" if "p99" in worst else "value"
    note = (f"{len(runs)} consecutive runs, the worst shown; {shown} by run: "
            + ", ".join(f"{v[shown]:g}" for v in values)
            + "".join(f"; run {n + 1}: {r.note}" for n, r in enumerate(runs) if r.note))
    r = Result(first.key, first.what, {**worst, "runs": each}, first.target, met)
    r.note = note  # each run's note already says its losses
    return r


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
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run each selected group N times in a row; a key shows its worst "
                             "run and every run, and is met only if every run met it")
    parser.add_argument("--fsync-delay-ms", type=float, metavar="MS",
                        help=f"run the {' and '.join(SHIMMED)} groups with every fsync of the "
                             "daemon's storage delayed MS ms (a slow SD card: the storage "
                             "shim of faultsuite/storage, LD_PRELOAD)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat takes a whole number >= 1")
    if args.fsync_delay_ms is not None and args.fsync_delay_ms < 0:
        parser.error("--fsync-delay-ms takes a delay >= 0")
    only = set(args.only.split(",")) if args.only else None
    if only and only - set(GROUPS):
        parser.error(f"unknown group(s) {', '.join(sorted(only - set(GROUPS)))}; use "
                     f"{', '.join(GROUPS)}")
    workdir = Path(tempfile.mkdtemp(prefix="accessd-bench-"))
    try:
        results, elapsed = run(QUICK if args.quick else FULL, only, workdir,
                               repeat=args.repeat, fsync_delay_ms=args.fsync_delay_ms)
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
