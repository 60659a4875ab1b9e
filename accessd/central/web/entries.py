"""Live entries: access decisions newest first, filtered, new ones pushed as they are stored
(Server-Sent Events from the live feed), and the filtered view as CSV."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from accessd.central.store import CentralStore
from accessd.central.users import Users
from accessd.central.web.core import Req, page
from accessd.central.web.feed import ACCESS_TYPES, LIVE_COLUMNS
from accessd.decision import GRANT_REASONS, Reason
from accessd.events import format_ts, parse_ts

PAGE = 50
CSV_LIMIT = 100_000
CSV_COLUMNS = ("ts", "local_time", "site", "door", "seq", "result", "reason", "member_id",
               "member_name", "plan", "reader", "credential", "clock_trusted")
REASONS = [str(r) for r in Reason]


@dataclass(frozen=True)
class Filters:
    site: str = ""
    door: str = ""
    member: str = ""
    result: str = ""
    reason: str = ""
    since: str = ""  # YYYY-MM-DD, local
    until: str = ""  # YYYY-MM-DD, local, inclusive

    @classmethod
    def of(cls, req: Req) -> tuple[Filters, dict[str, str]]:
        """The filters of the query string, and an error per bad field."""
        errors: dict[str, str] = {}
        values = {k: req.q(k) for k in ("site", "door", "member", "result", "reason", "since",
                                        "until")}
        if values["site"]:
            req.site("site")  # 403 unless theirs
        if values["result"] not in ("", "granted", "denied"):
            errors["result"] = "granted or denied"
            values["result"] = ""
        if values["reason"] and values["reason"] not in REASONS:
            errors["reason"] = "not a reason accessd gives"
            values["reason"] = ""
        for k in ("since", "until"):
            if values[k]:
                try:
                    date.fromisoformat(values[k])
                except ValueError:
                    errors[k] = "a date, YYYY-MM-DD"
                    values[k] = ""
        if values["since"] and values["until"] and values["until"] < values["since"]:
            errors["until"] = "before the start date"
            values["until"] = ""
        return cls(**values), errors

    def query(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    def bounds(self, tz: ZoneInfo) -> tuple[str | None, str | None]:
        lo = hi = None
        if self.since:
            lo = format_ts(datetime.combine(date.fromisoformat(self.since), time(0), tz))
        if self.until:
            hi = format_ts(datetime.combine(date.fromisoformat(self.until) + timedelta(days=1),
                                            time(0), tz))
        return lo, hi

    def matches(self, e: dict[str, Any], member_ids: set[str] | None) -> bool:
        """For live rows: the filters the SQL would apply."""
        return ((not self.site or e["site"] == self.site)
                and (not self.door or e["door"] == self.door)
                and (member_ids is None or e["member_id"] in member_ids)
                and (not self.result or e["result"] == self.result)
                and (not self.reason or e["reason"] == self.reason))


def site_tz(store: CentralStore, site: str, default: str) -> ZoneInfo:
    """A site's time zone (the office's record, else its schedule's), else `default`."""
    info = store.site(site) or {}
    name = info.get("timezone") or (info.get("schedule") or {}).get("timezone") or default
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def member_ids(store: CentralStore, sites: list[str], text: str) -> set[str] | None:
    """Member ids matching a member filter (an id, or part of a name); None: no filter."""
    if not text:
        return None
    ids = {text}
    if sites:
        ids |= {r[0] for r in store.rows(
            f"SELECT id FROM members WHERE site IN ({', '.join('?' * len(sites))}) AND "
            "(id = ? OR lower(name) LIKE ?)", [*sites, text, f"%{text.lower()}%"])}
    return ids


def query(store: CentralStore, sites: list[str], f: Filters, tz: ZoneInfo, *,
          every_site: bool, limit: int = PAGE,
          before: tuple[str, str, str, int] | None = None) -> list[dict[str, Any]]:
    """Access decisions, newest first. `every_site`: the user sees every site and chose
    none (one query over the time index); else, or for a member, one query per site (over
    the site's time or member index), merged."""
    where = [f"type IN ({', '.join('?' * len(ACCESS_TYPES))})"]
    args: list[Any] = list(ACCESS_TYPES)
    for column, value in (("door", f.door), ("result", f.result), ("reason", f.reason)):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    ids = member_ids(store, [f.site] if f.site else sites, f.member)
    if ids is not None:
        where.append(f"member_id IN ({', '.join('?' * len(ids))})")
        args += sorted(ids)
    lo, hi = f.bounds(tz)
    if lo:
        where.append("ts >= ?")
        args.append(lo)
    if hi:
        where.append("ts < ?")
        args.append(hi)
    if before:
        where.append("ts <= ? AND (ts < ? OR site < ? OR (site = ? AND door < ?) OR "
                     "(site = ? AND door = ? AND seq < ?))")
        ts, s, d, seq = before
        args += [ts, ts, s, s, d, s, d, seq]
    order = " ORDER BY ts DESC, site DESC, door DESC, seq DESC"
    cols = ", ".join(LIVE_COLUMNS)
    if every_site and not f.site and ids is None:
        # newest first over the time index (SQLite, without statistics, would rather scan
        # and sort the whole table when a filter looks selective)
        hint = " INDEXED BY events_ts" if store.dialect == "sqlite" else ""
        batches = [store.rows(f"SELECT {cols} FROM events{hint} WHERE {' AND '.join(where)}"
                              f"{order} LIMIT {int(limit)}", args)]
    else:
        batches = [store.rows(f"SELECT {cols} FROM events WHERE site = ? AND "
                              f"{' AND '.join(where)}{order} LIMIT {int(limit)}",
                              [site, *args])
                   for site in ([f.site] if f.site else sites)]
    rows = [dict(zip(LIVE_COLUMNS, r, strict=True)) for batch in batches for r in batch]
    rows.sort(key=lambda e: (e["ts"], e["site"], e["door"], e["seq"]), reverse=True)
    for r in rows:
        r["clock_trusted"] = bool(r["clock_trusted"])
    return rows[:limit]


