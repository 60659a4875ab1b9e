"""Opening hours: when occasional members may enter. Pure; local time of the site.

The interval is half-open: at 09:00:00 the site is open, at 18:00:00 it is closed. Comparing
local wall-clock times makes daylight-saving changes right by construction: 09:00 is 09:00 on
the day the clocks go forward and on the day they go back.

A schedule and a member's validity dates arrive from the office as text. `Schedule.from_dict`
and `check_calendar` check what that text *means* (a zone zoneinfo knows, days on the calendar,
hours in order) so that a typo such as `Europe/Pariss` or 2026-02-30 is refused whole before
anything is committed, at the office before signing and at the door before applying.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from accessd.errors import ScheduleError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")  # ASCII digits only (\d is Unicode)
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])\Z")


def parse_zone(value: object, field: str = "timezone") -> ZoneInfo:
    """A time zone zoneinfo knows (`Europe/Paris`), else ScheduleError naming `field`."""
    if not isinstance(value, str) or not value:
        raise ScheduleError(f"{field}: expected a time zone name, got {value!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        raise ScheduleError(f"{field}: unknown time zone {value!r}") from None


def parse_day(value: object, field: str) -> date:
    """A real calendar day written YYYY-MM-DD (2026-02-30 is refused), else ScheduleError."""
    if not isinstance(value, str) or not _DAY.match(value):
        raise ScheduleError(f"{field}: expected a date as YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ScheduleError(f"{field}: {value!r} is not a day of the calendar") from None


def parse_hhmm(value: object, field: str) -> time:
    m = _HHMM.match(value) if isinstance(value, str) else None
    if m is None:
        raise ScheduleError(f"{field}: expected HH:MM (00:00-23:59), got {value!r}")
    return time(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True, slots=True)
class Schedule:
    tz: ZoneInfo
    opens: time
    closes: time
    days: frozenset[str]
    closures: frozenset[date]

    def local(self, instant: datetime) -> datetime:
        if instant.tzinfo is None:
            raise ValueError("instants must be timezone-aware")
        return instant.astimezone(self.tz)

    def is_closed_day(self, day: date) -> bool:
        return day in self.closures or WEEKDAYS[day.weekday()] not in self.days

    def within_hours(self, local: datetime) -> bool:
        return self.opens <= local.time().replace(tzinfo=None) < self.closes

    def closing_time(self, day: date) -> datetime:
        """The instant the site closes on `day` (used to close visits that lack an exit)."""
        return datetime.combine(day, self.closes, tzinfo=self.tz)

    def to_dict(self) -> dict[str, object]:
        return {
            "timezone": self.tz.key,
            "opens": self.opens.strftime("%H:%M"),
            "closes": self.closes.strftime("%H:%M"),
            "days": [d for d in WEEKDAYS if d in self.days],
            "closures": sorted(d.isoformat() for d in self.closures),
        }

    @classmethod
    def from_dict(cls, data: object) -> Schedule:
        """A schedule from its wire form; ScheduleError (a ValueError) names the first bad field."""
        if not isinstance(data, Mapping):
            raise ScheduleError(f"schedule: expected an object, got {type(data).__name__}")
        missing = [k for k in ("timezone", "opens", "closes", "days", "closures")
                   if k not in data]
        if missing:
            raise ScheduleError(f"schedule.{missing[0]}: missing")
        opens = parse_hhmm(data["opens"], "schedule.opens")
        closes = parse_hhmm(data["closes"], "schedule.closes")
        if closes <= opens:
            raise ScheduleError(f"schedule.closes: {data['closes']!r} is not after "
                                f"opens {data['opens']!r}")
        days, closures = data["days"], data["closures"]
        if not isinstance(days, list) or not all(d in WEEKDAYS for d in days):
            raise ScheduleError(f"schedule.days: expected a list of {', '.join(WEEKDAYS)}, "
                                f"got {days!r}"[:200])
        if not isinstance(closures, list):
            raise ScheduleError(f"schedule.closures: expected a list of dates, got {closures!r}"
                                [:200])
        return cls(
            tz=parse_zone(data["timezone"], "schedule.timezone"),
            opens=opens,
            closes=closes,
            days=frozenset(days),
            closures=frozenset(parse_day(d, "schedule.closures") for d in closures),
        )


def check_calendar(doc: Mapping[str, Any]) -> None:
    """Refuse a rule document whose calendar means nothing: raise ScheduleError.

    Checks the schedule, if the document has one, and every member's validity dates. The
    door calls it before committing a document (accessd.uplink.rulesync); the office can call
    it before signing one.
    """
    if doc.get("schedule") is not None:
        Schedule.from_dict(doc["schedule"])
    for m in doc.get("members") or ():
        for key in ("valid_from", "valid_until"):
            if m.get(key) is not None:
                parse_day(m[key], f"member {m.get('id')!r}: {key}")
