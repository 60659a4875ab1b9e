"""The office's door rules: doors, access groups, rights, bookings; signed to the doors.

A booking made at the office opens its room and the entrance at a door that applied the
signed rules; an edit after the start and a cancellation take effect at the next tap after
the delta. Bookings also come from a CSV file and an iCalendar feed (recurring events across
a daylight-saving change, exceptions, cancelled occurrences, removed events).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from test_central_store import a_store

from accessd.central import publisher
from accessd.central.bookings import read_csv, read_ics
from accessd.central.cli import main
from accessd.central.store import CentralStore, open_store
from accessd.decision import Reason, decide
from accessd.errors import BookingError, MemberNotFound
from accessd.protocol.codec import encode
from accessd.protocol.signing import OfficeKey, PublicKeys
from accessd.schedule import Schedule, door_access
from accessd.store.rules import RuleCache
from accessd.uplink.rulesync import RuleApplier

PARIS = ZoneInfo("Europe/Paris")
KEY = OfficeKey.generate()
H = {"zoe": "a" * 64, "hugo": "b" * 64}


def site(store: CentralStore) -> None:
    store.set_site("s1", timezone="Europe/Paris")
    store.import_members("s1", [
        {"id": "zoe", "name": "Zoé", "plan": "occasional", "status": "active",
         "email": "zoe@example.org"},
        {"id": "hugo", "name": "Hugo", "plan": "subscriber", "status": "active"}],
        [{"hash": H["zoe"], "member_id": "zoe", "status": "active"},
         {"hash": H["hugo"], "member_id": "hugo", "status": "active"}])
    for door, kind in (("entrance", "entrance"), ("work", "room"), ("room-a", "meeting_room"),
                       ("room-b", "meeting_room")):
        store.rooms.set_door("s1", door, kind, name=f"Salle {door[-1].upper()}"
                             if kind == "meeting_room" else None)
    store.rooms.set_access("s1", plans={"occasional": ["entrance", "work"]},
                           booking_lead_min=10, billing="booked")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CentralStore]:
    for s in a_store(request.param, tmp_path):
        site(s)
        yield s


class Door:
    """A door's rule cache fed with the office's signed documents, deciding at `now`."""

    def __init__(self, door: str) -> None:
        self.rules = RuleCache(":memory:")
        self.applier = RuleApplier(self.rules, PublicKeys([KEY.public]), site="s1", door=door)
        self.door = door

    def apply(self, docs: publisher.Documents) -> None:
        use_delta = docs.delta is not None and \
            docs.delta["payload"]["base_version"] == self.rules.version
        doc, kind = (docs.delta, "delta") if use_delta else (docs.snapshot, "snapshot")
        out = self.applier.handle(encode(doc), kind)
        assert out.applied, out


    def tap(self, member: str, now: datetime) -> Reason:
        import json

        access = door_access(json.loads(self.rules.get_meta("access")), self.door)
        record = self.rules.lookup(H[member], self.door, entrance=access.entrance,
                                   since="2000-01-01T00:00:00Z")
        schedule = Schedule.from_dict(json.loads(self.rules.get_meta("schedule") or "null")
                                      or {"timezone": "Europe/Paris", "opens": "09:00",
                                          "closes": "18:00", "closures": [],
                                          "days": ["mon", "tue", "wed", "thu", "fri"]})
        return decide(record, now=now, clock_trusted=True, schedule=schedule,
                      door=access).reason


def publish(store: CentralStore, *doors: Door) -> publisher.Documents:
    docs = publisher.build(store, KEY, "s1", delta=True)
    for d in doors:
        d.apply(docs)
    return docs


_TODAY = datetime.now(PARIS).date()
SATURDAY = _TODAY + timedelta(days=(5 - _TODAY.weekday()) % 7 + 7)  # not over: published


def at(h: int, m: int = 0, days: int = 0) -> datetime:
    return datetime.combine(SATURDAY + timedelta(days=days), datetime.min.time(),
                            tzinfo=PARIS).replace(hour=h, minute=m)


def test_a_booking_opens_its_room_and_the_entrance_then_an_edit_and_a_cancellation(store):
    room, entrance = Door("room-a"), Door("entrance")
    b = store.rooms.add_booking("s1", member_id="zoe", door="room-a", start=at(10),
                                end=at(11), summary="client meeting")
    publish(store, room, entrance)
    assert room.tap("zoe", at(9, 49)) is Reason.OUTSIDE_BOOKING
    assert room.tap("zoe", at(9, 50)) is Reason.BOOKING  # the 10 minutes' lead
    assert entrance.tap("zoe", at(9, 50)) is Reason.BOOKING
    assert room.tap("zoe", at(10, 30)) is Reason.BOOKING
    # edited after its start: ends at 10:20; the next tap after the delta follows it
    store.rooms.add_booking("s1", member_id="zoe", door="room-a", start=at(10), end=at(10, 20),
                            booking_id=b["id"])
    publish(store, room)
    assert room.tap("zoe", at(10, 19)) is Reason.BOOKING
    assert room.tap("zoe", at(10, 30)) is Reason.OUTSIDE_BOOKING
    # cancelled: the delta removes it, the door refuses at once
    store.rooms.cancel_booking("s1", b["id"])
    docs = publisher.build(store, KEY, "s1", delta=True)
    assert docs.delta["payload"]["removed_bookings"] == [b["id"]]
    out = room.applier.handle(encode(docs.delta), "delta")
    assert out.applied
    assert room.tap("zoe", at(10, 5)) is Reason.DOOR_NOT_ALLOWED
    assert store.rooms.booking("s1", b["id"])["status"] == "cancelled"  # kept for billing
    assert "summary" not in str(docs.snapshot)  # office-only fields stay at the office


def test_rights_and_restrictions_reach_the_doors(store):
    store.rooms.add_right("s1", {"member_id": "zoe", "door": "room-b", "effect": "allow",
                                 "days": "sat", "start": "08:00", "end": "12:00",
                                 "note": "weekend workshop"})
    store.rooms.add_right("s1", {"member_id": "hugo", "door": "room-a", "effect": "deny",
                                 "valid_from": "2026-05-01", "valid_until": "2026-05-31"})
    b, a = Door("room-b"), Door("room-a")
    publish(store, b, a)
    assert b.tap("zoe", at(9)) is Reason.ACCESS_RIGHT
    assert b.tap("zoe", at(12)) is Reason.OUTSIDE_WINDOW
    assert a.tap("hugo", datetime(2026, 5, 9, 9, tzinfo=PARIS)) is Reason.RESTRICTED
    assert a.tap("hugo", datetime(2026, 6, 1, 9, tzinfo=PARIS)) is Reason.SUBSCRIBER
    with pytest.raises(ValueError, match="end"):
        store.rooms.add_right("s1", {"member_id": "zoe", "door": "*", "effect": "allow",
                                     "start": "12:00", "end": "08:00"})
    with pytest.raises(MemberNotFound):
        store.rooms.add_right("s1", {"member_id": "nobody", "door": "*", "effect": "deny"})


def test_bookings_are_checked_before_they_are_stored(store):
    with pytest.raises(BookingError, match="not a meeting room"):
        store.rooms.add_booking("s1", member_id="zoe", door="work", start=at(10), end=at(11))
    with pytest.raises(BookingError, match="before it starts"):
        store.rooms.add_booking("s1", member_id="zoe", door="room-a", start=at(11),
                                end=at(10))
    with pytest.raises(MemberNotFound):
        store.rooms.add_booking("s1", member_id="nobody", door="room-a", start=at(10),
                                end=at(11))
    store.revoke("s1", member_id="hugo")
    with pytest.raises(BookingError, match="revoked"):
        store.rooms.add_booking("s1", member_id="hugo", door="room-a", start=at(10),
                                end=at(11))


CALENDAR = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//rooms//EN
BEGIN:VTIMEZONE
TZID:Europe/Paris
BEGIN:DAYLIGHT
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
END:DAYLIGHT
BEGIN:STANDARD
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
END:STANDARD
END:VTIMEZONE
BEGIN:VEVENT
UID:weekly-standup@example.org
SUMMARY:Stand-up
DTSTART;TZID=Europe/Paris:20260317T100000
DTEND;TZID=Europe/Paris:20260317T110000
RRULE:FREQ=WEEKLY;COUNT=4
EXDATE;TZID=Europe/Paris:20260324T100000
ORGANIZER:mailto:ZOE@example.org
LOCATION:Salle A
END:VEVENT
BEGIN:VEVENT
UID:weekly-standup@example.org
RECURRENCE-ID;TZID=Europe/Paris:20260407T100000
SUMMARY:Stand-up (moved)
DTSTART;TZID=Europe/Paris:20260407T140000
DTEND;TZID=Europe/Paris:20260407T150000
ORGANIZER:mailto:zoe@example.org
LOCATION:Salle A
END:VEVENT
BEGIN:VEVENT
UID:cancelled@example.org
SUMMARY:Called off
STATUS:CANCELLED
DTSTART;TZID=Europe/Paris:20260318T100000
DTEND;TZID=Europe/Paris:20260318T110000
ORGANIZER:mailto:zoe@example.org
LOCATION:Salle A
END:VEVENT
BEGIN:VEVENT
UID:stranger@example.org
SUMMARY:Not a member
DTSTART:20260319T090000Z
DTEND:20260319T100000Z
ORGANIZER:mailto:someone@elsewhere.example
LOCATION:Salle A
END:VEVENT
END:VCALENDAR
"""


