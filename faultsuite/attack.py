"""UID emulation: a flood of random card numbers on the serial line at the reader's own speed.

An RDM6300 at 9600 baud carries at most ~68 frames a second; a card emulator presents numbers
no faster. The lockout is configured short here (limit 5 in 30 s, 2 s lockout) so that many
cycles fit in the budget; the defaults (60 s) change only the waiting.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time

from faultsuite.core import Context, Result, scenario
from faultsuite.daemon import Daemon, Site
from faultsuite.reader import Line, frame

FRAME_S = 14 * 10 / 9600  # 14 bytes of 10 bits at 9600 baud
LIMIT, LOCKOUT_S = 5, 2.0


class Flood(threading.Thread):
    def __init__(self, line: Line, rng: random.Random, avoid: set[str]) -> None:
        super().__init__(daemon=True)
        self.line, self.rng, self.avoid = line, rng, avoid
        self.stop_ev, self.sent = threading.Event(), 0

    def run(self) -> None:
        while not self.stop_ev.is_set():
            uid = f"{self.rng.getrandbits(40):010X}"
            if uid in self.avoid:
                continue
            self.line.write(frame(uid))
            self.sent += 1
            time.sleep(FRAME_S)


def _rows(site: Site, after: int) -> list[tuple[int, str, str | None, str | None, str]]:
    conn = sqlite3.connect(f"file:{site.journal_path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT seq, type, result, reason, ts FROM events WHERE seq > ? "
                            "ORDER BY seq", (after,)).fetchall()
    finally:
        conn.close()


def _wait(site: Site, after: int, pred, timeout: float = 15):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _rows(site, after)
        hit = next((r for r in rows if pred(r)), None)
        if hit is not None:
            return hit, rows
        time.sleep(0.01)
    return None, _rows(site, after)


@scenario("attack_uid_flood",
          f"random card numbers at reader speed: lockout after {LIMIT}, alarm raised, no grant "
          "during the flood, a member decided quickly once the lockout ends", order=40)
def attack_uid_flood(ctx: Context, res: Result) -> None:
    rng = random.Random(ctx.seed + 3)
    line = Line(ctx.workdir / "ttyRDM6300")
    site = Site(ctx.workdir / "site", reader="serial", serial_port=str(line.link),
                security=f"unknown_card_limit = {LIMIT}\nunknown_card_window_s = 30\n"
                         f"lockout_s = {LOCKOUT_S}")
    members = [f"{0x1100000000 + i:010X}" for i in range(4)]
    for i, uid in enumerate(members):
        site.enroll(uid, f"Member {i}")
    d = Daemon(site)
    latencies, flooded = [], 0
    try:
        d.wait_for(r"reader door: online", timeout=10)
        seen = 0
        for cycle in range(ctx.n(4, 40)):
            res.trials += 1
            flood = Flood(line, rng, set(members))
            flood.start()
            hit, rows = _wait(site, seen, lambda r: r[1] == "alarm.reader_lockout")
            if not res.check(hit is not None, f"cycle {cycle}: no lockout during the flood"):
                flood.stop_ev.set()
                flood.join()
                break
            unknown = [r for r in rows if r[0] < hit[0] and r[3] == "unknown_credential"]
            res.check(len(unknown) == LIMIT, f"cycle {cycle}: lockout after {len(unknown)} "
                                             f"unknown cards, expected {LIMIT}")
            alarms = d.status()["alarms"]
            res.check(any(a.startswith("reader_lockout") for a in alarms),
                      f"cycle {cycle}: status alarms {alarms} during the lockout")
            locked_at = time.monotonic()
            time.sleep(0.5)  # the flood goes on against the locked reader, and a member tries
            line.write(frame(members[cycle % len(members)]))
            time.sleep(0.3)
            flood.stop_ev.set()
            flood.join()
            flooded += flood.sent
            time.sleep(max(0.0, LOCKOUT_S - (time.monotonic() - locked_at)) + 0.1)
            member = members[(cycle + 1) % len(members)]
            t0 = time.monotonic()
            line.write(frame(member))
            grant, rows = _wait(site, hit[0], lambda r: r[1] == "access.granted", timeout=5)
            latency = time.monotonic() - t0
            if res.check(grant is not None, f"cycle {cycle}: member refused after the lockout"):
                latencies.append(latency)
                res.check(latency < 1.0, f"cycle {cycle}: member decided in {latency:.2f} s")
            flood_rows = [r for r in rows if grant is None or r[0] < grant[0]]
            res.check(not any(r[2] == "granted" for r in flood_rows),
                      f"cycle {cycle}: a grant during the flood")
            res.check(any(r[3] == "reader_locked_out" for r in flood_rows),
                      f"cycle {cycle}: no decision refused as reader_locked_out")
            seen = max(r[0] for r in _rows(site, seen))
            time.sleep(0.6)  # hold-off of the member's card
        res.check(d.alive(), "daemon died under the flood")
    finally:
        code = d.stop()
        line.unplug()
    res.check(code == 0, f"daemon exit status {code}")
    worst = max(latencies, default=0.0)
    res.figures.update({"random_cards": flooded, "max_member_latency_s": round(worst, 3)})
    res.notes.append(f"{flooded} random card numbers at ~{1 / FRAME_S:.0f}/s; member decided "
                     f"{worst * 1000:.0f} ms at worst after each lockout ended")