def _zones(req: Req, sites: list[str]) -> dict[str, ZoneInfo]:
    return {s: site_tz(req.store, s, req.app.config.timezone) for s in sites}


def _every_site(req: Req, sites: list[str]) -> bool:
    return req.user.role == "operator" or not req.user.sites


@page("operator", "manager")
def show(req: Req) -> Response:
    sites = req.sites()
    f, errors = Filters.of(req)
    zones = _zones(req, sites)
    tz = zones.get(f.site) or ZoneInfo(req.app.config.timezone)
    before = None
    if req.q("before"):
        parts = req.q("before").split("|")
        if len(parts) == 4 and parts[3].isdigit():
            before = (parts[0], parts[1], parts[2], int(parts[3]))
    rows = query(req.store, sites, f, tz, every_site=_every_site(req, sites), before=before,
                 limit=PAGE + 1)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    older = None
    if more:
        last = rows[-1]
        older = {**f.query(), "before": f"{last['ts']}|{last['site']}|{last['door']}|"
                                        f"{last['seq']}"}
    doors = sorted({d for (d,) in req.store.rows(
        "SELECT door FROM doors WHERE site = ?", (f.site,))}) if f.site else []
    return req.render("entries.html", title="Live entries", rows=rows, filters=f,
                      errors=errors, sites=sites, doors=doors, zones=zones, reasons=REASONS,
                      grant_reasons=[str(r) for r in GRANT_REASONS], older=older,
                      live=before is None, query=f.query())


@page("operator", "manager", take_flash=False)
def stream(req: Req) -> Response:
    """Server-Sent Events: each new entry that passes the page's filters, as the table row
    the page would show (`event: entry`)."""
    sites = set(req.sites())
    f, _errors = Filters.of(req)
    ids = member_ids(req.store, sorted(sites), f.member)
    zones = _zones(req, sorted(sites))
    tz = zones.get(f.site) or ZoneInfo(req.app.config.timezone)
    lo, hi = f.bounds(tz)
    office, token = req.app, req.token
    template = office.env.get_template("_entry_row.html")

    def still_logged_in() -> bool:
        with office.pool.store() as store:
            session = Users(store).session(token, take_flash=False)
            return session is not None and session.user.username == req.user.username

    async def events() -> AsyncIterator[str]:
        q = office.feed.subscribe()
        checked = asyncio.get_running_loop().time()
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    rows = await asyncio.wait_for(q.get(), 15.0)
                except TimeoutError:
                    rows = []
                    yield ": keep-alive\n\n"
                now = asyncio.get_running_loop().time()
                if now - checked > 60:
                    checked = now
                    if not await run_in_threadpool(still_logged_in):
                        yield "event: logout\ndata: session ended\n\n"
                        return
                for e in rows:
                    if e["site"] not in sites or not f.matches(e, ids):
                        continue
                    if (lo and e["ts"] < lo) or (hi and e["ts"] >= hi):
                        continue
                    html = template.render(e=e, zones=zones).replace("\n", " ")
                    yield f"event: entry\nid: {e['site']}/{e['door']}/{e['seq']}\n" \
                          f"data: {html}\n\n"
        finally:
            office.feed.unsubscribe(q)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"X-Accel-Buffering": "no"})


@page("operator", "manager", take_flash=False)
def export(req: Req) -> Response:
    sites = req.sites()
    f, _errors = Filters.of(req)
    zones = _zones(req, sites)
    tz = zones.get(f.site) or ZoneInfo(req.app.config.timezone)
    rows = query(req.store, sites, f, tz, every_site=_every_site(req, sites), limit=CSV_LIMIT)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n",
                       extrasaction="ignore")
    w.writeheader()
    for e in rows:
        zone = zones.get(e["site"], tz)
        w.writerow({**e, "local_time": parse_ts(e["ts"]).astimezone(zone).strftime(
            "%Y-%m-%d %H:%M:%S"), "clock_trusted": int(e["clock_trusted"])})
    req.audit("entries.export", site=f.site or None, detail={"filters": f.query(),
                                                             "rows": len(rows)})
    name = "entries" + (f"-{f.site}" if f.site else "") + ".csv"
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


ROUTES = [
    Route("/entries", show),
    Route("/entries/stream", stream),
    Route("/entries.csv", export),
]
