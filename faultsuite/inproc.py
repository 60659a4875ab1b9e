"""An in-process door for scenarios that need to steer time: the product's DoorController on
real SQLite files and a real LockRelay on gpiozero's MockFactory, with an injectable wall clock,
monotonic clock and clock trust. A recording lock port checks that every relay command came
from a decision that granted (the in-process half of the unintended-release audit).
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
ALL_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ScriptedClock:
    """A ClockTrust stand-in: trusted or not as the scenario says, and never before not_before."""

    def __init__(self, trusted: bool = True) -> None:
        self.is_trusted = trusted

    def trusted(self, now: datetime | None = None) -> bool:
        return self.is_trusted


class RecordingLock:
    """Forwards to the real relay and counts releases, so each can be matched to a grant."""

    def __init__(self, relay: Any) -> None:
        self.relay, self.releases = relay, 0

    @property
    def released(self) -> bool:
        return self.relay.released

    def release(self, seconds: float | None = None) -> None:
        self.releases += 1
        self.relay.release(seconds)

    def lock(self) -> None:
        self.relay.lock()


class Door:
    """A door with `days` open 09:00-18:00 Paris time; `at` sets the wall clock."""

    def __init__(self, root: Path, *, days: tuple[str, ...] = ALL_DAYS, clock: Any = None,
                 limit: int = 5, window_s: float = 30.0, lockout_s: float = 60.0) -> None:
        from gpiozero.pins.mock import MockFactory

        from accessd.credentials import CredentialHasher
        from accessd.daemon.controller import DoorController
        from accessd.door.lock import LockRelay
        from accessd.guard import UnknownCardGuard
        from accessd.schedule import Schedule
        from accessd.store.journal import Journal
        from accessd.store.rules import RuleCache

        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.factory = MockFactory()
        self.relay = LockRelay(17, release_s=3, pin_factory=self.factory)
        self.lock = RecordingLock(self.relay)
        self.rules = RuleCache(root / "rules.db")
        self.journal = Journal(root / "journal.db", "faults", "front")
        self.hasher = CredentialHasher(b"k" * 32)
        self.clock = clock or ScriptedClock()
        self.now = datetime(2026, 6, 1, 12, tzinfo=PARIS)
        self.mono = 1000.0
        self.schedule = Schedule(PARIS, time(9), time(18), frozenset(days), frozenset())
        self.controller = DoorController(
            site="faults", door="front", rules=self.rules, journal=self.journal,
            hasher=self.hasher, clock=self.clock, schedule=self.schedule, lock=self.lock,
            release_s=3, guard_factory=lambda: UnknownCardGuard(limit, window_s, lockout_s),
            monotonic=lambda: self.mono, wallclock=lambda: self.now)
        self.grants = 0
        self._uids = itertools.count(0x3300000000)

    def member(self, plan: str, *, valid_from: date | None = None,
               valid_until: date | None = None) -> str:
        from accessd.decision import Plan

        uid = f"{next(self._uids):010X}"
        self.rules.enroll(name=f"{plan} {uid[-4:]}", plan=Plan(plan),
                          credential_hash=self.hasher(uid), valid_from=valid_from,
                          valid_until=valid_until)
        return uid

    def tap(self, uid: str, direction: str = "entry") -> Any:
        from accessd.readers.base import CardRead

        decision = self.controller.on_card(CardRead("door", uid, "simulated",
                                                    direction=direction))  # type: ignore[arg-type]
        if decision is not None and decision.granted:
            self.grants += 1
        return decision

    def restart(self) -> Door:
        """A new controller on the same files (what a reboot sees)."""
        self.close()
        door = Door(self.root, days=tuple(self.schedule.days), clock=self.clock)
        return door

    def settle(self) -> None:
        """Wait until every event recorded so far is journalled (the controller's writer
        commits off the tap's path): before reading the journal."""
        if not self.controller.flush(30):
            raise RuntimeError("the journal did not take the door's events")

    def unexplained_releases(self) -> int:
        return max(0, self.lock.releases - self.grants)

    def close(self) -> None:
        self.controller.close()  # the writer commits what it holds first
        self.relay.close()
        self.rules.close()
        self.journal.close()
        self.factory.close()
