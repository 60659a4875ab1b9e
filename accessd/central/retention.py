"""The office's retention: movement logs kept `retention_months` (3 by default, the CNIL's
guidance), billing and usage aggregates kept apart.

`apply` runs hourly in `accessd central web` (one worker at a time, whichever claims the
hour in the store) and on demand with `accessd central retention --apply`:

1. every site-month that ended more than `FREEZE_AFTER` ago is frozen: its billing lines
   (`billing_lines`, the very figures of `accessd central report`) and its usage figures
   (`usage_months`, counts only), once;
2. the movement log older than the cut-off is deleted: `events` (never a month whose billing
   is not frozen yet: the cut-off waits for it), the door alarms' event keys, conflicts, and
   proposals decided before the cut-off; signed rule versions older than the cut-off, except
   each site's latest (they name the members of their day);
3. expired sessions and old failed logins go.

The audit log and the frozen billing lines are kept: they are the office's records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from accessd.central import usage
from accessd.central.health import known_sites
from accessd.central.report import HOURS_COLUMNS, MonthlyBilling, monthly_hours, site_schedule
from accessd.events import format_ts, parse_ts, utcnow

if TYPE_CHECKING:
    from accessd.central.store import CentralStore

log = logging.getLogger(__name__)

DEFAULT_MONTHS = 3
FREEZE_AFTER = usage.FREEZE_AFTER
RUN_EVERY = timedelta(hours=1)
BILLING_COLUMNS = HOURS_COLUMNS  # the lines of `report`, kept as they are


# -- settings -----------------------------------------------------------------------------------
def setting(store: CentralStore, key: str) -> str | None:
    rows = store.rows("SELECT value FROM office_settings WHERE key = ?", (key,))
    return rows[0][0] if rows else None


def set_setting(store: CentralStore, key: str, value: str) -> None:
    store.execute("INSERT INTO office_settings (key, value, updated_at) VALUES (?, ?, ?) "
                  "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                  "updated_at = excluded.updated_at", (key, value, format_ts(utcnow())))


def months(store: CentralStore) -> int:
    value = setting(store, "retention_months")
    return int(value) if value else DEFAULT_MONTHS


def set_months(store: CentralStore, n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 120:
        raise ValueError("retention: a whole number of months from 1 to 120")
    set_setting(store, "retention_months", str(n))


def cutoff(now: datetime, n: int) -> datetime:
    """The same day `n` months earlier (the month's last day when it is shorter)."""
    y, m = now.year, now.month - n
    while m < 1:
        y, m = y - 1, m + 12
    import calendar

    day = min(now.day, calendar.monthrange(y, m)[1])
    return now.replace(year=y, month=m, day=day)


# -- billing lines: frozen or live, one answer ----------------------------------------------------
def frozen_lines(store: CentralStore, site: str, month: str) -> list[dict[str, Any]] | None:
    """The month's kept billing lines once it is frozen, else None."""
    if not is_frozen(store, site, month):
        return None
    rows = store.rows(f"SELECT {', '.join(BILLING_COLUMNS)} FROM billing_lines WHERE "
                      "site = ? AND month = ?", (site, month))
    lines = [dict(zip(BILLING_COLUMNS, r, strict=True)) for r in rows]
    for line in lines:
        line["hours"] = round(float(line["hours"]), 2)
    return sorted(lines, key=lambda r: (r["member_name"].lower(), r["member_id"]))


def billing(store: CentralStore, site: str, month: str,
            live: MonthlyBilling | None = None) -> list[dict[str, Any]]:
    """The month's billing lines: the frozen ones once the month is frozen, else the rows of
    `report.monthly_billing` (`live`, if the caller has it). `accessd central report` and the
    web's billing page both read this."""
    frozen = frozen_lines(store, site, month)
    if frozen is not None:
        return frozen
    return live.rows() if live is not None else monthly_hours(store, site, month)


def is_frozen(store: CentralStore, site: str, month: str) -> bool:
    return bool(store.rows("SELECT 1 FROM billing_months WHERE site = ? AND month = ?",
                           (site, month)))


def freeze_billing(store: CentralStore, site: str, month: str) -> int:
    """Keep the month's billing lines as `monthly_hours` gives them now; once."""
    lines = monthly_hours(store, site, month)
    with store.transaction():
        if not store.execute("INSERT INTO billing_months (site, month, frozen_at) VALUES "
                             "(?, ?, ?) ON CONFLICT DO NOTHING",
                             (site, month, format_ts(utcnow()))).rowcount:
            return 0
        store.executemany(
            f"INSERT INTO billing_lines ({', '.join(BILLING_COLUMNS)}) VALUES "
            f"({', '.join('?' * len(BILLING_COLUMNS))}) ON CONFLICT DO NOTHING",
            [tuple(line[c] for c in BILLING_COLUMNS) for line in lines])
    return len(lines)


# -- the run ------------------------------------------------------------------------------------
@dataclass
class Run:
    cutoff: str | None = None
    frozen: list[str] = field(default_factory=list)  # "site month"
    deleted: dict[str, int] = field(default_factory=dict)


def months_with_events(store: CentralStore, site: str, until: datetime) -> list[str]:
    """Local months from the site's oldest event to the month before `until`."""
    oldest = store.rows("SELECT min(ts) FROM events WHERE site = ?", (site,))[0][0]
    if not oldest:
        return []
    tz = site_schedule(store, site).tz
    first = parse_ts(oldest).astimezone(tz).date().replace(day=1)
    last = until.astimezone(tz).date().replace(day=1)
    out, d = [], first
    while d < last:
        out.append(usage.month_of(d))
        d = (d.replace(day=28) + timedelta(days=4)).replace(day=1)
    return out


def freeze_done_months(store: CentralStore, now: datetime | None = None) -> list[str]:
    """Freeze billing and usage of every site-month done (ended FREEZE_AFTER ago)."""
    now = now or utcnow()
    done = []
    have_usage = usage.frozen_months(store)
    have_billing = {(s, m) for s, m in store.rows("SELECT site, month FROM billing_months")}
    for site in known_sites(store):
        for month in months_with_events(store, site, now):
            if not usage.month_done(store, site, month, now):
                continue
            if (site, month) not in have_billing:
                freeze_billing(store, site, month)
                done.append(f"{site} {month} billing")
            if (site, month) not in have_usage:
                usage.freeze(store, site, month)
                done.append(f"{site} {month} usage")
    return done


def apply(store: CentralStore, now: datetime | None = None, *, dry_run: bool = False) -> Run:
    now = now or utcnow()
    run = Run()
    if not dry_run:
        run.frozen = freeze_done_months(store, now)
    cut = cutoff(now, months(store))
    # never a month whose billing is not frozen: the cut-off waits for it
    for site in known_sites(store):
        tz = site_schedule(store, site).tz
        for month in months_with_events(store, site, cut + timedelta(days=31)):
            first = date.fromisoformat(month + "-01")
            start = datetime.combine(first, datetime.min.time(), tzinfo=tz)
            if start < cut and not is_frozen(store, site, month):
                cut = min(cut, start)
    run.cutoff = format_ts(cut)
    if dry_run:
        run.deleted["events"] = store.rows("SELECT count(*) FROM events WHERE ts < ?",
                                           (run.cutoff,))[0][0]
        return run
    for site in known_sites(store):
        with store.transaction():
            run.deleted["events"] = run.deleted.get("events", 0) + store.execute(
                "DELETE FROM events WHERE site = ? AND ts < ?", (site, run.cutoff)).rowcount
            run.deleted["rule_versions"] = run.deleted.get("rule_versions", 0) + store.execute(
                "DELETE FROM rule_versions WHERE site = ? AND published_at < ? AND version < "
                "(SELECT max(version) FROM rule_versions WHERE site = ?)",
                (site, run.cutoff, site)).rowcount
    with store.transaction():
        for table, sql in (
                ("conflicts", "DELETE FROM conflicts WHERE last_seen < ?"),
                ("proposals", "DELETE FROM proposals WHERE state <> 'pending' AND "
                              "decided_at < ?"),
                ("alarms", "DELETE FROM alarms WHERE cleared IS NOT NULL AND cleared < ?")):
            run.deleted[table] = store.execute(sql, (run.cutoff,)).rowcount
        run.deleted["door_alarm_events"] = store.execute(
            "DELETE FROM door_alarm_events WHERE ts < ?", (run.cutoff,)).rowcount
        from accessd.central.users import SESSION_MAX

        run.deleted["web_sessions"] = store.execute(
            "DELETE FROM web_sessions WHERE created_at < ?",
            (format_ts(now - SESSION_MAX),)).rowcount
    set_setting(store, "retention_last_run", format_ts(now))
    log.info("retention: cut-off %s, frozen %d, deleted %s", run.cutoff, len(run.frozen),
             run.deleted)
    return run


def claim(store: CentralStore, now: datetime | None = None) -> bool:
    """True for the one worker that may run retention this hour (a compare-and-set in the
    store, so several workers do not run it at once)."""
    now = now or utcnow()
    stamp = format_ts(now)
    with store.transaction():
        store.execute("INSERT INTO office_settings (key, value, updated_at) VALUES "
                      "('retention_claim', '', ?) ON CONFLICT (key) DO NOTHING", (stamp,))
        return bool(store.execute(
            "UPDATE office_settings SET value = ?, updated_at = ? WHERE key = "
            "'retention_claim' AND (value = '' OR value < ?)",
            (stamp, stamp, format_ts(now - RUN_EVERY))).rowcount)
