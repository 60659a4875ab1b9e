"""Scenario registry, trial budgets per mode, results and their table / JSON form.

A scenario proves it ran: one that ends "ok" with no trial is a failure, and one that cannot
run here ("pending": no root for the disk, no Mosquitto) fails the run unless
ACCESSD_FAULTS_ALLOW_PENDING=1 says this machine may skip it.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

MODES = ("quick", "long")


@dataclass
class Result:
    """One scenario's figures. `status` is "ok", "failed" or "pending" (cannot run yet)."""

    name: str
    invariant: str
    trials: int = 0
    failures: int = 0
    status: str = "ok"
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # the first few failure descriptions
    figures: dict[str, Any] = field(default_factory=dict)

    def fail(self, what: str) -> None:
        self.failures += 1
        if len(self.failed) < 10:
            self.failed.append(what)

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.fail(what)
        return ok


@dataclass(frozen=True)
class Context:
    mode: str
    seed: int
    workdir: Any  # pathlib.Path: a fresh directory for this scenario

    @property
    def long(self) -> bool:
        return self.mode == "long"

    def n(self, quick: int, long: int) -> int:
        return long if self.long else quick


Runner = Callable[[Context, Result], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    invariant: str
    run: Runner
    order: int


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, invariant: str, order: int = 50) -> Callable[[Runner], Runner]:
    def register(fn: Runner) -> Runner:
        SCENARIOS[name] = Scenario(name, invariant, fn, order)
        return fn
    return register


def run_one(sc: Scenario, ctx: Context) -> Result:
    result = Result(sc.name, sc.invariant)
    start = time.monotonic()
    try:
        sc.run(ctx, result)
    except Pending as exc:
        result.status = "pending"
        result.notes.append(str(exc))
    except Exception as exc:  # a crash of the scenario itself is a failure, never a pass
        result.fail(f"scenario crashed: {exc!r}\n{traceback.format_exc(limit=6)}")
    result.seconds = round(time.monotonic() - start, 1)
    if result.status == "ok" and result.trials == 0 and not result.failures:
        result.fail("the scenario ran no trial")
    if result.failures:
        result.status = "failed"
    return result


ALLOW_PENDING = "ACCESSD_FAULTS_ALLOW_PENDING"


def pending_allowed() -> bool:
    return os.environ.get(ALLOW_PENDING) == "1"


def passed(results: list[Result]) -> bool:
    """No failure, and no pending scenario unless ACCESSD_FAULTS_ALLOW_PENDING=1."""
    if any(r.failures for r in results):
        return False
    return pending_allowed() or not any(r.status == "pending" for r in results)


def verdict(results: list[Result]) -> str:
    """The table's last line: what the exit status says, and why."""
    failed = [r.name for r in results if r.failures]
    pending = [r.name for r in results if r.status == "pending"]
    parts = [f"FAILED: {', '.join(failed)}" if failed else "no invariant failed"]
    if pending:
        how = (f"allowed by {ALLOW_PENDING}=1" if pending_allowed() else
               f"NOT allowed: the run fails (set {ALLOW_PENDING}=1 on a machine that may "
               "skip them)")
        parts.append(f"pending (did not run): {', '.join(pending)}, {how}")
    return f"result: {'PASS' if passed(results) else 'FAIL'} - " + "; ".join(parts)


class Pending(Exception):
    """The scenario cannot run on this tree yet (the feature it needs is missing)."""


def table(results: list[Result]) -> str:
    rows = [("scenario", "trials", "failures", "status", "time", "invariant checked")]
    rows += [(r.name, str(r.trials), str(r.failures), r.status, f"{r.seconds:.0f}s",
              r.invariant) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    out = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]),
                 row[3].ljust(widths[3]), row[4].rjust(widths[4]), row[5]]
        out.append("  ".join(cells))
        if i == 0:
            out.append("-" * min(120, sum(widths) + 8 + 40))
    for r in results:
        for note in r.notes:
            out.append(f"  {r.name}: {note}")
        for what in r.failed:
            out.append(f"  {r.name}: FAILED: {what}")
    out.append(verdict(results))
    return "\n".join(out)


def as_json(results: list[Result], *, mode: str, seed: int, seconds: float) -> str:
    doc = {
        "mode": mode, "seed": seed, "seconds": round(seconds, 1),
        "failures": sum(r.failures for r in results),
        "pending": [r.name for r in results if r.status == "pending"],
        "pending_allowed": pending_allowed(),
        "ok": passed(results),
        "scenarios": [asdict(r) for r in results],
    }
    return json.dumps(doc, indent=2, sort_keys=False, default=str)