def test_a_recurring_calendar_event_across_the_spring_change(tmp_path):
    parsed = read_ics(CALENDAR.encode(), PARIS, emails={"zoe@example.org": "zoe"},
                      doors={"room-a": "room-a", "salle a": "room-a"},
                      now=datetime(2026, 3, 16, tzinfo=PARIS), horizon_days=60)
    starts = sorted((r["start"].astimezone(UTC), r["end"].astimezone(UTC))
                    for r in parsed.rows)
    # 17 March 10:00 CET = 09:00Z; 24 March excluded; 31 March 10:00 CEST = 08:00Z;
    # 7 April moved to 14:00 CEST = 12:00Z
    assert starts == [(datetime(2026, 3, 17, 9, tzinfo=UTC), datetime(2026, 3, 17, 10, tzinfo=UTC)),
                      (datetime(2026, 3, 31, 8, tzinfo=UTC), datetime(2026, 3, 31, 9, tzinfo=UTC)),
                      (datetime(2026, 4, 7, 12, tzinfo=UTC), datetime(2026, 4, 7, 13, tzinfo=UTC))]
    assert {r["member_id"] for r in parsed.rows} == {"zoe"}
    assert {r["door"] for r in parsed.rows} == {"room-a"}
    assert len({r["id"] for r in parsed.rows}) == 3
    assert len(parsed.skipped) == 1 and "e-mail" in parsed.skipped[0]


