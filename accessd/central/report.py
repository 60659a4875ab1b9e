"""Billing and occupancy from the stored events: occasional members' hours, recent entries.

A visit starts at a granted entry and ends at the member's next exit by card. Exit buttons
do not say who left, so a visit with no exit that day is closed at the end of opening hours
and marked so: the operator bills up to closing time, and can see which visits were guessed.
A visit whose closing time has not come yet is *in progress* and billed once it is closed
(with a single entry reader, every visit of today until closing time). Times are the site's
local time; months are local months.

The opening hours are the office's (the site's published schedule). A door that admits
occasional members at other hours (its own `[schedule]`) makes visits the office cannot
close: one that begins at or after the office's closing time and never sees an exit has no
known end. It is not billed (never a silent 0.00 h) and the report warns about every visit
that began outside the office's hours.

Occasional members may also book meeting rooms (accessd.central.rooms): the report shows
their booked hours (bookings not cancelled, counted in the month they start) beside the
measured ones, and bills one or the other as the site says (`accessd central site --billing
measured|booked`, default measured): `billing` and `billed_hours` in each row.

Library API (the CLI and the office's web pages use the same path): `monthly_billing` gives
everything; `monthly_hours` and `monthly_visits` are its per-member rows and billed visits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from accessd.central.store import CentralStore
from accessd.errors import ScheduleError, UnknownSite
from accessd.events import format_ts, parse_ts
from accessd.schedule import Schedule

DEFAULT_SCHEDULE = {"timezone": "Europe/Paris", "opens": "09:00", "closes": "18:00",
                    "days": ["mon", "tue", "wed", "thu", "fri"], "closures": []}

#: the CSV columns, the same whether a month has visits or not
HOURS_COLUMNS = ("site", "month", "member_id", "member_name", "visits", "hours",
                 "visits_closed_at_closing_time", "visits_without_end", "booked_hours",
                 "billing", "billed_hours")
VISIT_COLUMNS = ("member_id", "member_name", "door", "entered_at", "left_at", "hours",
                 "closed_by")

EXIT, CLOSING_TIME = "exit", "closing_time"
IN_PROGRESS = "in_progress"  # no exit yet, closing time still to come: billed once closed
NO_END = "no_end"  # no exit, began at or after the office's closing time: end unknown
BILLED = frozenset({EXIT, CLOSING_TIME})


@dataclass(frozen=True)
class Visit:
    member_id: str
    member_name: str
    door: str
    start: datetime
    end: datetime  # the exit, the closing time (also the end to come of one in progress)
    closed_by: str  # exit, closing_time, in_progress or no_end

    @property
    def billed(self) -> bool:
        return self.closed_by in BILLED

    @property
    def hours(self) -> float:
        """Hours billed: 0 for a visit in progress or without a known end."""
        if not self.billed:
            return 0.0
        return max(0.0, (self.end - self.start).total_seconds() / 3600)


@dataclass(frozen=True)
class MonthlyBilling:
    """One site's month: billed visits, those not billed (yet), warnings for the operator."""

    site: str
    month: str
    schedule: Schedule
    visits: list[Visit]  # every visit that began in the month, in time order
    warnings: list[str] = field(default_factory=list)
    booked: dict[str, tuple[str, float]] = field(default_factory=dict)  # id: (name, hours)
    billing: str = "measured"  # what is billed: measured use or booked hours

    @property
    def billed(self) -> list[Visit]:
        return [v for v in self.visits if v.billed]

    @property
    def in_progress(self) -> list[Visit]:
        return [v for v in self.visits if v.closed_by == IN_PROGRESS]

    @property
    def without_end(self) -> list[Visit]:
        return [v for v in self.visits if v.closed_by == NO_END]

    def rows(self) -> list[dict[str, Any]]:
        """One row per occasional member (HOURS_COLUMNS), by name."""
        totals: dict[str, dict[str, Any]] = {}

        def line(member_id: str, name: str) -> dict[str, Any]:
            return totals.setdefault(member_id, dict.fromkeys(HOURS_COLUMNS, 0) | {
                "site": self.site, "month": self.month, "member_id": member_id,
                "member_name": name, "hours": 0.0, "booked_hours": 0.0,
                "billing": self.billing})

        for v in self.visits:
            if v.closed_by == IN_PROGRESS:
                continue
            row = line(v.member_id, v.member_name)
            if v.billed:
                row["visits"] += 1
                row["hours"] += v.hours
                row["visits_closed_at_closing_time"] += v.closed_by == CLOSING_TIME
            else:
                row["visits_without_end"] += 1
        for member_id, (name, hours) in self.booked.items():
            line(member_id, name)["booked_hours"] += hours
        for row in totals.values():
            row["hours"] = round(row["hours"], 2)
            row["booked_hours"] = round(row["booked_hours"], 2)
            row["billed_hours"] = row["booked_hours" if self.billing == "booked" else "hours"]
        return sorted(totals.values(), key=lambda r: (r["member_name"].lower(), r["member_id"]))


