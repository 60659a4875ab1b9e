"""Apply one rule document in a child process: `python -m accessd.uplink.apply ... < DOC`.

A 100,000-credential snapshot is ~20 MiB of JSON to parse, verify, check and diff against the
cache: seconds of pure Python. Done in the daemon's interpreter, it holds the GIL in long
stretches and a tap waits for it (p99 36 ms). So the uplink hands large documents to this
child, at a lower CPU priority (nice 10): it does every check of `RuleApplier.handle` and
writes the one rule transaction through its own SQLite connection (WAL: the daemon keeps
answering from the old rules until the commit), then prints the outcome as one JSON line.
Small deltas stay in the uplink's thread (`CHILD_APPLY_BYTES`).

Anything that goes wrong in the child (a crash, a kill, a timeout) before its commit leaves
the cache untouched, as any rejection does; the uplink then reports `apply_failed`.

The child runs isolated: `python -I` (neither the working directory nor PYTHONPATH on
sys.path, no PYTHON* variables, no user site), a minimal environment, in the storage folder.
Code planted next to the databases, or an environment variable, cannot run inside the process
that writes the rule cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

CHILD_APPLY_BYTES = 256 * 1024  # documents at least this large are applied in a child
NICE = 10
TIMEOUT_S = 600.0
CHILD_ENV = ("LANG", "LC_ALL", "TZ")  # passed on when set; nothing else is


def child_environment() -> dict[str, str]:
    """The child's whole environment: a fixed PATH and the locale and zone, nothing else."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    env.update({k: os.environ[k] for k in CHILD_ENV if k in os.environ})
    return env


def main(argv: list[str] | None = None) -> int:
    with contextlib.suppress(OSError):
        os.nice(NICE)  # taps first: the daemon keeps its priority
    p = argparse.ArgumentParser(prog="python -m accessd.uplink.apply")
    p.add_argument("--rules", required=True, help="the door's rule cache (SQLite)")
    p.add_argument("--journal", help="the door's journal (host enrolments not yet stored)")
    p.add_argument("--other-journal", action="append", default=[], metavar="DOOR=PATH",
                   help="the journal of another door of this Pi (sharing the rule cache)")
    p.add_argument("--keys", required=True, help="the office's public key file")
    p.add_argument("--site", required=True)
    p.add_argument("--door", required=True)
    p.add_argument("--kind", required=True, choices=("snapshot", "delta"))
    p.add_argument("--max-bytes", type=int, required=True)
    args = p.parse_args(argv)

    from accessd.protocol.signing import PublicKeys
    from accessd.store.journal import Journal
    from accessd.store.rules import RuleCache
    from accessd.uplink.rulesync import RuleApplier

    raw = sys.stdin.buffer.read()
    rules = RuleCache(args.rules)
    journal = Journal(args.journal, args.site, args.door, readonly=True) if args.journal \
        else None
    others = {}
    for item in args.other_journal:
        door, _, path = item.partition("=")
        others[door] = Journal(path, args.site, door, readonly=True)
    try:
        applier = RuleApplier(rules, PublicKeys.load(Path(args.keys)), site=args.site,
                              door=args.door, journal=journal, max_bytes=args.max_bytes,
                              others=others)
        outcome = applier.handle(raw, args.kind)
    finally:
        rules.close()
        for j in [journal, *others.values()]:
            if j is not None:
                j.close()
    sys.stdout.write(json.dumps({"applied": outcome.applied, "ignored": outcome.ignored,
                                 "reason": outcome.reason, "detail": outcome.detail,
                                 "request_snapshot": outcome.request_snapshot}) + "\n")
    return 0


def apply_in_child(raw: bytes, kind: str, *, rules: Path, journal: Path | None, keys: Path,
                   site: str, door: str, max_bytes: int,
                   timeout_s: float = TIMEOUT_S,
                   others: dict[str, Path] | None = None) -> dict[str, Any]:
    """Run `main` in a child on `raw`; its outcome (the fields of `rulesync.Outcome`).

    The caller's thread waits in I/O (no GIL held) while the child works. A child that fails
    gives {"reason": "apply_failed", ...}: its transaction did not commit, unless it died
    between its commit and its answer, which the caller checks by the rule version.
    """
    cmd = [sys.executable, "-I", "-m", "accessd.uplink.apply", "--rules", str(rules.absolute()),
           "--keys", str(keys.absolute()), "--site", site, "--door", door, "--kind", kind,
           "--max-bytes", str(max_bytes)]
    if journal is not None:
        cmd += ["--journal", str(journal.absolute())]
    for other, path in (others or {}).items():
        cmd += ["--other-journal", f"{other}={path.absolute()}"]
    try:
        done = subprocess.run(cmd, input=raw, capture_output=True, timeout=timeout_s,
                              check=False, env=child_environment(), cwd=rules.absolute().parent)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"reason": "apply_failed", "detail": {"error": f"{type(exc).__name__}: {exc}"}}
    try:
        if done.returncode != 0:
            raise ValueError(f"exit status {done.returncode}")
        out = json.loads(done.stdout.decode("utf-8").strip().splitlines()[-1])
        if not isinstance(out, dict):
            raise ValueError("not an object")
        return out
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        return {"reason": "apply_failed", "detail": {"error": f"the child failed: {exc}",
                                                     "stderr": err}}


if __name__ == "__main__":
    raise SystemExit(main())