def test_importing_a_calendar_again_cancels_what_it_no_longer_has(tmp_path):
    db = str(tmp_path / "office.db")
    s = open_store(db)
    site(s)
    s.close()
    ics = tmp_path / "rooms.ics"
    ics.write_text(CALENDAR)
    now = datetime.now(PARIS)
    # move the calendar to the coming weeks, so that its occurrences are not over
    shift = (now.date() - datetime(2026, 3, 17).date()).days // 7 * 7 + 7
    text = CALENDAR
    for old in ("20260317", "20260324", "20260407", "20260318", "20260319"):
        new = (datetime.strptime(old, "%Y%m%d") + timedelta(days=shift)).strftime("%Y%m%d")
        text = text.replace(old, new)
    ics.write_text(text)
    args = ["central", "booking", "import", "--store", db, "--site", "s1", "--ics", str(ics)]
    assert main(args) == 0
    s = open_store(db)
    try:
        assert len(s.rooms.bookings("s1")) == 3
    finally:
        s.close()
    moved = text[text.index("BEGIN:VEVENT\nUID:weekly-standup@example.org\nRECURRENCE-ID"):]
    moved = moved[:moved.index("END:VEVENT\n") + len("END:VEVENT\n")]
    ics.write_text(text.replace("COUNT=4", "COUNT=1").replace(moved, ""))  # shortened
    assert main(args) == 0
    s = open_store(db)
    try:
        active = s.rooms.bookings("s1")
        cancelled = s.rooms.bookings("s1", status="cancelled")
        assert len(active) == 1 and len(cancelled) == 2
    finally:
        s.close()


