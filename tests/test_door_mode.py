"""Unlock schedules and the host's holds (accessd.door.mode): the relay held released on a
schedule only with trusted time, "first in", holds until further notice, every change
journalled; the fault suite's release audit takes the unlocking modes and nothing else."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from gpiozero.pins.mock import MockFactory
from test_daemon_e2e import ANA, DaemonProcess, cli

from accessd.config import UnlockConfig
from accessd.credentials import CredentialHasher
from accessd.daemon.controller import DoorController
from accessd.decision import Plan, Reason
from accessd.door.lock import LockRelay
from accessd.door.mode import DoorMode, Hold, Mode
from accessd.door.monitor import DoorStateMachine
from accessd.events import EventType, JournalEntry
from accessd.guard import UnknownCardGuard
from accessd.readers.base import CardRead
from accessd.schedule import Schedule
from accessd.store.journal import Journal
from accessd.store.rules import RuleCache
from faultsuite.daemon import Life
from faultsuite.release import audit

PARIS = ZoneInfo("Europe/Paris")
SCHEDULE = Schedule(PARIS, time(9), time(18), frozenset({"mon", "tue", "wed", "thu", "fri"}),
                    frozenset({datetime(2026, 12, 25).date()}))
STAFFED = UnlockConfig(("mon", "tue", "wed", "thu", "fri"), time(9), time(12))
MONDAY = datetime(2026, 12, 7, tzinfo=PARIS)
SUB, OCC = "0A1B2C3D4E", "04A22B1C"


def at(h: int, m: int = 0, days: int = 0) -> datetime:
    return (MONDAY + timedelta(days=days)).replace(hour=h, minute=m)


def test_the_mode_follows_schedule_trust_closures_first_in_and_holds():
    m = DoorMode(STAFFED)
    assert m.evaluate(at(10), True, SCHEDULE).mode is Mode.UNLOCKED
    assert m.evaluate(at(10), False, SCHEDULE).why == "clock_untrusted"
    assert m.evaluate(at(12), True, SCHEDULE).why == "outside_hours"
    assert m.evaluate(at(10, days=5), True, SCHEDULE).why == "closed_day"  # Saturday
    assert m.evaluate(datetime(2026, 12, 25, 10, tzinfo=PARIS), True, SCHEDULE).why == \
        "closed_day"
    m.hold = Hold.OPEN
    assert m.evaluate(at(3), False, SCHEDULE).mode is Mode.HELD_OPEN  # the host needs no clock
    m.hold = Hold.LOCKED
    assert m.evaluate(at(10), True, SCHEDULE).mode is Mode.HELD_LOCKED
    first = DoorMode(UnlockConfig(STAFFED.days, time(9), time(12), first_in=True))
    assert first.evaluate(at(10), True, SCHEDULE).why == "waiting_first_in"
    assert not first.came_in(at(8), False, SCHEDULE)  # which day is it? unknown
    assert first.came_in(at(8, 50), True, SCHEDULE)
    assert not first.came_in(at(9), True, SCHEDULE)  # already in today
    assert first.evaluate(at(10), True, SCHEDULE).mode is Mode.UNLOCKED
    assert first.evaluate(at(10, days=1), True, SCHEDULE).why == "waiting_first_in"
    assert DoorMode(None).evaluate(at(10), True, SCHEDULE).why == "no_schedule"


class Trust:
    """A clock whose trust the test sets (as timesyncd's flag would come and go)."""

    def __init__(self) -> None:
        self.ok = True

    def trusted(self, now: datetime | None = None) -> bool:
        return self.ok


@pytest.fixture
def door(tmp_path: Path):
    factory = MockFactory()
    relay = LockRelay(17, release_s=3, pin_factory=factory)
    rules = RuleCache(tmp_path / "rules.db")
    journal = Journal(tmp_path / "journal.db", "site", "front")
    hasher = CredentialHasher(b"k" * 32)
    rules.enroll(name="Sub", plan=Plan.SUBSCRIBER, credential_hash=hasher(SUB))
    rules.enroll(name="Occ", plan=Plan.OCCASIONAL, credential_hash=hasher(OCC))
    now = {"t": at(8, 30)}
    trust = Trust()

    built: list[DoorController] = []

    def build(unlock: UnlockConfig) -> DoorController:
        built.append(DoorController(
            site="site", door="front", rules=rules, journal=journal, hasher=hasher,
            clock=trust, schedule=SCHEDULE, lock=relay, release_s=3,  # type: ignore[arg-type]
            guard_factory=lambda: UnknownCardGuard(3, 30, 60),
            door_monitor=DoorStateMachine(20, 30), wallclock=lambda: now["t"], unlock=unlock))
        return built[-1]

    yield build, relay, factory.pin(17), now, trust, Journalled(journal, built)
    for c in built:
        c.close()
    relay.close()
    rules.close()
    journal.close()
    factory.close()


class Journalled:
    """The journal as the controllers' writers leave it once they committed what they hold
    (they commit off the door's lock, accessd/store/writer.py)."""

    def __init__(self, journal: Journal, controllers: list[DoorController]) -> None:
        self.journal, self.controllers = journal, controllers

    def iter_all(self) -> Iterator[JournalEntry]:
        for c in self.controllers:
            assert c.flush(), "the journal did not take the door's events"
        return self.journal.iter_all()


def modes(journal: Journalled) -> list[tuple[str, str]]:
    return [(e.event.detail["mode"], e.event.detail["why"]) for e in journal.iter_all()
            if e.event.type is EventType.DOOR_MODE]


def tap(uid: str) -> CardRead:
    return CardRead(reader="door", uid=uid, technology="em4100", direction="entry")  # type: ignore[arg-type]


def test_the_schedule_never_unlocks_without_trusted_time(door):
    build, relay, pin, now, trust, journal = door
    c = build(STAFFED)
    trust.ok = False
    now["t"] = at(10)  # staffed hours, but the clock cannot be trusted (a boot without NTP)
    c.tick_mode()
    assert not relay.released and pin.state is False and modes(journal) == []
    # cards are decided as with a locked door: the subscriber in, the hour-bound one not
    assert c.on_card(tap(OCC)).reason is Reason.CLOCK_UNTRUSTED
    assert c.on_card(tap(SUB)).reason is Reason.SUBSCRIBER
    relay.lock()
    trust.ok = True  # synchronised: the schedule applies
    c.tick_mode()
    assert relay.released and relay.held and modes(journal) == [("unlocked", "schedule")]
    assert c.on_card(tap("0000000001")).reason is Reason.UNKNOWN_CREDENTIAL  # still decided
    assert relay.released
    trust.ok = False  # the sync is lost again: locked at once, journalled
    c.tick_mode()
    assert not relay.released and pin.state is False
    assert modes(journal)[-1] == ("locked", "clock_untrusted")
    trust.ok = True
    now["t"] = at(12)
    c.tick_mode()
    assert not relay.released and len(modes(journal)) == 2  # outside the hours: no change


def test_first_in_waits_for_a_subscriber_or_the_host(door):
    build, relay, pin, now, trust, journal = door
    c = build(UnlockConfig(STAFFED.days, time(9), time(12), first_in=True))
    now["t"] = at(9, 30)
    c.tick_mode()
    assert not relay.released
    assert c.on_card(tap(OCC)).reason is Reason.OPENING_HOURS  # an occasional member: no
    relay.lock()
    c.tick_mode()
    assert not relay.released
    assert c.on_card(tap(SUB)).granted
    assert relay.held and modes(journal) == [("unlocked", "first_in")]
    now["t"] = at(12)
    c.tick_mode()
    assert modes(journal)[-1] == ("locked", "outside_hours")
    now["t"] = at(9, 30, days=1)  # the next day waits again; the host's release counts
    c.tick_mode()
    assert not relay.held
    c.manual_release("Hélène", 3)
    assert relay.held and modes(journal)[-1] == ("unlocked", "first_in")


def test_the_host_holds_a_door_until_further_notice(door):
    build, relay, pin, now, trust, journal = door
    c = build(STAFFED)
    now["t"] = at(20)
    trust.ok = False
    c.set_hold(Hold.OPEN, "Hélène")
    assert relay.held and pin.state is True
    now["t"] += timedelta(hours=3)
    c.tick_mode()
    assert relay.held  # until further notice
    c.set_hold(Hold.LOCKED, "Hélène")
    trust.ok = True
    now["t"] = at(10, days=1)  # staffed hours: the schedule is suspended
    c.tick_mode()
    assert not relay.released
    c.set_hold(Hold.NONE, "Hélène")
    assert relay.held
    entries = [e.event for e in journal.iter_all() if e.event.type is EventType.DOOR_MODE]
    assert [(e.detail["mode"], e.detail.get("operator")) for e in entries] == [
        ("held_open", "Hélène"), ("held_locked", "Hélène"), ("unlocked", "Hélène")]


def _life(tmp_path: Path, releases: list[datetime], modes_: list[tuple[datetime, str]]) -> Life:
    journal = Journal(tmp_path / "journal.db", "s", "d")
    from accessd.events import Event

    journal.append_many([Event(EventType.DOOR_MODE, ts=t, detail={"mode": m})
                         for t, m in modes_])
    journal.close()
    log = tmp_path / "daemon.log"
    log.write_text("".join(f"{t.astimezone().strftime('%Y-%m-%d %H:%M:%S,%f')[:-3]} INFO    "
                           "accessd.door.lock: door released (BCM17)\n" for t in releases))
    life = Life(log, tmp_path / "journal.db")
    life.capture_reasons()
    return life


def test_the_release_audit_takes_unlocking_modes_and_nothing_else(tmp_path):
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    good = _life(tmp_path / "a", [t0, t0 + timedelta(minutes=5)],
                 [(t0, "unlocked"), (t0 + timedelta(minutes=5), "held_open")])
    assert audit([good])[2] == []
    bad = _life(tmp_path / "b", [t0], [(t0, "locked")])
    assert len(audit([bad])[2]) == 1


def test_the_host_s_door_mode_through_the_daemon(tmp_path: Path):
    from conftest import write_config

    readers = (f'[[readers]]\nname = "door"\ntype = "simulated"\n'
               f'source = "{tmp_path}/taps"\nhold_off_s = 0\n')
    config = write_config(tmp_path, "[lock]\nrelease_s = 3\n", readers=readers)
    assert cli(config, "enroll", "--name", "Ana", "--plan", "subscriber", "--card",
               ANA).returncode == 0
    d = DaemonProcess(config, tmp_path)
    try:
        r = cli(config, "door-mode", "open", "--operator", "Hélène")
        assert r.returncode == 0 and "held_open" in r.stdout, r.stderr
        d.wait_for(r"door released \(BCM17\)")
        assert d.status()["mode"]["mode"] == "held_open"
        assert cli(config, "door-mode", "locked", "--operator", "Hélène").returncode == 0
        d.wait_for(r"door locked \(BCM17\)")
    finally:
        assert d.stop() == 0
    d = DaemonProcess(config, tmp_path)  # a lock-down outlives a restart; an open hold not
    try:
        assert d.status()["mode"]["mode"] == "held_locked"
        assert cli(config, "door-mode", "auto", "--operator", "Hélène").returncode == 0
        assert d.status()["mode"] == {"mode": "locked", "why": "no_schedule", "hold": "auto",
                                      "schedule": None}
    finally:
        assert d.stop() == 0
    journal = Journal(tmp_path / "state" / "journal.db", "test-site", "front", readonly=True)
    try:
        got = [(e.event.detail["mode"], e.event.detail["why"]) for e in journal.iter_all()
               if e.event.type is EventType.DOOR_MODE]
    finally:
        journal.close()
    assert got == [("held_open", "host_open"), ("held_locked", "host_locked"),
                   ("held_locked", "host_locked"), ("locked", "host_auto")]
    assert not re.search("Traceback", d.text())


def test_the_documented_three_door_pi_parses_as_the_docs_say():
    """docs/configuration.md's [[doors]] example: an entrance unlocked on staffed hours after
    the first in, two meeting rooms; the entrance keeps the single-door journal and key."""
    from accessd.config import parse_config

    text = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    section = text[text.index("## [[doors]]"):]
    block = section[section.index("```toml") + 7:]
    cfg = parse_config(block[:block.index("```")], base=Path("/etc/accessd"))
    assert [d.id for d in cfg.doors] == ["entrance", "room-a", "room-b"]
    entrance = cfg.doors[0]
    assert entrance.journal_file.name == "journal.db" and entrance.door_key_file.name == \
        "door.key"
    assert entrance.unlock == UnlockConfig(("mon", "tue", "wed", "thu", "fri"), time(9),
                                           time(12), first_in=True)
    assert cfg.doors[1].journal_file.name == "journal-room-a.db"
    assert len({d.pins.lock_relay for d in cfg.doors}) == 3
