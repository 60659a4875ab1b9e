"""Each door's health at the office: its retained status, its alarms, what the overview shows.

The collector feeds this module and stays fast doing it:

- `StatusWriter`: a door's retained status (and its last will, `online: false`) is kept in
  `door_status`, one upsert per door when something other than its timestamp changed, or
  every few minutes so the office knows when it last heard it;
- `door_alarms`: the door's own alarms arrive as events (`door.forced`, `door.held_open`,
  `alarm.reader_lockout`, ...); the few events of those types in a batch open an office
  alarm stamped with the door's time, once per event (`door_alarm_events`), and the events
  that end a condition (`door.closed`, `reader.online`) clear it;
- `notify_events`: on PostgreSQL, a NOTIFY after each batch's commit wakes the web
  application's live entries at once (SQLite has no such thing: the web polls the doors'
  marks, a table of one row per door).

`overview` reads it all back for the web application's first page.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from accessd.events import format_ts, parse_ts, utcnow

if TYPE_CHECKING:
    from accessd.central.store import CentralStore

NOTIFY_CHANNEL = "accessd_events"
STATUS_REFRESH_S = 300.0  # an unchanged status is written again after this long
VOLATILE = ("ts",)

#: door event type -> the office alarm it opens, and what it means
DOOR_ALARMS = {
    "door.forced": ("door_forced", "the door was opened without a release"),
    "door.held_open": ("door_held_open", "the door stayed open past the allowed time"),
    "alarm.reader_lockout": ("reader_lockout", "a reader locked out after unknown cards"),
    "alarm.journal_unavailable": ("journal_unavailable",
                                  "the door cannot write its journal (disk full, read-only)"),
    "alarm.internal_error": ("internal_error", "deciding a tap failed unexpectedly"),
    "alarm.rule_cache": ("rule_cache", "a stored rule value cannot be used"),
    "rules.rejected": ("rules_rejected", "the door refused a rule document"),
    "reader.offline": ("reader_offline", "a reader stopped answering"),
}
#: door event type -> the alarm kinds it ends (the condition is over)
CLEARS = {
    "door.closed": ("door_held_open",),
    "reader.online": ("reader_offline",),
}
WATCHED = frozenset(DOOR_ALARMS) | frozenset(CLEARS)


class StatusWriter:
    """Writes doors' statuses into `door_status`, skipping unchanged ones (one per collector)."""

    def __init__(self, store: CentralStore, refresh_s: float = STATUS_REFRESH_S) -> None:
        self.store, self.refresh_s = store, refresh_s
        self._written: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        self._pending: dict[tuple[str, str], dict[str, Any]] = {}

    def seen(self, site: str, door: str, status: dict[str, Any]) -> None:
        """A validated status (the latest of a batch wins)."""
        self._pending[(site, door)] = status

    def flush(self) -> None:
        if not self._pending:
            return
        now, rows = time.monotonic(), []
        received = format_ts(utcnow())
        for key, status in self._pending.items():
            body = {k: v for k, v in status.items() if k not in VOLATILE}
            last = self._written.get(key)
            if last and last[0] == body and now - last[1] < self.refresh_s:
                continue
            rows.append((*key, int(bool(status.get("online"))),
                         json.dumps(status, sort_keys=True), received, received))
            self._written[key] = (body, now)
        self._pending.clear()
        self.store.executemany(
            "INSERT INTO door_status (site, door, online, status, received_at, changed_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site, door) DO UPDATE SET "
            "status = excluded.status, received_at = excluded.received_at, "
            "changed_at = CASE WHEN door_status.online <> excluded.online THEN "
            "excluded.changed_at ELSE door_status.changed_at END, online = excluded.online",
            rows)


