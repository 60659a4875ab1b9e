"""Power cuts: SIGKILL the real daemon (and whatever writes beside it) at random moments.

Three kinds of moment, in turn: a burst of taps; a rule snapshot being applied by the real
`RuleApplier` in a second process (the daemon keeps deciding from the same file meanwhile);
the journal's retention clean-up (`Journal.purge`) on a journal holding many old rows, written
before that life of the daemon as a year-old journal holds them. The kill
takes every process at once, as a power cut would. What was committed is read from the journal
by a third connection just before the kill; after it, the next life of the daemon must find it
all there.

Every trial proves it ran: the reader was online, taps were sent and decided; the scenario
counts the kills that landed while the snapshot or the clean-up was still running (at least
half of them in long mode, at least one in quick mode), and in long mode both rule outcomes
(the old set kept, the new set applied) must occur. The daemon's own retention is set to a
year, so that its clean-up at start cannot delete the suite's old rows before the suite's
own clean-up, which is the one the kill is aimed at.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from faultsuite.core import Context, Result, scenario
from faultsuite.daemon import PYTHON, ROOT, Daemon, Site, check_journal, committed

APPLIER = """
import contextlib
import sys
from pathlib import Path
from accessd.protocol.signing import PublicKeys
from accessd.store.rules import RuleCache
from accessd.uplink.rulesync import RuleApplier
raw = Path(sys.argv[1]).read_bytes()
rules = RuleCache(sys.argv[3])
transaction = rules.transaction

@contextlib.contextmanager
def announced():  # the suite times its kill from the moment the writing transaction opens
    print("transaction", flush=True)
    with transaction() as conn:
        yield conn
    print("committed", flush=True)

rules.transaction = announced
applier = RuleApplier(rules, PublicKeys.load(Path(sys.argv[2])), site="faults", door="front")
out = applier.handle(raw, "snapshot")
print("applied" if out.applied else f"refused {out.reason} {out.detail}", flush=True)
"""

PURGER = """
import sys
from accessd.store.journal import Journal
j = Journal(sys.argv[1], "faults", "front")
print("purging", flush=True)
print("purged", j.purge(90), flush=True)
"""

SHARED = 20  # members in every rule set: the cards tapped during the trials
DAEMON_RETENTION_DAYS = 365  # the old rows (200 days) are the suite's clean-up's, not the daemon's
MID_SHARE_LONG = 0.5  # in long mode, at least this share of helper kills must land mid-operation


def uid_of(i: int) -> str:
    return f"{0x5A00000000 + i:010X}"


class RuleSets:
    """Two alternating rule sets, "a" and "b", sharing the tapped members."""

    def __init__(self, site: Site, size: int, workdir: Path) -> None:
        from accessd.protocol.signing import OfficeKey, public_line

        self.site, self.size = site, size
        self.key = OfficeKey.generate()
        self.pub = workdir / "office.pub"
        self.pub.write_text(public_line(self.key.public) + "\n")
        self.doc = workdir / "snapshot.json"
        self.version = 0
        self.current = ""
        self._cred = {i: site.hasher(uid_of(i)) for i in range(SHARED + 2 * size)}

    def build(self, which: str) -> None:
        from accessd.protocol.codec import encode
        from accessd.protocol.rules import make_snapshot

        offset = SHARED if which == "a" else SHARED + self.size
        idx = list(range(SHARED)) + list(range(offset, offset + self.size))
        members = [{"id": f"s-{i}" if i < SHARED else f"{which}-{i}", "name": f"Member {i}",
                    "plan": "subscriber", "status": "active", "origin": "central",
                    "valid_from": None, "valid_until": None} for i in idx]
        creds = [{"hash": self._cred[i], "member_id": m["id"], "status": "active",
                  "origin": "central"} for i, m in zip(idx, members, strict=True)]
        self.version += 1
        doc = make_snapshot(self.key, site="faults", version=self.version, members=members,
                            credentials=creds)
        self.doc.write_bytes(encode(doc))

    def start_apply(self) -> subprocess.Popen[str]:
        return subprocess.Popen([PYTHON, "-c", APPLIER, str(self.doc), str(self.pub),
                                 str(self.site.rules_path)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=ROOT)

    def state(self) -> tuple[int, str, list[str]]:
        """(version, "a" | "b" | "mixed" | ..., problems) as found on disk."""
        conn = sqlite3.connect(str(self.site.rules_path), timeout=10)
        try:
            problems = []
            ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if ok != "ok":
                problems.append(f"rules integrity_check: {ok}")
            row = conn.execute("SELECT value FROM meta WHERE key = 'rule_version'").fetchone()
            version = int(row[0]) if row else 0
            n_a, n_b, n_s, n = conn.execute(
                "SELECT sum(id LIKE 'a-%'), sum(id LIKE 'b-%'), sum(id LIKE 's-%'), count(*) "
                "FROM members").fetchone()
            n_c = conn.execute("SELECT count(*) FROM credentials").fetchone()[0]
        finally:
            conn.close()
        n_a, n_b, n_s = n_a or 0, n_b or 0, n_s or 0
        if n_s == SHARED and n_a == self.size and n_b == 0 and n == n_c:
            which = "a"
        elif n_s == SHARED and n_b == self.size and n_a == 0 and n == n_c:
            which = "b"
        else:
            which = f"mixed(a={n_a}, b={n_b}, shared={n_s}, creds={n_c})"
        return version, which, problems


def apply_sync(rs: RuleSets, which: str) -> float:
    """Apply a set to completion; returns how long its writing transaction took."""
    rs.build(which)
    p = rs.start_apply()
    assert p.stdout is not None
    first = p.stdout.readline()
    t0 = time.monotonic()
    second = p.stdout.readline()
    took = time.monotonic() - t0  # from BEGIN to COMMIT
    out = second + p.stdout.read()
    p.wait(60)
    if "transaction" not in first or "applied" not in out:
        raise RuntimeError(f"rule snapshot not applied: {first}{out}")
    rs.current = which
    return took


def purge_sync(site: Site, rows: int) -> float:
    """Purge a journal with `rows` old rows to completion; returns how long it took."""
    add_old_rows(site, rows)
    p = subprocess.Popen([PYTHON, "-c", PURGER, str(site.journal_path)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    assert p.stdout is not None
    p.stdout.readline()
    t0 = time.monotonic()
    out = p.stdout.read()
    took = time.monotonic() - t0
    p.wait(60)
    if "purged" not in out:
        raise RuntimeError(f"purge failed: {out}")
    return took


def _retention_prefix(before: dict[int, tuple[str, str, str]], days: int) -> int:
    """The highest sequence number the daemon's own retention (`days`) may delete."""
    from accessd.events import format_ts, utcnow

    cutoff = format_ts(utcnow() - timedelta(days=days))
    return max((seq for seq, (_, _, ts) in before.items() if ts < cutoff), default=0)


