"""Unintended release: every energisation of the relay, in every daemon life of this run, has a
reason in the journal (a grant, an exit request, a logged manual or remote release, or a
`door.mode` entry that holds the door unlocked: its unlock schedule or the host's hold).

The relay's own log line ("door released (BCMn)", written inside LockRelay.release) gives the
moment of each energisation; the journal gives the reasons. Each release is matched to a
distinct reason stamped at most one second before it. The controller releases *before* it
commits the journal entry (the member never waits on the SD card), so a power cut in those few
milliseconds leaves a release whose entry never reached the disk: such a release is counted
apart (lost_to_cut) when the suite had just presented a card that grants, and is a failure
otherwise.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta
from pathlib import Path

from faultsuite.core import Context, Result, scenario
from faultsuite.daemon import LIVES, Daemon, Life, Site, release_times

BEFORE = timedelta(seconds=1.0)
SLACK = timedelta(milliseconds=5)  # log and journal stamps are both millisecond-rounded


def audit(lives: list[Life]) -> tuple[int, int, list[str]]:
    """(releases checked, releases lost to a power cut, unexplained releases)."""
    checked, lost, bad = 0, 0, []
    used: dict[Path, set[int]] = {}
    known: dict[Path, dict[int, datetime]] = {}
    for life in lives:  # every life's journal as it was at that life's end (retention runs)
        known.setdefault(life.journal_path, {}).update(life.reasons)
    for life in lives:
        if not life.log_path.exists():
            continue
        reasons = sorted(known[life.journal_path].items(), key=lambda kv: kv[1])
        taken = used.setdefault(life.journal_path, set())
        for t in sorted(release_times(life.log_path.read_text(errors="replace"))):
            checked += 1
            match = next((seq for seq, r in reasons
                          if seq not in taken and t - BEFORE <= r <= t + SLACK), None)
            if match is not None:
                taken.add(match)
                continue
            if (life.killed_at is not None and t >= life.killed_at - BEFORE
                    and any(t - BEFORE <= s <= t + SLACK for s in life.stimuli)):
                lost += 1
                continue
            bad.append(f"{life.log_path.name}: relay energised at {t.isoformat()} "
                       "with no grant, exit request, manual release or unlocked mode")
    return checked, lost, bad


def _own_workload(ctx: Context) -> None:
    """When run alone: taps, refusals, manual releases and a power cut, on a fresh site."""
    rng = random.Random(ctx.seed)
    site = Site(ctx.workdir / "site")
    members = [f"{0x4400000000 + i:010X}" for i in range(8)]
    for i, uid in enumerate(members):
        site.enroll(uid, f"Member {i}")
    for life in range(ctx.n(3, 12)):
        d = Daemon(site)
        d.wait_for(r"reader door: (back )?online", timeout=5)
        for _ in range(ctx.n(30, 150)):
            r = rng.random()
            if r < 0.4:
                d.tap(rng.choice(members), grants=True)
            elif r < 0.45:
                d.open_door()
            else:
                d.tap(f"{rng.getrandbits(40):010X}")
            time.sleep(rng.uniform(0, 0.03))
        time.sleep(0.3)
        if life % 2:
            d.kill()
        else:
            d.stop()


@scenario("unintended_release",
          "every relay energisation (all daemon lives of the run) has a grant, exit request, "
          "logged manual release or unlocked door mode", order=90)
def unintended_release(ctx: Context, res: Result) -> None:
    if not LIVES:
        _own_workload(ctx)
    checked, lost, bad = audit(list(LIVES))
    res.trials = checked
    for what in bad:
        res.fail(what)
    res.figures.update({"daemon_lives": len(LIVES), "releases": checked, "lost_to_cut": lost})
    res.notes.append(f"{checked} relay energisations over {len(LIVES)} daemon lives; "
                     f"{lost} granted just before a SIGKILL whose journal entry was not yet "
                     "committed (release precedes commit by design)")
