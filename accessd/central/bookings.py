"""Bookings from outside: a CSV file or an iCalendar (RFC 5545) file or feed.

iCalendar is parsed by `icalendar` and recurring events are expanded by
`recurring_ical_events` (RRULE, RDATE, EXDATE, RECURRENCE-ID overrides, time zones from
VTIMEZONE or IANA names), not by hand: each occurrence between a day ago and `horizon_days`
ahead becomes one booking. Floating times and all-day events are the site's local time. An
event is for the member whose e-mail (the office's member field) is its ORGANIZER, else one
of its ATTENDEEs, or the member id in an `X-ACCESSD-MEMBER` property; for the room given
(`--door`) or the door whose id or name its LOCATION is. A cancelled event (STATUS:CANCELLED)
or occurrence is not a booking.

Each import is one *source* (the feed's URL or the file's name, and the room): the office
makes that source's bookings what the import says (accessd.central.rooms.Rooms.sync_source),
so an event deleted from the calendar, or moved, is cancelled or changed at the next import
and leaves the doors with the next rule document. Rows that cannot be used are listed
(`skipped`) with why; they never stop the others.
"""

from __future__ import annotations

import csv
import hashlib
import io
import urllib.request
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from accessd.errors import BookingError

MAX_FEED_BYTES = 16 * 1024 * 1024
CSV_COLUMNS = ("id", "member", "email", "door", "start", "end", "summary")


@dataclass
class Parsed:
    """What an import found: bookings to sync, and what it skipped (with why)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def parse_local(text: str, tz: ZoneInfo, what: str) -> datetime:
    """`2026-03-29 10:00` or `2026-03-29T10:00` in the site's time, or an ISO instant with an
    offset or Z. A wall time that does not exist (the hour skipped in spring) is refused;
    one that occurs twice (in autumn) is its first occurrence."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BookingError(f"{what}: expected YYYY-MM-DD HH:MM (site time) or an ISO time "
                           f"with an offset, got {text!r}") from None
    if value.tzinfo is not None:
        return value
    aware = value.replace(tzinfo=tz)
    back = aware.astimezone(ZoneInfo("UTC")).astimezone(tz).replace(tzinfo=None)
    if back != value:
        raise BookingError(f"{what}: {text} does not exist in {tz.key} (the clocks skip it)")
    return aware


def booking_id(*parts: str) -> str:
    return "bk-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


