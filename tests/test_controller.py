"""The door controller on real gpiozero devices (MockFactory) and real SQLite files."""

from __future__ import annotations

import json
import logging
import sqlite3
import time as clock_time
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from gpiozero.pins.mock import MockFactory

from accessd.clock import ClockTrust
from accessd.credentials import CredentialHasher
from accessd.daemon.controller import DoorController
from accessd.decision import Plan, Reason
from accessd.door.lock import LockRelay
from accessd.door.monitor import DoorStateMachine
from accessd.events import EventType
from accessd.guard import UnknownCardGuard
from accessd.readers.base import CardRead
from accessd.schedule import Schedule
from accessd.store.journal import Journal
from accessd.store.rules import RuleCache

PARIS = ZoneInfo("Europe/Paris")
SCHEDULE = Schedule(PARIS, time(9), time(18), frozenset({"mon", "tue", "wed", "thu", "fri"}),
                    frozenset())
ANA, OLI = "0A1B2C3D4E", "04A22B1C"


class Clock:
    def __init__(self, when: datetime) -> None:
        self.when, self.mono = when, 1000.0

    def wall(self) -> datetime:
        return self.when

    def monotonic(self) -> float:
        return self.mono


@pytest.fixture
def rig(tmp_path: Path):
    factory = MockFactory()
    relay = LockRelay(17, release_s=5, pin_factory=factory)
    rules = RuleCache(tmp_path / "rules.db")
    journal = Journal(tmp_path / "journal.db", "site", "front")
    hasher = CredentialHasher(b"k" * 32)
    rules.enroll(name="Ana", plan=Plan.SUBSCRIBER, credential_hash=hasher(ANA))
    rules.enroll(name="Oli", plan=Plan.OCCASIONAL, credential_hash=hasher(OLI))
    clock = Clock(datetime(2026, 11, 25, 22, 0, tzinfo=PARIS).astimezone(UTC))
    trust = ClockTrust("always")
    monitor = DoorStateMachine(20, 30)
    c = DoorController(
        site="site", door="front", rules=rules, journal=journal, hasher=hasher, clock=trust,
        schedule=SCHEDULE, lock=relay, release_s=5,
        guard_factory=lambda: UnknownCardGuard(3, 30, 60), door_monitor=monitor,
        monotonic=clock.monotonic, wallclock=clock.wall)
    yield c, relay, factory.pin(17), clock, trust, monitor
    c.close()
    relay.close()
    rules.close()
    journal.close()
    factory.close()


def tap(uid: str, reader: str = "door", direction: str = "entry") -> CardRead:
    return CardRead(reader=reader, uid=uid, technology="em4100", direction=direction)  # type: ignore[arg-type]


def journalled(c: DoorController) -> list:
    """Every entry, once the writer has committed what the door recorded so far."""
    assert c.flush(), "the journal did not take the door's events"
    return list(c.journal.iter_all())


def test_grant_releases_then_journals(rig) -> None:
    c, relay, pin, clock, *_ = rig
    assert pin.state is False  # locked from the start
    d = c.on_card(tap(ANA))
    assert d.granted and relay.released and pin.state is True
    (entry,) = journalled(c)
    e = entry.event
    assert e.type is EventType.ACCESS_GRANTED and e.member_name == "Ana"
    assert e.reason == "subscriber" and e.plan == "subscriber"
    assert ANA not in entry.to_json() and ANA.lower() not in entry.to_json()


def test_denied_stays_locked_with_reason(rig) -> None:
    c, relay, pin, *_ = rig
    d = c.on_card(tap(OLI))  # 22:00: outside opening hours
    assert not d.granted and d.reason is Reason.OUTSIDE_OPENING_HOURS
    assert not relay.released and pin.state is False
    assert journalled(c)[0].event.reason == "outside_opening_hours"


def test_untrusted_clock_marks_events(rig) -> None:
    c, relay, pin, clock, trust, _ = rig
    trust.trust = "never"
    assert c.on_card(tap(ANA)).granted  # subscribers still enter
    assert c.on_card(tap(OLI)).reason is Reason.CLOCK_UNTRUSTED
    assert [e.event.clock_trusted for e in journalled(c)] == [False, False]


