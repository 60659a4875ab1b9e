"""Billing and occupancy from the stored events: occasional members' hours, recent entries.

A visit starts at a granted entry and ends at the member's next exit by card. Exit buttons
do not say who left, so a visit with no exit that day is closed at the end of opening hours
and marked so: the operator bills up to closing time, and can see which visits were guessed.
Times are the site's local time; months are local months.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from accessd.central.store import CentralStore
from accessd.events import format_ts, parse_ts
from accessd.schedule import Schedule

DEFAULT_SCHEDULE = {"timezone": "Europe/Paris", "opens": "09:00", "closes": "18:00",
                    "days": ["mon", "tue", "wed", "thu", "fri"], "closures": []}


@dataclass(frozen=True)
class Visit:
    member_id: str
    member_name: str
    door: str
    start: datetime
    end: datetime
    closed_by: str  # "exit" or "closing_time"

    @property
    def hours(self) -> float:
        return max(0.0, (self.end - self.start).total_seconds() / 3600)


def site_schedule(store: CentralStore, site: str) -> Schedule:
    """The schedule the site's doors apply: the office's, else the default opening hours."""
    import json

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


def visits(events: Iterable[dict[str, Any]], schedule: Schedule) -> list[Visit]:
    """Pair each member's entries and exits (events in time order, granted only)."""
    open_: dict[str, tuple[datetime, str, str]] = {}
    out: list[Visit] = []

    def close_at_closing(mid: str) -> None:
        start, name, door = open_.pop(mid)
        end = schedule.closing_time(schedule.local(start).date())
        out.append(Visit(mid, name, door, start, max(start, end), "closing_time"))

    for e in events:
        mid = e.get("member_id")
        if not mid or e.get("result") != "granted":
            continue
        ts = parse_ts(e["ts"])
        if mid in open_ and schedule.local(ts).date() > schedule.local(open_[mid][0]).date():
            close_at_closing(mid)  # yesterday's visit never saw an exit
        if _is_exit(e):
            if mid in open_:
                start, name, door = open_.pop(mid)
                out.append(Visit(mid, name, door, start, ts, "exit"))
        elif mid not in open_:
            open_[mid] = (ts, e.get("member_name") or mid, e["door"])
    for mid in list(open_):
        close_at_closing(mid)
    return sorted(out, key=lambda v: (v.start, v.member_id))


def month_range(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    first = date.fromisoformat(month + "-01")
    nxt = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return (datetime.combine(first, time(0), tzinfo=tz),
            datetime.combine(nxt, time(0), tzinfo=tz))


def monthly_visits(store: CentralStore, site: str, month: str) -> list[Visit]:
    """Occasional members' visits that started in `month` (YYYY-MM, local time)."""
    schedule = site_schedule(store, site)
    start, end = month_range(month, schedule.tz)
    events = store.events(site, since=format_ts(start), until=format_ts(end + timedelta(days=1)),
                          types=["access.granted"])
    occasional = [e for e in events if e.get("plan") == "occasional"]
    return [v for v in visits(occasional, schedule) if start <= v.start < end]


def monthly_booked(store: CentralStore, site: str, month: str) -> dict[str, float]:
    """Occasional members' booked hours of meeting rooms in `month` (bookings not cancelled,
    counted in the month they start, site local time): member id -> hours."""
    schedule = site_schedule(store, site)
    start, end = month_range(month, schedule.tz)
    occasional = {m["id"] for m in store.members(site) if m["plan"] == "occasional"}
    out: dict[str, float] = {}
    for b in store.rooms.bookings(site, since=start - timedelta(days=31), until=end):
        begins = parse_ts(b["start"])
        if b["member_id"] in occasional and start <= begins < end:
            out[b["member_id"]] = out.get(b["member_id"], 0.0) + (
                parse_ts(b["end"]) - begins).total_seconds() / 3600
    return out


def monthly_hours(store: CentralStore, site: str, month: str) -> list[dict[str, Any]]:
    """One line per occasional member: visits, measured hours, how many visits had no exit,
    booked hours, and the hours billed by the site's setting (`billing`: measured or
    booked; docs/central.md)."""
    totals: dict[str, dict[str, Any]] = {}
    billing = store.rooms.settings(site)["billing"]
    names = {m["id"]: m["name"] for m in store.members(site)}

    def line(member_id: str, name: str) -> dict[str, Any]:
        return totals.setdefault(member_id, {
            "site": site, "month": month, "member_id": member_id,
            "member_name": name, "visits": 0, "hours": 0.0,
            "visits_closed_at_closing_time": 0, "booked_hours": 0.0, "billing": billing,
            "billed_hours": 0.0})

    for v in monthly_visits(store, site, month):
        row = line(v.member_id, v.member_name)
        row["visits"] += 1
        row["hours"] += v.hours
        row["visits_closed_at_closing_time"] += v.closed_by == "closing_time"
    for member_id, hours in monthly_booked(store, site, month).items():
        line(member_id, names.get(member_id, member_id))["booked_hours"] += hours
    for row in totals.values():
        row["hours"] = round(row["hours"], 2)
        row["booked_hours"] = round(row["booked_hours"], 2)
        row["billed_hours"] = row["booked_hours" if billing == "booked" else "hours"]
    return sorted(totals.values(), key=lambda r: (r["member_name"].lower(), r["member_id"]))


def recent_entries(store: CentralStore, site: str, *, since: datetime | None = None,
                   door: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The latest access decisions at a site, newest first."""
    return store.events(site, since=format_ts(since) if since else None, door=door,
                        types=["access.granted", "access.denied"], limit=limit,
                        newest_first=True)