def read_csv(path: Path, tz: ZoneInfo, emails: dict[str, str]) -> Parsed:
    """Bookings from a CSV file with the columns CSV_COLUMNS (`member` or `email`)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise BookingError(f"{path}: cannot read: {exc.strerror}") from None
    reader = csv.DictReader(io.StringIO(text))
    unknown = set(reader.fieldnames or ()) - set(CSV_COLUMNS)
    if unknown:
        raise BookingError(f"{path}: unknown column(s) {sorted(unknown)}; use "
                           f"{', '.join(CSV_COLUMNS)}")
    out = Parsed()
    for n, raw in enumerate(reader, 2):
        row = {k: (v or "").strip() for k, v in raw.items() if k}
        where = f"{path.name}: row {n}"
        try:
            member = row.get("member") or emails.get(row.get("email", "").lower())
            if not member:
                raise BookingError(f"{where}: no member (member id, or an e-mail the office "
                                   "knows)")
            if not row.get("door"):
                raise BookingError(f"{where}: door: which room")
            start = parse_local(row.get("start", ""), tz, f"{where}: start")
            end = parse_local(row.get("end", ""), tz, f"{where}: end")
        except BookingError as exc:
            out.skipped.append(str(exc))
            continue
        out.rows.append({"id": row.get("id") or booking_id("csv", member, row["door"],
                                                            start.isoformat()),
                         "member_id": member, "door": row["door"], "start": start,
                         "end": end, "summary": row.get("summary") or None})
    return out


def fetch(url: str, timeout: float = 30.0) -> bytes:
    """A calendar feed over http(s) (webcal:// is https://)."""
    if url.startswith("webcal://"):
        url = "https://" + url[len("webcal://"):]
    if not url.startswith(("https://", "http://")):
        raise BookingError(f"{url}: a calendar feed is an http(s) or webcal URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read(MAX_FEED_BYTES + 1)
    except OSError as exc:
        raise BookingError(f"{url}: cannot fetch the calendar: {exc}") from None
    if len(data) > MAX_FEED_BYTES:
        raise BookingError(f"{url}: larger than {MAX_FEED_BYTES} bytes")
    return data


def read_ics(data: bytes, tz: ZoneInfo, *, emails: dict[str, str],
             doors: dict[str, str], door: str | None = None,
             now: datetime | None = None, horizon_days: int = 90) -> Parsed:
    """Bookings from an iCalendar document: each occurrence between a day before `now` and
    `horizon_days` after it. `emails`: e-mail (lower case) -> member id; `doors`: a door's
    id and its name (lower case) -> door id, to read LOCATION when no `door` is given."""
    try:
        import icalendar
        import recurring_ical_events
    except ImportError:
        raise BookingError("calendar import needs icalendar and recurring-ical-events: "
                           "pip install 'accessd[bookings]'") from None
    try:
        cal = icalendar.Calendar.from_ical(data)
    except ValueError as exc:
        raise BookingError(f"not an iCalendar document: {exc}") from None
    now = now or datetime.now(tz)
    first, last = now - timedelta(days=1), now + timedelta(days=horizon_days)
    try:
        occurrences = recurring_ical_events.of(cal).between(first, last)
    except Exception as exc:  # the library's own errors for a broken RRULE or zone
        raise BookingError(f"the calendar's events cannot be expanded: {exc}") from None
    out = Parsed()
    for ev in occurrences:
        if ev.name != "VEVENT":
            continue
        uid = str(ev.get("UID") or "")
        label = f"event {str(ev.get('SUMMARY') or uid)[:60]!r}"
        if str(ev.get("STATUS", "")).upper() == "CANCELLED":
            continue
        try:
            start = _aware(ev.get("DTSTART"), tz, label)
            end = _end(ev, start, tz, label)
            member = _member(ev, emails, label)
            room = door or _room(ev, doors, label)
        except BookingError as exc:
            out.skipped.append(str(exc))
            continue
        out.rows.append({"id": booking_id("ics", uid, start.astimezone(ZoneInfo("UTC"))
                                          .isoformat()),
                         "member_id": member, "door": room, "start": start, "end": end,
                         "summary": str(ev.get("SUMMARY") or "")[:200] or None})
    return out


def _aware(prop: Any, tz: ZoneInfo, label: str) -> datetime:
    if prop is None:
        raise BookingError(f"{label}: no DTSTART")
    value = prop.dt
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)
    if isinstance(value, date):  # all day: from the start of that local day
        return datetime.combine(value, time(0), tzinfo=tz)
    raise BookingError(f"{label}: DTSTART {value!r} is not a time")


def _end(ev: Any, start: datetime, tz: ZoneInfo, label: str) -> datetime:
    if ev.get("DTEND") is not None:
        end = _aware(ev.get("DTEND"), tz, label)
    elif ev.get("DURATION") is not None:
        end = start + ev.get("DURATION").dt
    elif not isinstance(ev.get("DTSTART").dt, datetime):
        end = start + timedelta(days=1)  # RFC 5545: an all-day event without an end
    else:
        raise BookingError(f"{label}: no DTEND or DURATION: an event without length books "
                           "nothing")
    if end <= start:
        raise BookingError(f"{label}: ends before it starts")
    return end


def _member(ev: Any, emails: dict[str, str], label: str) -> str:
    explicit = ev.get("X-ACCESSD-MEMBER")
    if explicit:
        return str(explicit)
    people = [ev.get("ORGANIZER")]
    attendees = ev.get("ATTENDEE")
    people += attendees if isinstance(attendees, list) else [attendees]
    for person in people:
        if person is None:
            continue
        address = str(person).lower().removeprefix("mailto:")
        if address in emails:
            return emails[address]
    raise BookingError(f"{label}: no organizer or attendee is a member's e-mail")


def _room(ev: Any, doors: dict[str, str], label: str) -> str:
    location = str(ev.get("LOCATION") or "").strip().lower()
    if location in doors:
        return doors[location]
    raise BookingError(f"{label}: location {location!r} is no room of the site (name the "
                       "room with --door)")