def test_unknown_burst_locks_reader_out_and_raises_alarm(rig) -> None:
    c, relay, pin, clock, *_ = rig
    for i in range(3):
        clock.mono += 1
        assert c.on_card(tap(f"FFFFFFFF{i:02X}")).reason is Reason.UNKNOWN_CREDENTIAL
    types = [e.event.type for e in journalled(c)]
    assert types.count(EventType.READER_LOCKOUT) == 1
    clock.mono += 1
    assert c.alarms() == ["reader_lockout:door"]
    assert c.on_card(tap(ANA)).reason is Reason.READER_LOCKED_OUT
    assert c.on_card(tap(ANA, reader="inside")).granted  # the lockout is per reader
    relay.lock()
    clock.mono += 61
    assert c.alarms() == []
    assert c.on_card(tap(ANA)).granted


def test_enrolment_takes_effect_without_restart(rig) -> None:
    c, *_ = rig
    new = "1122334455"
    assert c.on_card(tap(new)).reason is Reason.UNKNOWN_CREDENTIAL
    other = RuleCache(c.rules.path)
    other.enroll(name="New", plan=Plan.SUBSCRIBER, credential_hash=c.hasher(new))
    other.close()
    assert c.on_card(tap(new)).granted


def test_capture_diverts_next_card(rig) -> None:
    import threading

    c, relay, *_ = rig
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("r", c.capture_next(None, 5)))
    t.start()
    deadline = clock_time.monotonic() + 5
    while not c.captures_waiting:
        assert clock_time.monotonic() < deadline, "capture_next never registered its request"
        clock_time.sleep(0.001)
    assert c.on_card(tap("1122334455")) is None  # no decision, no journal entry
    assert c.captures_waiting == 0
    t.join(5)
    assert got["r"].uid == "1122334455"
    assert not relay.released and journalled(c) == []


def test_exit_request_and_door_events(rig) -> None:
    c, relay, pin, clock, _, monitor = rig
    c.on_exit_request()
    assert relay.released
    events = monitor.door_opened(clock.mono + 1)
    assert [e.kind for e in events] == ["door.opened"]
    monitor.door_closed(clock.mono + 2)
    forced = monitor.door_opened(clock.mono + 100)
    assert [e.kind for e in forced] == ["door.forced"]
    assert journalled(c)[0].event.type is EventType.EXIT_REQUEST


def test_manual_release_is_logged_with_operator(rig) -> None:
    c, relay, *_ = rig
    c.manual_release("Claire", 10)
    assert relay.released
    e = journalled(c)[0].event
    assert e.type is EventType.MANUAL_RELEASE and e.detail["operator"] == "Claire"


class FailingJournal:
    """Stands in for a journal whose filesystem is full, then recovers."""

    def __init__(self, real: Journal) -> None:
        from accessd.errors import JournalFullError

        self.real, self.full = real, True
        self.error: Exception = JournalFullError("disk is full")

    def append_many(self, events):
        if self.full:
            raise self.error
        return self.real.append_many(events)

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def test_full_disk_keeps_deciding_and_recovers_in_order(rig) -> None:
    c, relay, *_ = rig
    failing = FailingJournal(c.journal)
    c.journal = failing  # type: ignore[assignment]
    assert c.on_card(tap(ANA)).granted  # the door keeps working
    assert not c.on_card(tap(OLI)).granted
    assert not c.flush()  # the writer tried, the journal refused
    assert not c.journal_ok and c.pending_events == 2
    assert c.alarms() == ["journal_unavailable"]
    assert c.counters.decided == 2 and (c.counters.granted, c.counters.denied) == (0, 0)
    assert c.last_decision is None  # the status shows what is journalled
    failing.full = False
    assert c.flush()
    types = [e.event.type for e in failing.real.iter_all()]
    assert types == [EventType.JOURNAL_UNAVAILABLE, EventType.ACCESS_GRANTED,
                     EventType.ACCESS_DENIED]
    assert c.journal_ok and c.alarms() == []
    assert (c.counters.granted, c.counters.denied) == (1, 1)
    assert c.last_decision is not None and c.last_decision["member_name"] == "Oli"


