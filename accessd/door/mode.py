"""A door's mode: locked (cards decide), held unlocked by its schedule, or held by the host.

Pure: the controller asks `DoorMode.evaluate` on every tick and drives the relay from the
answer, journalling each change (`door.mode`). The rules, in order:

1. the host's hold wins: `open` holds the door released, `locked` keeps it locked (the
   schedule suspended), both until further notice (`accessd door-mode`);
2. without an unlock schedule the door is locked;
3. without trusted time no schedule unlocks anything (a Pi without a battery clock believes
   it is any time at all after a power cut): the door stays locked and cards are decided as
   usual;
4. on the schedule's days, outside the site's closures, in [start, end) site time: unlocked,
   with `first_in` only once a subscriber was granted at this door or the host opened it
   that (local) day.

Cards keep being decided in every mode: an entry while the door is held unlocked is still a
grant or a denial in the journal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from accessd.config import UnlockConfig
from accessd.schedule import WEEKDAYS, Schedule


class Mode(StrEnum):
    LOCKED = "locked"  # the normal state: released only for a passage
    UNLOCKED = "unlocked"  # held released by the unlock schedule
    HELD_OPEN = "held_open"  # held released by the host until further notice
    HELD_LOCKED = "held_locked"  # kept locked by the host until further notice


RELEASED = frozenset({Mode.UNLOCKED, Mode.HELD_OPEN})  # the modes that energise the relay


class Hold(StrEnum):
    """What the host asked (accessd door-mode)."""

    NONE = "auto"
    OPEN = "open"
    LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class ModeState:
    mode: Mode
    why: str  # in the journal: what put the door in this mode


@dataclass
class DoorMode:
    """One door's mode inputs: its unlock schedule, the host's hold, the first-in day."""

    unlock: UnlockConfig | None
    hold: Hold = Hold.NONE
    first_in_day: date | None = None  # the local day a subscriber or the host came in

    def evaluate(self, now: datetime, trusted: bool, schedule: Schedule) -> ModeState:
        if self.hold is Hold.OPEN:
            return ModeState(Mode.HELD_OPEN, "host")
        if self.hold is Hold.LOCKED:
            return ModeState(Mode.HELD_LOCKED, "host")
        u = self.unlock
        if u is None:
            return ModeState(Mode.LOCKED, "no_schedule")
        if not trusted:
            return ModeState(Mode.LOCKED, "clock_untrusted")
        local = schedule.local(now)
        day = local.date()
        if day in schedule.closures or WEEKDAYS[day.weekday()] not in u.days:
            return ModeState(Mode.LOCKED, "closed_day")
        if not u.start <= local.time().replace(tzinfo=None) < u.end:
            return ModeState(Mode.LOCKED, "outside_hours")
        if u.first_in and self.first_in_day != day:
            return ModeState(Mode.LOCKED, "waiting_first_in")
        return ModeState(Mode.UNLOCKED, "schedule")

    def came_in(self, now: datetime, trusted: bool, schedule: Schedule) -> bool:
        """A subscriber was granted, or the host opened the door: the first in of its local
        day (only a trusted clock says which day). True when that is news."""
        if not trusted or self.unlock is None or not self.unlock.first_in:
            return False
        day = schedule.local(now).date()
        if self.first_in_day == day:
            return False
        self.first_in_day = day
        return True
