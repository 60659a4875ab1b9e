"""The council's usage report: per site and month, who came, how often, how long, and when.

Computed from the granted entries with the billing report's own visit pairing
(`accessd.central.report.visits`: an entry opens a visit, the member's exit by card closes it,
else the day's closing time), subscribers and occasional members apart:

- `active`: members of the plan with at least one entry in the month (what the council counts
  against its target of subscribers);
- `visits`, `hours`, `unique` (unique visitors);
- `heat`: average number of people present per weekday x hour (a visit's time spread over
  the hours it covers, divided by how many such weekdays the month has);
- `days`: unique visitors per day of the month.

A month that ended more than `FREEZE_AFTER` ago is computed once and kept in `usage_months`
(counts only, no names), so twelve months side by side cost twelve small reads, and survive
the movement log's retention (accessd.central.retention). The current month is computed
again when its kept copy is more than `PROVISIONAL_FOR` old.
"""

from __future__ import annotations

import calendar
import json
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from accessd.central.report import month_range, site_schedule, visits
from accessd.events import format_ts, parse_ts, utcnow

if TYPE_CHECKING:
    from accessd.central.store import CentralStore

FREEZE_AFTER = timedelta(days=7)  # late events from doors that were offline
PROVISIONAL_FOR = timedelta(minutes=10)  # a month not done yet is computed again after this
GROUPS = ("subscriber", "occasional")
DEFAULT_TARGET = {"subscriber": [8, 10], "occasional": [None, None]}


def month_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def previous_months(month: str, n: int) -> list[str]:
    """`n` months ending with `month`, oldest first."""
    y, m = int(month[:4]), int(month[5:7])
    out = []
    for _ in range(n):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out[::-1]


def month_done(store: CentralStore, site: str, month: str, now: datetime | None = None) -> bool:
    """True once the month ended more than FREEZE_AFTER ago (site local time)."""
    tz = site_schedule(store, site).tz
    _start, end = month_range(month, tz)
    return (now or utcnow()) >= end + FREEZE_AFTER


def compute(store: CentralStore, site: str, month: str) -> dict[str, Any]:
    """One site-month's figures from the movement log."""
    schedule = site_schedule(store, site)
    start, end = month_range(month, schedule.tz)
    events = _granted(store, site, format_ts(start), format_ts(end + timedelta(days=1)))
    ndays = calendar.monthrange(start.year, start.month)[1]
    today = utcnow().astimezone(schedule.tz).date()
    weekdays = [0] * 7  # how many of each weekday the month has had so far
    for d in range(ndays):
        day = start.date() + timedelta(days=d)
        if day <= today:
            weekdays[day.weekday()] += 1
    out: dict[str, Any] = {"month": month, "site": site, "days_in_month": ndays}
    everyone: set[str] = set()
    for group in GROUPS:
        mine = [e for e in events if e.get("plan") == group]
        vs = [v for v in visits(mine, schedule) if start <= v.start < end]
        heat = [[0.0] * 24 for _ in range(7)]
        per_day: list[set[str]] = [set() for _ in range(ndays)]
        for v in vs:
            local_start, local_end = schedule.local(v.start), schedule.local(v.end)
            per_day[local_start.day - 1].add(v.member_id)
            _spread(heat, local_start, local_end)
        for wd in range(7):
            for h in range(24):
                heat[wd][h] = round(heat[wd][h] / weekdays[wd], 3) if weekdays[wd] else 0.0
        members = {v.member_id for v in vs}
        everyone |= members
        out[group] = {"active": len(members), "visits": len(vs),
                      "hours": round(sum(v.hours for v in vs), 2),
                      "unique": len(members),
                      "closed_at_closing_time": sum(v.closed_by == "closing_time" for v in vs),
                      "heat": heat, "days": [len(s) for s in per_day]}
    out["total"] = {"visits": sum(out[g]["visits"] for g in GROUPS),
                    "hours": round(sum(out[g]["hours"] for g in GROUPS), 2),
                    "unique": len(everyone)}
    return out


