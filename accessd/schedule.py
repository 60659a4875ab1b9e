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
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from accessd.errors import ScheduleError

if TYPE_CHECKING:  # decision imports this module: its records are imported where used
    from accessd.decision import Booking, DoorAccess, Window

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")  # ASCII digits only (\d is Unicode)
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])\Z")
_INSTANT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")


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

    Checks the schedule, if the document has one, every member's validity dates, every
    right's window and dates, every booking's instants and the doors' closures. The door
    calls it before committing a document (accessd.uplink.rulesync); the office calls it
    before signing one.
    """
    if doc.get("schedule") is not None:
        Schedule.from_dict(doc["schedule"])
    for m in doc.get("members") or ():
        for key in ("valid_from", "valid_until"):
            if m.get(key) is not None:
                parse_day(m[key], f"member {m.get('id')!r}: {key}")
    for r in doc.get("rights") or ():
        parse_window(r, f"right {r.get('id')!r}")
    for b in doc.get("bookings") or ():
        parse_booking(b, f"booking {b.get('id')!r}")
    if doc.get("access") is not None:
        door_access(doc["access"], None)


def _minutes(value: object, field: str, *, end: bool = False) -> int:
    if end and value == "24:00":
        return 24 * 60
    t = parse_hhmm(value, field)
    return t.hour * 60 + t.minute


def parse_window(row: Mapping[str, Any], what: str = "right") -> Window:
    """A right or restriction from its stored or wire form; ScheduleError if it means
    nothing (an impossible date, a window that ends before it starts, an unknown day)."""
    from accessd.decision import EVERY_DAY, Window

    days = row.get("days")
    mask = EVERY_DAY
    if days is not None:
        names = str(days).split(",")
        if not names or any(d not in WEEKDAYS for d in names):
            raise ScheduleError(f"{what}: days: expected weekdays, got {days!r}")
        mask = sum(1 << WEEKDAYS.index(d) for d in set(names))
    start = _minutes(row["start"], f"{what}: start") if row.get("start") is not None else 0
    end = _minutes(row["end"], f"{what}: end", end=True) if row.get("end") is not None \
        else 24 * 60
    if end <= start:
        raise ScheduleError(f"{what}: end {row.get('end')!r} is not after start "
                            f"{row.get('start')!r}")
    vfrom = parse_day(row["valid_from"], f"{what}: valid_from") \
        if row.get("valid_from") is not None else None
    vuntil = parse_day(row["valid_until"], f"{what}: valid_until") \
        if row.get("valid_until") is not None else None
    if vfrom and vuntil and vuntil < vfrom:
        raise ScheduleError(f"{what}: valid_until is before valid_from")
    effect = row.get("effect")
    if effect not in ("allow", "deny"):
        raise ScheduleError(f"{what}: effect: expected allow or deny, got {effect!r}")
    return Window(effect == "allow", str(row.get("door") or "*"), mask, start, end, vfrom,
                  vuntil)


def parse_instant(value: object, field: str) -> datetime:
    """A wire instant (YYYY-MM-DDTHH:MM:SSZ), aware; ScheduleError otherwise."""
    if not isinstance(value, str) or not _INSTANT.match(value):
        raise ScheduleError(f"{field}: expected YYYY-MM-DDTHH:MM:SSZ, got {value!r}")
    try:
        return datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise ScheduleError(f"{field}: {value!r} is not an instant") from None


def parse_booking(row: Mapping[str, Any], what: str = "booking") -> Booking:
    from accessd.decision import Booking

    start = parse_instant(row.get("start"), f"{what}: start")
    end = parse_instant(row.get("end"), f"{what}: end")
    if end <= start:
        raise ScheduleError(f"{what}: end is not after start")
    return Booking(str(row.get("door")), start, end)


def door_access(data: object, door: str | None) -> DoorAccess:
    """What the rule document's `access` (the site's doors, each plan's doors, the bookings'
    lead time) means for `door`; ScheduleError naming the first value that means nothing."""
    from accessd.decision import DoorAccess, Plan

    if not isinstance(data, Mapping):
        raise ScheduleError(f"access: expected an object, got {type(data).__name__}")
    doors = data.get("doors") or []
    plans = data.get("plans") or {}
    lead = data.get("booking_lead_min", 0)
    if not isinstance(doors, list) or not isinstance(plans, Mapping):
        raise ScheduleError("access: doors must be a list and plans an object")
    if type(lead) is not int or not 0 <= lead <= 1440:
        raise ScheduleError(f"access: booking_lead_min: 0 to 1440 minutes, got {lead!r}")
    mine: Mapping[str, Any] = {}
    for d in doors:
        if not isinstance(d, Mapping) or not isinstance(d.get("id"), str):
            raise ScheduleError(f"access: doors: expected objects with an id, got {d!r}"[:200])
        closures = d.get("closures") or []
        if not isinstance(closures, list):
            raise ScheduleError(f"access: door {d['id']!r}: closures must be a list")
        for c in closures:
            parse_day(c, f"access: door {d['id']!r}: closures")
        if d["id"] == door:
            mine = d
    allowed = set()
    for plan in ("subscriber", "occasional"):
        listed = plans.get(plan, ["*"])
        if not isinstance(listed, list):
            raise ScheduleError(f"access: plans.{plan}: expected a list of doors")
        if "*" in listed or door in listed:
            allowed.add(Plan(plan))
    return DoorAccess(door, frozenset(allowed), mine.get("kind") == "entrance",
                      frozenset(date.fromisoformat(c) for c in mine.get("closures") or ()),
                      timedelta(minutes=lead))
