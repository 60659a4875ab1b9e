"""Time faults: a boot with no time sync, the clock jumping, both daylight-saving changes in
Europe/Paris, validity ending at local midnight.

Each decision is compared with an oracle written here from the rules in docs/decision.md
(occasional members 09:00-18:00 site time, validity through the end of the local day, an
untrusted clock proves only what the newest trusted timestamp proves), not with the product's
own helpers. The DST instants are written out by hand in UTC.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, date, datetime, timedelta

from faultsuite.core import Context, Result, scenario
from faultsuite.daemon import Daemon, Site
from faultsuite.inproc import PARIS, Door, ScriptedClock


def Z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# (what, plan, valid_until, instant UTC, granted?) -- hand-computed, Europe/Paris
DST_TABLE = [
    # spring forward, Sunday 29 March 2026: 02:00 CET -> 03:00 CEST (UTC+2 afterwards)
    ("spring: 08:59:59 local", "occasional", None, Z("2026-03-29T06:59:59Z"), False),
    ("spring: 09:00 local", "occasional", None, Z("2026-03-29T07:00:00Z"), True),
    ("spring: 17:59:59 local", "occasional", None, Z("2026-03-29T15:59:59Z"), True),
    ("spring: 18:00 local", "occasional", None, Z("2026-03-29T16:00:00Z"), False),
    ("spring eve: 09:00 CET", "occasional", None, Z("2026-03-28T08:00:00Z"), True),
    ("spring eve: 08:30 CET", "occasional", None, Z("2026-03-28T07:30:00Z"), False),
    ("spring: valid until that day, 23:59:59", "subscriber", date(2026, 3, 29),
     Z("2026-03-29T21:59:59Z"), True),
    ("spring: valid until that day, midnight", "subscriber", date(2026, 3, 29),
     Z("2026-03-29T22:00:00Z"), False),
    # fall back, Sunday 25 October 2026: 03:00 CEST -> 02:00 CET (UTC+1 afterwards)
    ("fall: 08:59:59 local", "occasional", None, Z("2026-10-25T07:59:59Z"), False),
    ("fall: 09:00 local", "occasional", None, Z("2026-10-25T08:00:00Z"), True),
    ("fall: 17:59:59 local", "occasional", None, Z("2026-10-25T16:59:59Z"), True),
    ("fall: 18:00 local", "occasional", None, Z("2026-10-25T17:00:00Z"), False),
    ("fall: 02:30 local, first time", "occasional", None, Z("2026-10-25T00:30:00Z"), False),
    ("fall: 02:30 local, second time", "occasional", None, Z("2026-10-25T01:30:00Z"), False),
    ("fall eve: 09:00 CEST", "occasional", None, Z("2026-10-24T07:00:00Z"), True),
    ("fall: valid until that day, 23:59:59", "subscriber", date(2026, 10, 25),
     Z("2026-10-25T22:59:59Z"), True),
    ("fall: valid until that day, midnight", "subscriber", date(2026, 10, 25),
     Z("2026-10-25T23:00:00Z"), False),
    # an ordinary summer and winter midnight
    ("summer: valid until 30 June, 23:59:59", "occasional", date(2026, 6, 30),
     Z("2026-06-30T15:59:59Z"), True),
    ("summer: valid until 30 June, midnight", "subscriber", date(2026, 6, 30),
     Z("2026-06-30T22:00:00Z"), False),
    ("winter: valid until 31 Dec, 23:59:59", "subscriber", date(2026, 12, 31),
     Z("2026-12-31T22:59:59Z"), True),
    ("winter: valid until 31 Dec, midnight", "subscriber", date(2026, 12, 31),
     Z("2026-12-31T23:00:00Z"), False),
]


def oracle(plan: str, valid_until: date | None, instant: datetime | None,
           trusted: bool) -> tuple[bool, str]:
    """Expected (granted, reason) for an entry, all days open 09:00-18:00 Paris time."""
    if (instant is not None and valid_until is not None
            and instant.astimezone(PARIS).date() > valid_until):
        return False, "expired"
    if plan == "subscriber":
        return True, "subscriber"
    if not trusted or instant is None:
        return False, "clock_untrusted"
    local = instant.astimezone(PARIS)
    if 9 <= local.hour < 18:
        return True, "opening_hours"
    return False, "outside_opening_hours"


def _dst(ctx: Context, res: Result) -> None:
    door = Door(ctx.workdir / "dst")
    try:
        for what, plan, until, instant, expected in DST_TABLE:
            uid = door.member(plan, valid_until=until)
            door.now = instant
            door.mono += 10
            d = door.tap(uid)
            res.trials += 1
            res.check(d.granted == expected,
                      f"DST {what}: {'granted' if d.granted else 'denied'} ({d.reason}), "
                      f"expected {'granted' if expected else 'denied'}")
        res.check(door.unexplained_releases() == 0, "DST: relay released without a grant")
    finally:
        door.close()


def _jumps(ctx: Context, res: Result, rng: random.Random) -> None:
    """Random walks of the wall clock (jumps of seconds to months, both ways), trusted or not;
    a restart now and then (the controller re-reads the newest trusted stamp)."""
    clock = ScriptedClock(True)
    door = Door(ctx.workdir / "jumps", clock=clock)
    try:
        people = []
        for _ in range(12):
            plan = rng.choice(("subscriber", "occasional"))
            until = rng.choice((None, date(2026, rng.randrange(2, 12), rng.randrange(1, 28))))
            people.append((door.member(plan, valid_until=until), plan, until))
        t = datetime(2026, 3, 1, 8, tzinfo=UTC)
        last_trusted: datetime | None = None
        for step in range(ctx.n(1500, 20000)):
            r = rng.random()
            if r < 0.6:
                t += timedelta(seconds=rng.uniform(1, 4 * 3600))
            elif r < 0.8:
                t -= timedelta(seconds=rng.uniform(1, 3 * 86400))  # backwards
            elif r < 0.95:
                t += timedelta(days=rng.uniform(1, 60))  # forwards, far
            else:
                t = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=rng.uniform(0, 364))
            if rng.random() < 0.1:
                clock.is_trusted = not clock.is_trusted
            if rng.random() < 0.01:
                door = door.restart()
                clock = door.clock
            door.now = t
            door.mono += rng.uniform(0.6, 5)  # past the hold-off and the lockout windows
            uid, plan, until = rng.choice(people)
            trusted = clock.is_trusted
            if trusted:
                last_trusted = t
            expected = oracle(plan, until, t if trusted else last_trusted, trusted)
            d = door.tap(uid)
            res.trials += 1
            res.check((d.granted, str(d.reason)) == expected,
                      f"jump step {step}: clock {t.isoformat()} trusted={trusted} "
                      f"last_trusted={last_trusted}: {plan} until {until}: got "
                      f"{d.granted}/{d.reason}, expected {expected}")
        res.check(door.unexplained_releases() == 0, "jumps: relay released without a grant")
        door.settle()
        conn = door.journal.conn
        seqs = [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]
        res.check(seqs == list(range(1, len(seqs) + 1)), "jumps: journal sequence has a gap")
        wrong = conn.execute("SELECT count(*) FROM events e WHERE type LIKE 'access.%' AND "
                             "clock_trusted NOT IN (0, 1)").fetchone()[0]
        res.check(wrong == 0, "jumps: clock_trusted not recorded")
    finally:
        door.close()


def _boot_unsynced(ctx: Context, res: Result) -> None:
    """The real daemon, booted without time sync two ways: trust="never", and a clock that
    reads a date before [clock] not_before (a Pi without RTC after a power cut)."""
    for label, clock in (("trust=never", 'trust = "never"'),
                         ("not_before in the future", 'trust = "always"\n'
                                                      'not_before = 2099-01-01')):
        site = Site(ctx.workdir / label.replace(" ", "_").replace("=", "-"), clock=clock,
                    extra='[schedule]\ndays = ["mon","tue","wed","thu","fri","sat","sun"]\n'
                          'opens = "00:00"\ncloses = "23:59"\n')
        sub = "6600000001"
        occ = "6600000002"
        site.enroll(sub, "Sub", "subscriber")
        site.enroll(occ, "Occ", "occasional")
        d = Daemon(site)
        try:
            d.wait_for(r"reader door: (back )?online", timeout=5)
            d.tap(sub, grants=True)
            d.tap(occ)
            ok = d.wait_for(r"access (granted|denied)", count=2, timeout=10)
            st = d.status()
        finally:
            d.stop()
        res.trials += 1
        if not res.check(ok, f"boot {label}: taps not decided"):
            continue
        res.check(st["clock"]["trusted"] is False, f"boot {label}: clock reported trusted")
        conn = sqlite3.connect(str(site.journal_path))
        rows = conn.execute("SELECT member_name, result, reason, clock_trusted FROM events "
                            "WHERE type LIKE 'access.%' ORDER BY seq").fetchall()
        conn.close()
        res.check(rows == [("Sub", "granted", "subscriber", 0),
                           ("Occ", "denied", "clock_untrusted", 0)],
                  f"boot {label}: journal {rows}")


@scenario("clock_faults",
          "no time sync (subscribers in, hour-dependent refused, events marked untrusted), "
          "jumps both ways, Paris DST changes, validity to local midnight: decisions = oracle",
          order=30)
def clock_faults(ctx: Context, res: Result) -> None:
    rng = random.Random(ctx.seed + 2)
    _dst(ctx, res)
    _jumps(ctx, res, rng)
    _boot_unsynced(ctx, res)