def _granted(store: CentralStore, site: str, since: str, until: str) -> list[dict[str, Any]]:
    """Granted decisions in time order, with what the visit pairing reads (a lighter read
    than `CentralStore.events`: the detail is decoded only where it can say `exit`)."""
    cols = ("ts", "door", "member_id", "member_name", "plan", "result", "reason", "detail")
    out = []
    for r in store.rows(f"SELECT {', '.join(cols)} FROM events WHERE site = ? AND ts >= ? AND "
                        "ts < ? AND type = 'access.granted' ORDER BY ts, door, seq",
                        (site, since, until)):
        e = dict(zip(cols, r, strict=True))
        e["detail"] = json.loads(e["detail"]) if "direction" in e["detail"] else {}
        out.append(e)
    return out


def _spread(heat: list[list[float]], start: datetime, end: datetime) -> None:
    """Add a visit's presence, in hours, to the weekday x hour cells it covers."""
    t = start
    while t < end:
        nxt = min(end, t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1))
        heat[t.weekday()][t.hour] += (nxt - t).total_seconds() / 3600
        t = nxt


def figures(store: CentralStore, site: str, month: str) -> dict[str, Any]:
    """The month's figures: the kept ones once the month is done (frozen), else computed
    from the movement log at most PROVISIONAL_FOR ago (`computed_at` says when)."""
    rows = store.rows("SELECT figures, computed_at, final FROM usage_months WHERE site = ? "
                      "AND month = ?", (site, month))
    now = utcnow()
    if rows and (rows[0][2] or now - parse_ts(rows[0][1]) < PROVISIONAL_FOR):
        return {**json.loads(rows[0][0]), "computed_at": rows[0][1], "final": bool(rows[0][2])}
    out = compute(store, site, month)
    final = month_done(store, site, month)
    _keep(store, site, month, out, final=final)
    return {**out, "computed_at": format_ts(now), "final": final}


def freeze(store: CentralStore, site: str, month: str,
           computed: dict[str, Any] | None = None) -> None:
    _keep(store, site, month, computed or compute(store, site, month), final=True)


def _keep(store: CentralStore, site: str, month: str, figures: dict[str, Any], *,
          final: bool) -> None:
    """Keep a month's figures; a final copy is never replaced, a provisional one is."""
    store.execute("INSERT INTO usage_months (site, month, figures, computed_at, final) VALUES "
                  "(?, ?, ?, ?, ?) ON CONFLICT (site, month) DO UPDATE SET "
                  "figures = excluded.figures, computed_at = excluded.computed_at, "
                  "final = excluded.final WHERE usage_months.final = 0",
                  (site, month, json.dumps(figures, sort_keys=True), format_ts(utcnow()),
                   int(final)))


def frozen_months(store: CentralStore) -> set[tuple[str, str]]:
    return {(s, m) for s, m in store.rows("SELECT site, month FROM usage_months WHERE "
                                          "final = 1")}


def year(store: CentralStore, site: str, month: str, n: int = 12) -> list[dict[str, Any]]:
    """The `n` months ending with `month`, oldest first: each month's totals (no heat map)."""
    out = []
    for m in previous_months(month, n):
        f = figures(store, site, m)
        out.append({"month": m, **{g: {k: f[g][k] for k in ("active", "visits", "hours",
                                                            "unique")} for g in GROUPS},
                    "total": f["total"]})
    return out


def targets(store: CentralStore, site: str) -> dict[str, list[int | None]]:
    """The site's targets (min, max) of active members per plan; the council's 8-10
    subscribers by default."""
    rows = store.rows("SELECT value FROM office_settings WHERE key = ?", (f"target:{site}",))
    if not rows:
        return {g: list(v) for g, v in DEFAULT_TARGET.items()}
    data = json.loads(rows[0][0])
    return {g: list(data.get(g, DEFAULT_TARGET[g])) for g in GROUPS}


def set_targets(store: CentralStore, site: str, value: dict[str, list[int | None]]) -> None:
    store.execute("INSERT INTO office_settings (key, value, updated_at) VALUES (?, ?, ?) "
                  "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                  "updated_at = excluded.updated_at",
                  (f"target:{site}", json.dumps(value), format_ts(utcnow())))


def enrolled(store: CentralStore, site: str) -> dict[str, int]:
    """Members in the site's rules today, active, per plan (the subscriptions sold)."""
    counts = dict.fromkeys(GROUPS, 0)
    for plan, n in store.rows("SELECT plan, count(*) FROM members WHERE site = ? AND "
                              "status = 'active' GROUP BY plan", (site,)):
        if plan in counts:
            counts[plan] = n
    return counts
