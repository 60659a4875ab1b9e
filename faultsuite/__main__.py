"""`python -m faultsuite [--quick|--long] [--json] [--only NAME]` (scripts/faults).

Exit status 1 when an invariant failed, a scenario ran no trial, or a scenario could not run
(pending) without ACCESSD_FAULTS_ALLOW_PENDING=1.
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
import tempfile
import time
from pathlib import Path

from faultsuite.core import SCENARIOS, Context, as_json, passed, run_one, table

MODULES = ("power", "power_loss", "reader", "clock", "attack", "disk", "fuzz", "network",
           "insider", "release")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/faults", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="CI budget: a few minutes (default)")
    mode.add_argument("--long", dest="mode", action="store_const", const="long",
                      help="soak: >= 500 power cuts, >= 1,000 power losses, hundreds of "
                      "thousands of fuzz inputs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this scenario, or the scenarios whose name starts with "
                             "NAME_ (`reader`, `network`); repeatable")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    for name in MODULES:
        importlib.import_module(f"faultsuite.{name}")
    scenarios = sorted(SCENARIOS.values(), key=lambda s: (s.order, s.name))
    if args.list:
        for s in scenarios:
            print(f"{s.name:20} {s.invariant}")
        return 0
    if args.only:
        def chosen(name: str, wanted: str) -> bool:
            return name == wanted or name.startswith(f"{wanted}_")

        unknown = [w for w in args.only if not any(chosen(s.name, w) for s in scenarios)]
        if unknown:
            parser.error(f"unknown scenario(s) {sorted(unknown)}; see --list")
        scenarios = [s for s in scenarios if any(chosen(s.name, w) for w in args.only)]
    mode_name = args.mode or "quick"
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    work = Path(tempfile.mkdtemp(prefix="accessd-faults-"))
    start = time.monotonic()
    results = []
    for sc in scenarios:
        d = work / sc.name
        d.mkdir()
        if not args.json:
            print(f"... {sc.name}", file=sys.stderr, flush=True)
        results.append(run_one(sc, Context(mode_name, seed, d)))
    elapsed = time.monotonic() - start
    if args.json:
        print(as_json(results, mode=mode_name, seed=seed, seconds=elapsed))
    else:
        print(f"accessd fault suite: mode {mode_name}, seed {seed}, {elapsed:.0f} s, "
              f"work dir {work}")
        print(table(results))
    if not args.keep and all(r.failures == 0 for r in results):
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if passed(results) else 1


if __name__ == "__main__":
    sys.exit(main())