def test_untrusted_clock_uses_last_trusted_instant_not_a_wrong_one(rig) -> None:
    from datetime import date

    from accessd.events import Event

    c, relay, pin, clock, trust, _ = rig
    c.journal.append(Event(EventType.ACCESS_GRANTED, ts=clock.when))  # trusted, 2026
    c.journal.append(Event(EventType.ACCESS_GRANTED, ts=datetime(2040, 1, 1, tzinfo=UTC),
                           clock_trusted=False))  # a clock that was wrong, in the future
    c.rules.enroll(name="Val", plan=Plan.SUBSCRIBER, credential_hash=c.hasher("99887766"),
                   valid_until=date(2030, 1, 1))
    c.rules.enroll(name="Old", plan=Plan.SUBSCRIBER, credential_hash=c.hasher("11223344"),
                   valid_until=date(2026, 1, 1))
    fresh = DoorController(
        site="site", door="front", rules=c.rules, journal=c.journal, hasher=c.hasher,
        clock=ClockTrust("never"), schedule=SCHEDULE, lock=relay, release_s=5,
        guard_factory=lambda: UnknownCardGuard(3, 30, 60), monotonic=clock.monotonic,
        wallclock=lambda: datetime(1970, 1, 1, tzinfo=UTC))
    try:
        assert fresh.on_card(tap("99887766")).granted
        assert fresh.on_card(tap("11223344")).reason is Reason.EXPIRED  # ended before 2026-11-25
    finally:
        fresh.close()


# -- the door never stops deciding ----------------------------------------------------------
SCHEDULE_OK = {"timezone": "Europe/Paris", "opens": "09:00", "closes": "18:00",
               "days": ["sat"], "closures": []}


def by_hand(rules: RuleCache, sql: str, *args: object) -> None:
    """Write the rule cache as a person with sqlite3 (or an older version) could."""
    conn = sqlite3.connect(rules.path)
    try:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


def events_of(c: DoorController, etype: EventType) -> list:
    return [e.event for e in journalled(c) if e.event.type == etype]


@pytest.mark.parametrize("bad", [
    {**SCHEDULE_OK, "timezone": "Europe/Pariss"},
    {**SCHEDULE_OK, "closures": ["2026-02-30"]},
    {**SCHEDULE_OK, "opens": "25:00"},
    {**SCHEDULE_OK, "days": "sat"},
    "{not json",
], ids=["zone", "closure", "hour", "days", "json"])
def test_an_unusable_published_schedule_falls_back_to_the_configured_one(rig, bad) -> None:
    c, relay, pin, clock, *_ = rig
    by_hand(c.rules, "INSERT INTO meta(key, value) VALUES ('schedule', ?)",
            bad if isinstance(bad, str) else json.dumps(bad))
    assert c.on_card(tap(ANA)).granted  # 22:00 Wednesday: subscribers are not affected
    relay.lock()
    clock.when = datetime(2026, 11, 25, 10, 0, tzinfo=PARIS).astimezone(UTC)
    assert c.on_card(tap(OLI)).reason is Reason.OPENING_HOURS  # the config's Mon-Fri 9-18
    relay.lock()
    clock.mono += 10
    assert c.on_card(tap(OLI)).granted
    (problem,) = events_of(c, EventType.RULE_CACHE_ALARM)  # once, not on every tap
    assert problem.reason == "unusable_schedule" and problem.detail["error"]
    assert [e.reason for e in events_of(c, EventType.ACCESS_GRANTED)] == [
        "subscriber", "opening_hours", "opening_hours"]
    by_hand(c.rules, "UPDATE meta SET value = ? WHERE key = 'schedule'", json.dumps(SCHEDULE_OK))
    relay.lock()
    assert c.on_card(tap(OLI)).reason is Reason.CLOSED_DAY  # a usable one is used at once