def door_alarms(store: CentralStore, events: list[dict[str, Any]]) -> None:
    """Open (or clear) office alarms for the door events of a batch that say so, once each.
    The caller passes only events whose type is in WATCHED."""
    for e in events:
        site, door, kind = e["site"], e["door"], e["type"]
        at = format_ts(parse_ts(e["ts"]))
        with store.transaction():
            if not store.execute("INSERT INTO door_alarm_events (site, door, event_id, ts) "
                                 "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                                 (site, door, str(e["id"]), at)).rowcount:
                continue  # a copy: already counted
            if kind in DOOR_ALARMS:
                alarm, words = DOOR_ALARMS[kind]
                detail = e.get("detail") if isinstance(e.get("detail"), dict) else {}
                extra = ", ".join(f"{k} {v}" for k, v in sorted(detail.items())
                                  if isinstance(v, str | int | float))[:300]
                store.raise_alarm(site, door, alarm,
                                  f"{words}{' (' + e['reader'] + ')' if e.get('reader') else ''}"
                                  f"{': ' + extra if extra else ''}", at=at)
            for ended in CLEARS.get(kind, ()):
                for a in store.alarms(open_only=True, site=site, door=door):
                    if a["kind"] == ended and a["first_seen"] <= at:
                        store.clear_alarm(a["id"])


def notify_events(store: CentralStore) -> None:
    """Wake the web's live entries (PostgreSQL; a no-op on SQLite, where the web polls)."""
    if store.dialect == "postgres":
        store.execute(f"NOTIFY {NOTIFY_CHANNEL}")


# -- reading it back ------------------------------------------------------------------------
def statuses(store: CentralStore) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for site, door, online, status, received, changed in store.rows(
            "SELECT site, door, online, status, received_at, changed_at FROM door_status"):
        out[(site, door)] = {"online": bool(online), "status": json.loads(status),
                             "received_at": received, "changed_at": changed}
    return out


def known_sites(store: CentralStore) -> list[str]:
    """Every site the office has heard of: registered, with doors, or with keys."""
    return sorted({r[0] for r in store.rows(
        "SELECT site FROM sites UNION SELECT site FROM doors UNION SELECT site FROM door_keys "
        "UNION SELECT site FROM door_status")})


def doors_of(store: CentralStore, sites: list[str]) -> dict[str, list[str]]:
    if not sites:
        return {}
    marks = ", ".join("?" * len(sites))
    out: dict[str, set[str]] = {s: set() for s in sites}
    for site, door in store.rows(
            f"SELECT site, door FROM doors WHERE site IN ({marks}) UNION SELECT site, door FROM "
            f"door_keys WHERE site IN ({marks}) UNION SELECT site, door FROM door_status "
            f"WHERE site IN ({marks})", [*sites, *sites, *sites]):
        out[site].add(door)
    return {s: sorted(d) for s, d in out.items()}


def overview(store: CentralStore, sites: list[str]) -> list[dict[str, Any]]:
    """Per site: its name, published rule version, open alarms, and per door: online or not
    (and since when), lock, clock trust, the rule version it applied, the events it holds
    that the office has not acknowledged, the office's mark, and its latest event."""
    status = statuses(store)
    doors = doors_of(store, sites)
    marks = {(s, d): (mark, seen) for s, d, mark, seen in store.rows(
        "SELECT site, door, stored_seq, last_seen FROM doors")}
    open_alarms = store.alarms(open_only=True)
    out = []
    for site in sites:
        info = store.site(site) or {}
        published = store.latest_version(site)
        rows = []
        for door in doors.get(site, []):
            st = status.get((site, door))
            body = st["status"] if st else {}
            last = store.rows("SELECT ts, type, result, reason, member_name, seq FROM events "
                              "WHERE site = ? AND door = ? ORDER BY seq DESC LIMIT 1",
                              (site, door))
            mark, seen = marks.get((site, door), (0, None))
            waiting = body.get("outbox_depth")
            if waiting is None and "last_seq" in body:
                waiting = max(0, body["last_seq"] - body.get("acked_seq", 0))
            rows.append({
                "door": door, "known": st is not None,
                "online": st["online"] if st else None,
                "since": st["changed_at"] if st else None,
                "heard": st["received_at"] if st else None,
                "lock": body.get("lock"), "door_state": body.get("door_state"),
                "clock_trusted": body.get("clock_trusted"),
                "rule_version": body.get("rule_version"), "published": published,
                "waiting": waiting, "stored_seq": mark, "last_seen": seen,
                "readers": body.get("readers") or {},
                "last_event": dict(zip(("ts", "type", "result", "reason", "member_name",
                                        "seq"), last[0], strict=True)) if last else None,
                "alarms": [a for a in open_alarms if a["site"] == site and a["door"] == door],
            })
        out.append({"site": site, "name": info.get("name") or site, "published": published,
                    "doors": rows,
                    "alarms": [a for a in open_alarms if a["site"] == site]})
    return out