def add_old_rows(site: Site, n: int) -> int:
    """Journal `n` events stamped 200 days ago (trusted), as a journal a year old holds."""
    from accessd.events import Event, EventType, utcnow
    from accessd.store.journal import Journal

    j = Journal(site.journal_path, "faults", "front")
    try:
        old = utcnow() - timedelta(days=200)
        entries = j.append_many([Event(EventType.ACCESS_DENIED, ts=old + timedelta(seconds=i),
                                       reader="door", result="denied",
                                       reason="unknown_credential") for i in range(n)])
    finally:
        j.close()
    return entries[-1].seq


class Tapper(threading.Thread):
    """Taps at reader speed: the shared members (grants) and unknown cards, in random order."""

    def __init__(self, daemon: Daemon, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.d, self.rng, self.stop_ev, self.sent = daemon, rng, threading.Event(), 0

    def run(self) -> None:
        try:
            while not self.stop_ev.is_set():
                if self.rng.random() < 0.5:
                    self.d.tap(uid_of(self.rng.randrange(SHARED)), grants=True)
                else:
                    self.d.tap(f"{self.rng.getrandbits(40):010X}")
                self.sent += 1
                time.sleep(self.rng.uniform(0.0, 0.02))
        except (OSError, ValueError):
            pass  # the daemon died under us: that is the point


def _kill(*procs: subprocess.Popen[Any] | None) -> None:
    for p in procs:
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)


@scenario("power_cut",
          "SIGKILL during taps / rule snapshot / retention: integrity ok, committed events kept, "
          "no seq gap, rules old-or-new, restarts locked", order=10)