def known_site(store: CentralStore, site: str) -> bool:
    """A site the office knows: set up, with a registered door, or with stored events."""
    return bool(store.site(site) or store.door_keys(site) or store.stored_seq(site)
                or store.events(site, limit=1))


def site_schedule(store: CentralStore, site: str) -> Schedule:
    """The schedule the site's doors apply: the office's, else the default opening hours."""
    info = store.site(site) or {}
    data = info.get("schedule")
    if data is None:
        latest = store.latest_snapshot(site)
        data = json.loads(latest)["payload"].get("schedule") if latest else None
    data = dict(data or DEFAULT_SCHEDULE)
    if info.get("timezone"):
        data["timezone"] = info["timezone"]
    return Schedule.from_dict(data)


def _is_exit(e: dict[str, Any]) -> bool:
    return e["reason"] == "exit" or (e.get("detail") or {}).get("direction") == "exit"


def visits(events: Iterable[dict[str, Any]], schedule: Schedule,
           now: datetime | None = None) -> list[Visit]:
    """Pair each member's entries and exits (events in time order, granted only).

    A visit without an exit ends at its day's closing time: `closing_time` once that has
    passed (`now`, default: not known, every such visit closed), `in_progress` before, and
    `no_end` when it began at or after closing time."""
    open_: dict[str, tuple[datetime, str, str]] = {}
    out: list[Visit] = []

    def close_without_exit(mid: str) -> None:
        start, name, door = open_.pop(mid)
        end = schedule.closing_time(schedule.local(start).date())
        if end <= start:
            out.append(Visit(mid, name, door, start, start, NO_END))
        elif now is not None and end > now:
            out.append(Visit(mid, name, door, start, end, IN_PROGRESS))
        else:
            out.append(Visit(mid, name, door, start, end, CLOSING_TIME))

    for e in events:
        mid = e.get("member_id")
        if not mid or e.get("result") != "granted":
            continue
        ts = parse_ts(e["ts"])
        if mid in open_ and schedule.local(ts).date() > schedule.local(open_[mid][0]).date():
            close_without_exit(mid)  # yesterday's visit never saw an exit
        if _is_exit(e):
            if mid in open_:
                start, name, door = open_.pop(mid)
                out.append(Visit(mid, name, door, start, ts, EXIT))
        elif mid not in open_:
            open_[mid] = (ts, e.get("member_name") or mid, e["door"])
    for mid in list(open_):
        close_without_exit(mid)
    return sorted(out, key=lambda v: (v.start, v.member_id))