@pytest.mark.parametrize("column,value", [
    ("plan", "vip"), ("status", "gone"), ("valid_until", "2026-02-30"), ("valid_from", "soon"),
])
def test_a_bad_stored_member_row_is_denied_and_reported_once(rig, column, value) -> None:
    c, relay, pin, clock, *_ = rig
    by_hand(c.rules, f"UPDATE members SET {column} = ? WHERE name = 'Ana'", value)
    for _ in range(3):
        clock.mono += 1
        d = c.on_card(tap(ANA))
        assert d is not None and not d.granted and d.reason is Reason.INVALID_RECORD
        assert d.member_name == "Ana"
    assert not relay.released and pin.state is False
    denied = events_of(c, EventType.ACCESS_DENIED)
    assert [(e.reason, e.member_name, e.plan) for e in denied] == [
        ("invalid_record", "Ana", None)] * 3  # no unknown plan on the wire
    (problem,) = events_of(c, EventType.RULE_CACHE_ALARM)
    assert problem.reason == "invalid_record" and problem.member_id == denied[0].member_id
    assert value in problem.detail["error"]
    assert c.on_card(tap(OLI)).reason is Reason.OUTSIDE_OPENING_HOURS  # others unaffected


def test_a_bad_row_still_says_revoked_and_still_lets_people_out(rig) -> None:
    c, relay, *_ = rig
    by_hand(c.rules, "UPDATE members SET valid_until = '2026-02-30', status = 'revoked' "
                     "WHERE name = 'Ana'")
    assert c.on_card(tap(ANA)).reason is Reason.MEMBER_REVOKED
    by_hand(c.rules, "UPDATE members SET status = 'active' WHERE name = 'Ana'")
    d = c.on_card(tap(ANA, reader="inside", direction="exit"))
    assert d.granted and d.reason is Reason.EXIT and relay.released  # a known card, inside


def test_a_bad_rule_version_does_not_stop_taps(rig) -> None:
    c, relay, *_ = rig
    by_hand(c.rules, "INSERT INTO meta(key, value) VALUES ('rule_version', '6.0')")
    assert c.on_card(tap(ANA)).granted
    assert c.rule_version() is None
    assert c.rule_version() is None
    (problem,) = events_of(c, EventType.RULE_CACHE_ALARM)
    assert problem.reason == "invalid_version" and "6.0" in problem.detail["error"]


def test_an_unexpected_error_is_a_denial_a_journal_entry_and_an_alarm(rig, caplog) -> None:
    c, relay, pin, clock, *_ = rig
    by_hand(c.rules, "DROP TABLE credentials")  # every lookup now fails
    with caplog.at_level(logging.ERROR, logger="accessd.daemon.controller"):
        for _ in range(3):
            clock.mono += 1
            d = c.on_card(tap(ANA))
            assert d is not None and not d.granted and d.reason is Reason.INTERNAL_ERROR
    assert not relay.released and pin.state is False
    assert [e.reason for e in events_of(c, EventType.ACCESS_DENIED)] == ["internal_error"] * 3
    (alarm,) = events_of(c, EventType.INTERNAL_ERROR_ALARM)
    assert "no such table" in alarm.detail["error"]
    assert "internal_error" in c.alarms()
    assert len([r for r in caplog.records if r.exc_info]) == 1  # the traceback, once
    assert c.counters.internal_errors == 3
    clock.mono += 120
    assert "internal_error" not in c.alarms()


def test_a_journal_failing_unexpectedly_holds_the_events(rig, caplog) -> None:
    c, relay, pin, clock, *_ = rig
    failing = FailingJournal(c.journal)
    failing.error = RuntimeError("a bug in the journal")
    c.journal = failing  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR):
        assert c.on_card(tap(ANA)).granted
        assert not c.on_card(tap(OLI)).granted
        assert not c.flush()
        clock.mono += 1
        assert c.on_card(tap(ANA)).granted  # later taps do not log it again
        assert not c.flush()
    assert c.pending_events == 3 and "journal_unavailable" in c.alarms()
    assert len([r for r in caplog.records if r.exc_info]) == 1
    failing.full = False
    assert c.flush()
    assert [e.event.type for e in failing.real.iter_all()][1:] == [
        EventType.ACCESS_GRANTED, EventType.ACCESS_DENIED, EventType.ACCESS_GRANTED]
