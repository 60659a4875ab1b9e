"""The office's door rules: the site's doors, each plan's doors, members' rights and bookings.

A site's doors are registered with a kind: `entrance` (a booking of any room opens it),
`room` (a work room) or `meeting_room` (bookable). Each plan gives a set of doors, its access
group (`plans`: default every door; e.g. occasional members only the entrance and the work
room). A member may hold extra rights or restrictions (`rights`: a door or every door,
weekdays, a time window, valid from/until) and bookings of meeting rooms. All of it is signed
into the rule documents by the publisher (accessd.central.publisher), so that doors decide it
offline (docs/decision.md); values are checked here, before anything is stored.

Bookings come from `accessd central booking add`, a CSV file or an iCalendar feed
(accessd.central.bookings); a cancelled booking stays here (for billing and the record) and
leaves the next document, so that the doors drop it.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from accessd.errors import BookingError, MemberNotFound
from accessd.events import format_ts, utcnow
from accessd.schedule import check_calendar, parse_day
from accessd.schema import (
    BOOKINGS,
    DOOR_ID,
    DOOR_KINDS,
    PLANS,
    RIGHTS,
    check_value,
    columns_sql,
    instant_text,
    upsert,
)

if TYPE_CHECKING:
    from accessd.central.store import CentralStore

BILLING = ("measured", "booked")  # occasional members billed by measured use or booked hours
DEFAULT_BILLING = "measured"
_RIGHT = RIGHTS.names("office")
_BOOKING = BOOKINGS.names("office")
PUBLISH_AFTER_END = timedelta(days=1)  # ended bookings leave the documents a day later


class Rooms:
    """Doors, access groups, rights and bookings of one office store (tables from the member
    schema and `site_doors`)."""

    def __init__(self, store: CentralStore) -> None:
        self.store = store

    # -- doors -----------------------------------------------------------------------------
    def set_door(self, site: str, door: str, kind: str, *, name: str | None = None,
                 closures: list[str] | None = None) -> dict[str, Any]:
        """Register or change a door of the site: its kind, display name, closed days."""
        import re

        if not re.match(DOOR_ID, door):
            raise ValueError(f"door {door!r}: lower-case letters, digits, '-' or '_'")
        if kind not in DOOR_KINDS:
            raise ValueError(f"kind: one of {', '.join(DOOR_KINDS)}, got {kind!r}")
        days = sorted({parse_day(c.strip(), "closures").isoformat() for c in closures or ()
                       if c.strip()}) if closures is not None else None
        with self.store.transaction():
            current = self.door(site, door)
            if days is None:
                days = current["closures"] if current else []
            self.store.execute(
                "INSERT INTO site_doors (site, door, kind, name, closures) VALUES "
                "(?, ?, ?, ?, ?) ON CONFLICT (site, door) DO UPDATE SET kind = excluded.kind, "
                "name = excluded.name, closures = excluded.closures",
                (site, door, kind, name if name is not None else (current or {}).get("name"),
                 json.dumps(days)))
        return self.door(site, door) or {}

    def door(self, site: str, door: str) -> dict[str, Any] | None:
        rows = self.store.rows("SELECT door, kind, name, closures FROM site_doors WHERE "
                               "site = ? AND door = ?", (site, door))
        return _door(rows[0]) if rows else None

    def doors(self, site: str) -> list[dict[str, Any]]:
        return [_door(r) for r in self.store.rows(
            "SELECT door, kind, name, closures FROM site_doors WHERE site = ? ORDER BY door",
            (site,))]

    # -- access groups, lead time, billing -------------------------------------------------
    def set_access(self, site: str, *, plans: dict[str, list[str]] | None = None,
                   booking_lead_min: int | None = None, billing: str | None = None) -> None:
        """Each plan's doors (["*"] = every door), the bookings' lead time, the billing."""
        current = self.settings(site)
        for plan, doors in (plans or {}).items():
            if plan not in PLANS:
                raise ValueError(f"plan: one of {', '.join(PLANS)}, got {plan!r}")
            for d in doors:
                check_value(RIGHTS.get("door"), d)
            current["plans"][plan] = sorted(set(doors))
        if booking_lead_min is not None:
            if not 0 <= booking_lead_min <= 1440:
                raise ValueError("booking lead: 0 to 1440 minutes")
            current["booking_lead_min"] = booking_lead_min
        if billing is not None and billing not in BILLING:
            raise ValueError(f"billing: {' or '.join(BILLING)}, got {billing!r}")
        with self.store.transaction():
            self.store.execute("INSERT INTO sites (site) VALUES (?) ON CONFLICT (site) DO "
                               "NOTHING", (site,))
            self.store.execute("UPDATE sites SET access = ? WHERE site = ?", (json.dumps(
                {"plans": current["plans"], "booking_lead_min": current["booking_lead_min"]},
                sort_keys=True), site))
            if billing is not None:
                self.store.execute("UPDATE sites SET billing = ? WHERE site = ?",
                                   (billing, site))

    def settings(self, site: str) -> dict[str, Any]:
        """{"plans": {plan: doors}, "booking_lead_min": n, "billing": ...} of the site."""
        rows = self.store.rows("SELECT access, billing FROM sites WHERE site = ?", (site,))
        raw, billing = rows[0] if rows else (None, None)
        data = json.loads(raw) if raw else {}
        return {"plans": dict(data.get("plans") or {}),
                "booking_lead_min": int(data.get("booking_lead_min") or 0),
                "billing": billing or DEFAULT_BILLING}

    def access_document(self, site: str) -> dict[str, Any] | None:
        """The rule document's `access`, or None for a site that uses no door rules (its
        documents then stay readable by doors that predate them)."""
        doors, s = self.doors(site), self.settings(site)
        if not doors and not s["plans"] and not s["booking_lead_min"]:
            return None
        out: dict[str, Any] = {"doors": [
            {"id": d["door"], "kind": d["kind"], **({"name": d["name"]} if d["name"] else {}),
             **({"closures": d["closures"]} if d["closures"] else {})} for d in doors]}
        if s["plans"]:
            out["plans"] = s["plans"]
        out["booking_lead_min"] = s["booking_lead_min"]
        return out

    # -- rights and restrictions -----------------------------------------------------------
    def add_right(self, site: str, values: dict[str, Any]) -> dict[str, Any]:
        """A member's extra right (effect allow) or restriction (deny); returns the row."""
        row = {"id": values.get("id") or "r-" + secrets.token_hex(5)}
        for name in _RIGHT:
            if name in ("id", "updated_at"):
                continue
            try:
                row[name] = check_value(RIGHTS.get(name), values.get(name))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        check_calendar({"rights": [row]})
        row["updated_at"] = format_ts(utcnow())
        with self.store.transaction():
            self._member(site, row["member_id"])
            self.store.execute(upsert(RIGHTS, office=True), (site, *(row[n] for n in _RIGHT)))
        return row

    def remove_right(self, site: str, right_id: str) -> bool:
        return bool(self.store.execute("DELETE FROM rights WHERE site = ? AND id = ?",
                                       (site, right_id)).rowcount)

    def rights(self, site: str, member_id: str | None = None) -> list[dict[str, Any]]:
        where, args = "site = ?", [site]
        if member_id:
            where += " AND member_id = ?"
            args.append(member_id)
        return [dict(zip(_RIGHT, r, strict=True)) for r in self.store.rows(
            f"SELECT {columns_sql(_RIGHT)} FROM rights WHERE {where} ORDER BY member_id, id",
            args)]

    # -- bookings --------------------------------------------------------------------------
    def add_booking(self, site: str, *, member_id: str, door: str, start: datetime,
                    end: datetime, summary: str | None = None, source: str = "cli",
                    booking_id: str | None = None) -> dict[str, Any]:
        """Book `door` (a meeting room of the site) for the member; a known `booking_id`
        (an edit, or a calendar event seen again) is changed in place."""
        if end <= start:
            raise BookingError(f"the booking ends ({end.isoformat()}) before it starts")
        room = self.door(site, door)
        if room is None or room["kind"] != "meeting_room":
            raise BookingError(f"{door!r} is not a meeting room of {site} (accessd central "
                               "door set --kind meeting_room)")
        row = {"id": booking_id or "b-" + secrets.token_hex(6), "member_id": member_id,
               "door": door, "start": instant_text(start), "end": instant_text(end),
               "status": "active", "source": source,
               "summary": (summary or None) and summary[:200],
               "updated_at": format_ts(utcnow())}
        check_value(BOOKINGS.get("id"), row["id"])
        with self.store.transaction():
            member = self._member(site, member_id)
            if member["status"] == "revoked":
                raise BookingError(f"member {member_id} is revoked")
            self.store.execute(upsert(BOOKINGS, office=True),
                               (site, *(row[n] for n in _BOOKING)))
        return row

    def cancel_booking(self, site: str, booking_id: str) -> dict[str, Any]:
        """Cancel a booking: it leaves the next rule document (the doors refuse it at once
        once they have that document). MemberNotFound-like BookingError if unknown."""
        with self.store.transaction():
            found = self.booking(site, booking_id)
            if found is None:
                raise BookingError(f"no booking {booking_id!r} at {site}")
            if found["status"] != "cancelled":
                self.store.execute("UPDATE bookings SET status = 'cancelled', updated_at = ? "
                                   "WHERE site = ? AND id = ?",
                                   (format_ts(utcnow()), site, booking_id))
        return self.booking(site, booking_id) or {}

    def booking(self, site: str, booking_id: str) -> dict[str, Any] | None:
        rows = self.store.rows(f"SELECT {columns_sql(_BOOKING)} FROM bookings WHERE site = ? "
                               "AND id = ?", (site, booking_id))
        return dict(zip(_BOOKING, rows[0], strict=True)) if rows else None

    def bookings(self, site: str, *, since: datetime | None = None,
                 until: datetime | None = None, member_id: str | None = None,
                 door: str | None = None, status: str | None = "active",
                 source: str | None = None) -> list[dict[str, Any]]:
        """Bookings that end after `since` and start before `until`, by start."""
        where, args = ["site = ?"], [site]
        for column, value in (("member_id", member_id), ("door", door), ("status", status),
                              ("source", source)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append('"end" > ?')
            args.append(instant_text(since))
        if until is not None:
            where.append('"start" < ?')
            args.append(instant_text(until))
        return [dict(zip(_BOOKING, r, strict=True)) for r in self.store.rows(
            f"SELECT {columns_sql(_BOOKING)} FROM bookings WHERE {' AND '.join(where)} "
            'ORDER BY "start", id', args)]

    def published_bookings(self, site: str, now: datetime | None = None
                           ) -> list[dict[str, Any]]:
        """The bookings a rule document carries: active ones not ended a day ago."""
        return self.bookings(site, since=(now or utcnow()) - PUBLISH_AFTER_END)

    def sync_source(self, site: str, source: str, rows: list[dict[str, Any]],
                    now: datetime | None = None) -> dict[str, int]:
        """Make the bookings of `source` (a calendar feed, a CSV file) what `rows` say:
        each row added or changed in place (by its id); a booking of that source that has
        not ended and that the rows no longer list is cancelled. Returns counts."""
        now = now or utcnow()
        seen, added, changed = set(), 0, 0
        with self.store.transaction():
            for r in rows:
                before = self.booking(site, r["id"])
                self.add_booking(site, member_id=r["member_id"], door=r["door"],
                                 start=r["start"], end=r["end"], summary=r.get("summary"),
                                 source=source, booking_id=r["id"])
                seen.add(r["id"])
                if before is None:
                    added += 1
                elif (before["start"], before["end"], before["door"], before["member_id"],
                      before["status"]) != (instant_text(r["start"]), instant_text(r["end"]),
                                            r["door"], r["member_id"], "active"):
                    changed += 1
            gone = [b["id"] for b in self.bookings(site, since=now, source=source)
                    if b["id"] not in seen]
            for booking_id in gone:
                self.cancel_booking(site, booking_id)
        return {"added": added, "changed": changed, "cancelled": len(gone),
                "unchanged": len(seen) - added - changed}

    def _member(self, site: str, member_id: str) -> dict[str, Any]:
        rows = self.store.rows("SELECT id, status, plan FROM members WHERE site = ? AND id = ?",
                               (site, member_id))
        if not rows:
            raise MemberNotFound(f"no member {member_id!r} at {site}")
        return dict(zip(("id", "status", "plan"), rows[0], strict=True))


def _door(row: tuple[Any, ...]) -> dict[str, Any]:
    door, kind, name, closures = row
    return {"door": door, "kind": kind, "name": name,
            "closures": json.loads(closures) if closures else []}
