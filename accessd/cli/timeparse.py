"""Instants as a host types them (`today`, `monday`, `24h`, `2026-11-02 08:00`) and as a host
reads them (site time with its zone).

The command line is parsed before the configuration is read, so a typed instant is first a
`TimeSpec` (its syntax checked, a clear error at once) and becomes an instant only once the
site's time zone is known (`resolve`). A date or time without an offset is site time, never
the machine's or UTC: the host thinks in the door's time.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_AGE = re.compile(r"(\d{1,6})\s*([smhdw])")
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?")
FORMS = ("today, yesterday, a weekday (monday), a date (2026-11-02), a date and time "
         "(2026-11-02 08:00, 2026-11-02T08:00+01:00), a time today (08:00) or an age "
         "(30m, 24h, 7d, 2w)")


@dataclass(frozen=True)
class TimeSpec:
    """What was typed, checked for syntax; an instant once the site's zone is known."""

    text: str
    kind: str  # "day" | "weekday" | "date" | "datetime" | "clock" | "age"
    value: object

    def resolve(self, tz: tzinfo, now: datetime | None = None) -> datetime:
        """The instant meant, in UTC. Days start at 00:00 site time; a weekday is its most
        recent occurrence (today included)."""
        now = (now or datetime.now(UTC)).astimezone(tz)
        today = now.date()
        if self.kind == "age":
            assert isinstance(self.value, timedelta)
            return (now - self.value).astimezone(UTC)
        if self.kind == "day":
            assert isinstance(self.value, int)
            return _midnight(today - timedelta(days=self.value), tz)
        if self.kind == "weekday":
            assert isinstance(self.value, int)
            back = (today.weekday() - self.value) % 7
            return _midnight(today - timedelta(days=back), tz)
        if self.kind == "date":
            assert isinstance(self.value, date)
            return _midnight(self.value, tz)
        if self.kind == "clock":
            assert isinstance(self.value, time)
            return _local(datetime.combine(today, self.value), tz)
        assert isinstance(self.value, datetime)
        if self.value.tzinfo is None:
            return _local(self.value, tz)
        return self.value.astimezone(UTC)


def _midnight(day: date, tz: tzinfo) -> datetime:
    return _local(datetime.combine(day, time(0)), tz)


def _local(naive: datetime, tz: tzinfo) -> datetime:
    """A wall-clock time of the site as an instant (the first one, when clocks go back)."""
    return naive.replace(tzinfo=tz).astimezone(UTC)


def parse_when(text: str) -> TimeSpec:
    """Check what a host typed for --since/--until; ArgumentTypeError naming the forms."""
    t = " ".join(text.strip().lower().split())
    if t in ("today", "now"):
        return TimeSpec(text, "age", timedelta(0)) if t == "now" else TimeSpec(text, "day", 0)
    if t == "yesterday":
        return TimeSpec(text, "day", 1)
    for i, name in enumerate(WEEKDAYS):
        if len(t) >= 3 and name.startswith(t):
            return TimeSpec(text, "weekday", i)
    parts = _AGE.findall(t)
    if parts and "".join(f"{n}{u}" for n, u in parts) == t.replace(" ", ""):
        age = sum((timedelta(**{_UNITS[u]: int(n)}) for n, u in parts), timedelta())
        return TimeSpec(text, "age", age)
    m = _CLOCK.fullmatch(t)
    if m:
        return TimeSpec(text, "clock", time(int(m[1]), int(m[2]), int(m[3] or 0)))
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", t):
            return TimeSpec(text, "date", date.fromisoformat(t))
        return TimeSpec(text, "datetime", datetime.fromisoformat(t.upper().replace("Z",
                                                                                  "+00:00")))
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not a time: use {FORMS}")


def local_time(ts: datetime, tz: tzinfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """An instant as a person reads it: site time followed by the zone's name (CET, CEST) or,
    where the zone has none, its offset."""
    local = ts.astimezone(tz)
    return f"{local.strftime(fmt)} {zone_name(local)}"


def zone_name(local: datetime) -> str:
    name = local.tzname() or ""
    if name and not name.startswith(("+", "-")):
        return name
    return local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:]


def when_words(ts: datetime, tz: tzinfo, now: datetime | None = None) -> str:
    """"at 18:02 CET" today, "yesterday at 18:02 CET", else "on 2026-11-02 at 18:02 CET"."""
    local = ts.astimezone(tz)
    today = (now or datetime.now(UTC)).astimezone(tz).date()
    at = f"at {local:%H:%M} {zone_name(local)}"
    if local.date() == today:
        return at
    if local.date() == today - timedelta(days=1):
        return f"yesterday {at}"
    return f"on {local:%Y-%m-%d} {at}"
