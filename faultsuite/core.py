"""Scenario registry, trial budgets per mode, results and their table / JSON form."""

from __future__ import annotations

import json
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
    if result.failures:
        result.status = "failed"
    return result


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
    return "\n".join(out)


def as_json(results: list[Result], *, mode: str, seed: int, seconds: float) -> str:
    doc = {
        "mode": mode, "seed": seed, "seconds": round(seconds, 1),
        "failures": sum(r.failures for r in results),
        "ok": all(r.failures == 0 for r in results),
        "scenarios": [asdict(r) for r in results],
    }
    return json.dumps(doc, indent=2, sort_keys=False, default=str)