def month_range(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    try:
        if len(month) != 7:
            raise ValueError(month)
        first = date.fromisoformat(month + "-01")
    except ValueError:
        raise ScheduleError(f"month: expected YYYY-MM (2026-11), got {month!r}") from None
    nxt = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return (datetime.combine(first, time(0), tzinfo=tz),
            datetime.combine(nxt, time(0), tzinfo=tz))


def outside_hours_warning(visits_: list[Visit], schedule: Schedule) -> str | None:
    """Say so when visits began outside the office's opening hours: the door's hours differ
    from the office's, and visits after closing time have no end to bill."""
    outside = [v for v in visits_ if v.closed_by != IN_PROGRESS and (
        schedule.is_closed_day(schedule.local(v.start).date())
        or not schedule.within_hours(schedule.local(v.start)))]
    if not outside:
        return None
    from accessd.words import hours_words

    first = schedule.local(outside[0].start)
    no_end = sum(v.closed_by == NO_END for v in outside)
    text = (f"{len(outside)} visit{'s' if len(outside) > 1 else ''} began outside the "
            f"office's opening hours ({hours_words(schedule)}, {schedule.tz.key}), the first "
            f"by {outside[0].member_name} on {first:%Y-%m-%d %H:%M %Z}: the door admits "
            "occasional members at other hours than the office bills")
    if no_end:
        text += (f"; {no_end} of them had no exit after closing time and are not billed "
                 "(visits_without_end)")
    return (text + ". Publish the door's hours at the office (accessd central site --opens "
                   "--closes --days) or correct [schedule] in the door's accessd.toml")


def monthly_billing(store: CentralStore, site: str, month: str,
                    now: datetime | None = None) -> MonthlyBilling:
    """Occasional members' visits that began in `month` (YYYY-MM, local time), as of `now`.

    Raises UnknownSite for a site the office does not know, ScheduleError for a bad month."""
    if not known_site(store, site):
        raise UnknownSite(f"unknown site {site!r}: no site, door or event of that id in this "
                          "store (accessd central site --site … sets one up)")
    schedule = site_schedule(store, site)
    start, end = month_range(month, schedule.tz)
    now = now or datetime.now(UTC)
    events = store.events(site, since=format_ts(start), until=format_ts(end + timedelta(days=1)),
                          types=["access.granted"])
    occasional = [e for e in events if e.get("plan") == "occasional"]
    found = [v for v in visits(occasional, schedule, now) if start <= v.start < end]
    warning = outside_hours_warning(found, schedule)
    return MonthlyBilling(site, month, schedule, found, [warning] if warning else [],
                          monthly_booked(store, site, start, end),
                          store.rooms.settings(site)["billing"])


def monthly_booked(store: CentralStore, site: str, start: datetime, end: datetime
                   ) -> dict[str, tuple[str, float]]:
    """Occasional members' booked hours of meeting rooms that start in [start, end) (not
    cancelled): member id -> (name, hours)."""
    members = {m["id"]: m for m in store.members(site)}
    out: dict[str, tuple[str, float]] = {}
    for b in store.rooms.bookings(site, since=start - timedelta(days=31), until=end):
        member = members.get(b["member_id"])
        begins = parse_ts(b["start"])
        if member is None or member["plan"] != "occasional" or not start <= begins < end:
            continue
        name, hours = out.get(b["member_id"], (member["name"], 0.0))
        out[b["member_id"]] = (name, hours + (parse_ts(b["end"]) - begins).total_seconds()
                               / 3600)
    return out


def monthly_visits(store: CentralStore, site: str, month: str,
                   now: datetime | None = None) -> list[Visit]:
    """The billed visits of occasional members that began in `month` (closed ones only)."""
    return monthly_billing(store, site, month, now).billed


def monthly_hours(store: CentralStore, site: str, month: str,
                  now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per occasional member (HOURS_COLUMNS): visits and hours billed, how many were
    closed at closing time, how many have no known end."""
    return monthly_billing(store, site, month, now).rows()


def recent_entries(store: CentralStore, site: str, *, since: datetime | None = None,
                   door: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The latest access decisions at a site, newest first."""
    return store.events(site, since=format_ts(since) if since else None, door=door,
                        types=["access.granted", "access.denied"], limit=limit,
                        newest_first=True)