def power_cut(ctx: Context, res: Result) -> None:
    rng = random.Random(ctx.seed)
    trials = ctx.n(24, 510)
    site = Site(ctx.workdir / "site", retention_days=DAEMON_RETENTION_DAYS)
    rs = RuleSets(site, ctx.n(4000, 8000), ctx.workdir)
    apply_sync(rs, "b")
    apply_took = apply_sync(rs, "a")  # calibration: how long a snapshot's transaction lasts
    old_rows = ctx.n(20000, 30000)
    purge_took = purge_sync(site, old_rows)
    res.figures["calibration_s"] = {"snapshot_transaction": round(apply_took, 3),
                                    "purge": round(purge_took, 3)}
    counts = {"taps": 0, "rules": 0, "purge": 0}
    mid = {"rules": 0, "purge": 0}  # the helper process was still running at the kill
    outcome = {"old": 0, "new": 0}
    sent = 0
    prev_last: int | None = None
    for trial in range(trials + 1):
        kind = ("taps", "rules", "purge")[trial % 3]
        purge_upto = 0
        if kind == "purge" and trial < trials:
            # a year-old journal: the old rows come before this life's events, as on a door
            # (appended while the daemon runs, they would follow its fresh events, and the
            # clean-up, which deletes a prefix, would delete those too)
            purge_upto = prev_last = add_old_rows(site, old_rows)
        d = Daemon(site)
        try:
            st = d.status()
        except Exception as exc:
            res.fail(f"trial {trial}: no status after restart: {exc}")
            d.kill()
            continue
        if trial == trials:  # the last restart only checks the previous cut
            res.check(st["lock"]["state"] == "locked", f"restart {trial}: lock {st['lock']}")
            if prev_last is not None:
                res.check(st["journal"]["last_seq"] == prev_last + 1,
                          f"restart {trial}: last_seq {st['journal']['last_seq']} after "
                          f"{prev_last}")
            d.stop()
            break
        res.trials += 1
        res.check(st["lock"]["state"] == "locked", f"restart {trial}: lock {st['lock']}")
        res.check("): locked" in d.text(), f"restart {trial}: relay not driven locked at start")
        if prev_last is not None:
            res.check(st["journal"]["last_seq"] == prev_last + 1,
                      f"restart {trial}: last_seq {st['journal']['last_seq']} after {prev_last}")
        res.check(d.wait_for(r"reader door: (back )?online", timeout=5),
                  f"trial {trial}: the reader never came online")
        first_seq = st["journal"]["last_seq"]  # this life's daemon.started
        counts[kind] += 1
        tapper = Tapper(d, rng)
        tapper.start()
        helper: subprocess.Popen[str] | None = None
        old_version, target = rs.version, ""
        before = committed(site.journal_path)  # read first: the kill must not wait for it
        if kind == "rules":
            target = "b" if rs.current == "a" else "a"
            rs.build(target)
            helper = rs.start_apply()
            assert helper.stdout is not None
            helper.stdout.readline()  # "transaction": the snapshot is being written
            time.sleep(rng.uniform(0.0, apply_took * 1.5))  # both outcomes occur
        elif kind == "purge":
            helper = subprocess.Popen([PYTHON, "-c", PURGER, str(site.journal_path)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, cwd=ROOT)
            assert helper.stdout is not None
            helper.stdout.readline()  # "purging"
            time.sleep(rng.uniform(0.0, purge_took * 1.1))
        else:
            time.sleep(rng.uniform(0.05, 0.8))
            before = committed(site.journal_path)
            time.sleep(rng.uniform(0.0, 0.01))
        finished = helper is not None and helper.poll() is not None
        _kill(helper, d.proc)  # the power goes: everything at once
        d.kill()
        tapper.stop_ev.set()
        tapper.join(5)
        sent += tapper.sent
        decided = _decided_since(site, first_seq)
        res.check(tapper.sent > 0, f"trial {trial} ({kind}): no tap was sent")
        res.check(decided > 0, f"trial {trial} ({kind}): {tapper.sent} taps sent, none "
                               "decided and committed before the cut")
        if helper is not None:
            helper.wait(10)
            if not finished:
                mid[kind] += 1
        # the daemon applies retention itself at start (and hourly): rows older than its
        # retention may go in any trial, as a prefix of the sequence
        purge_upto = max(purge_upto, _retention_prefix(before, site.retention_days))
        for problem in check_journal(site.journal_path, before, purge_upto):
            res.fail(f"trial {trial} ({kind}): {problem}")
        version, which, problems = rs.state()
        for problem in problems:
            res.fail(f"trial {trial} ({kind}): {problem}")
        if kind == "rules":
            if version == old_version and which == rs.current:
                outcome["old"] += 1
            elif version == rs.version and which == target:
                outcome["new"] += 1
                rs.current = target
            else:
                res.fail(f"trial {trial}: rules version {version} with set {which} "
                         f"(old {old_version}/{rs.current}, new {rs.version}/{target})")
        elif not res.check(which == rs.current, f"trial {trial}: rules {which} changed"):
            pass
        if kind == "rules" and version == old_version:
            rs.version = old_version  # the next snapshot reuses the number never applied
        conn = sqlite3.connect(str(site.journal_path), timeout=10)
        prev_last = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
        conn.close()
    _check_coverage(ctx, res, counts, mid, outcome)
    res.figures.update({"kinds": counts, "kills_mid_operation": mid, "rules_after_cut": outcome,
                        "taps_sent": sent})
    res.notes.append(f"kills by moment {json.dumps(counts)}; helper still running at the "
                     f"kill {json.dumps(mid)}; rules after the cut {json.dumps(outcome)}; "
                     f"{sent} taps sent")


def _decided_since(site: Site, seq: int) -> int:
    """Access decisions committed after `seq` (read after the cut: it cannot delay it)."""
    conn = sqlite3.connect(f"file:{site.journal_path}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM events WHERE seq > ? AND type IN "
                                "('access.granted', 'access.denied')", (seq,)).fetchone()[0])
    finally:
        conn.close()


def _check_coverage(ctx: Context, res: Result, counts: dict[str, int], mid: dict[str, int],
                    outcome: dict[str, int]) -> None:
    """The cuts hit what they were aimed at: the snapshot and the clean-up while running, and
    (long mode) a rule snapshot both kept and applied across the cuts."""
    for kind, n in mid.items():
        if not counts[kind]:
            continue
        share = n / counts[kind]
        need = MID_SHARE_LONG if ctx.long else 1 / counts[kind]
        res.check(share >= need, f"only {n} of {counts[kind]} {kind} kills landed while the "
                                 f"operation was running (need {need:.0%})")
    if ctx.long:
        res.check(outcome["old"] > 0 and outcome["new"] > 0,
                  f"rules after the cut {outcome}: both the old and the new set must occur")