def test_bookings_from_a_csv_file(tmp_path):
    f = tmp_path / "b.csv"
    f.write_text("member,email,door,start,end,summary\n"
                 "zoe,,room-a,2026-03-29 10:00,2026-03-29 12:00,Sunday\n"
                 ",ZOE@example.org,room-b,2026-10-25T02:30,2026-10-25T03:30,the hour twice\n"
                 "zoe,,room-a,2026-03-29 02:30,2026-03-29 03:30,skipped hour\n"
                 ",nobody@example.org,room-a,2026-03-30 10:00,2026-03-30 11:00,\n")
    parsed = read_csv(f, PARIS, {"zoe@example.org": "zoe"})
    assert [(r["door"], r["start"].astimezone(UTC).hour) for r in parsed.rows] == \
        [("room-a", 8), ("room-b", 0)]  # 10:00 CEST; 02:30 CEST, the first of the two
    assert len(parsed.skipped) == 2
    assert "does not exist" in parsed.skipped[0] and "no member" in parsed.skipped[1]


def test_the_booking_commands(tmp_path, capsys):
    db = str(tmp_path / "office.db")
    s = open_store(db)
    site(s)
    s.close()
    KEY.save(tmp_path / "office.key", tmp_path / "office.pub")
    base = ["--store", db, "--site", "s1"]
    assert main(["central", "booking", "add", *base, "--member", "zoe", "--door", "room-a",
                 "--start", "2099-01-05 10:00", "--end", "2099-01-05 11:30",
                 "--json"]) == 0
    booking = __import__("json").loads(capsys.readouterr().out)
    assert booking["start"] == "2099-01-05T09:00:00Z"
    assert main(["central", "booking", "list", *base]) == 0
    assert booking["id"] in capsys.readouterr().out
    # a cancellation goes to the doors at once: without a key it is refused
    assert main(["central", "booking", "cancel", *base, booking["id"]]) == 1
    assert main(["central", "booking", "cancel", *base, booking["id"], "--key",
                 str(tmp_path / "office.key"), "--no-send"]) == 0
    s = open_store(db)
    try:
        snapshot = s.latest_snapshot("s1")  # the first version: a snapshot without it
        assert snapshot is not None and booking["id"] not in snapshot
        assert s.rooms.booking("s1", booking["id"])["status"] == "cancelled"
    finally:
        s.close()
    assert main(["central", "right", "add", *base, "--member", "zoe", "--door", "room-b",
                 "--effect", "allow", "--days", "sat,sun", "--start", "09:00",
                 "--end", "13:00"]) == 0
    assert main(["central", "right", "list", *base]) == 0
    assert "allow" in capsys.readouterr().out
    assert main(["central", "door", "set", *base, "--door", "room-c",  # not a kind of door
                 "--kind", "bedroom"]) == 2


def test_the_report_shows_booked_and_measured_hours_billed_as_the_site_says(store):
    from accessd.central.report import monthly_hours

    nov = datetime(2026, 11, 3, 10, tzinfo=PARIS)
    store.rooms.add_booking("s1", member_id="zoe", door="room-a", start=nov,
                            end=nov + timedelta(hours=2))
    store.rooms.add_booking("s1", member_id="zoe", door="room-b", start=nov + timedelta(days=1),
                            end=nov + timedelta(days=1, minutes=90))
    gone = store.rooms.add_booking("s1", member_id="zoe", door="room-b",
                                   start=nov + timedelta(days=2),
                                   end=nov + timedelta(days=2, hours=5))
    store.rooms.cancel_booking("s1", gone["id"])
    store.rooms.add_booking("s1", member_id="hugo", door="room-a", start=nov,  # subscriber
                            end=nov + timedelta(hours=3))
    journal = "0" * 32
    store.store_events([{"v": 2, "seq": i, "id": f"e{i}", "site": "s1", "door": "entrance",
                         "journal": journal, "type": "access.granted", "ts": ts,
                         "clock_trusted": True, "member_id": "zoe", "member_name": "Zoé",
                         "plan": "occasional", "result": "granted", "reason": reason,
                         "detail": {"direction": direction}}
                        for i, (ts, reason, direction) in enumerate([
                            ("2026-11-03T08:50:00.000Z", "booking", "entry"),
                            ("2026-11-03T10:05:00.000Z", "exit", "exit")], 1)])
    (row,) = monthly_hours(store, "s1", "2026-11")
    assert (row["member_id"], row["hours"], row["booked_hours"], row["billing"],
            row["billed_hours"]) == ("zoe", 1.25, 3.5, "booked", 3.5)
    store.rooms.set_access("s1", billing="measured")
    (row,) = monthly_hours(store, "s1", "2026-11")
    assert (row["billing"], row["billed_hours"]) == ("measured", 1.25)
