"""Opening hours: when occasional members may enter. Pure; local time of the site.

The interval is half-open: at 09:00:00 the site is open, at 18:00:00 it is closed. Comparing
local wall-clock times makes daylight-saving changes right by construction: 09:00 is 09:00 on
the day the clocks go forward and on the day they go back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


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
    def from_dict(cls, data: dict[str, object]) -> Schedule:
        return cls(
            tz=ZoneInfo(str(data["timezone"])),
            opens=time.fromisoformat(str(data["opens"])),
            closes=time.fromisoformat(str(data["closes"])),
            days=frozenset(str(d) for d in data["days"]),  # type: ignore[union-attr]
            closures=frozenset(date.fromisoformat(str(d)) for d in data["closures"]),  # type: ignore[union-attr]
        )
