"""Product bugs found by the fault suite (faultsuite/, docs/reliability.md), one minimal test each.

Each is marked xfail(strict=True) until the product is fixed: the fix makes it pass, and then
strict xfail fails the run, which is the reminder to drop the marker.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from conftest import write_config
from mqtt_broker import needs_mosquitto

from accessd.config import load_config
from accessd.errors import JournalFullError
from accessd.readers.base import CardRead


def test_events_held_in_memory_are_not_lost_silently_at_stop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from accessd.daemon.service import Daemon

    daemon = Daemon(load_config(write_config(tmp_path)))
    try:
        daemon.start()
        c = daemon.controller
        assert c is not None

        def read_only(events: object) -> list:
            raise JournalFullError("journal.db: attempt to write a readonly database")

        c.journal.append_many = read_only  # type: ignore[method-assign]
        c.on_card(CardRead("door", "0A1B2C3D4E", "simulated"))
        assert c.pending_events == 1
    finally:
        with caplog.at_level(logging.INFO):
            daemon.stop()
    lost = [r for r in caplog.records if r.levelno >= logging.ERROR
            and re.search(r"\b[12] (held )?events?\b", r.getMessage())]
    assert lost, "events held in memory vanished at stop with no ERROR saying how many"

    # the spooled events are journalled, in order, at the next start
    again = Daemon(load_config(write_config(tmp_path)))
    try:
        again.start()
        assert again.controller is not None
        types = [str(e.event.type) for e in again.controller.journal.iter_all()]
    finally:
        again.stop()
    assert types[-5:] == ["daemon.started", "alarm.journal_unavailable", "access.denied",
                          "daemon.stopped", "daemon.started"]
    assert not list((tmp_path / "state" / "spool").glob("*.jsonl"))


@pytest.mark.parametrize("issued_at", ["", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00"])
def test_a_signed_command_with_a_bad_timestamp_is_refused_as_invalid(issued_at: str) -> None:
    """Found by fuzz_parsers (signed command payloads): the schema's date-time format is not
    enforced, so `issued_at` reached `parse_ts` and a ValueError (or, with no UTC offset, a
    TypeError) escaped `verify_command` instead of a refusal."""
    from accessd.errors import ProtocolError
    from accessd.events import utcnow
    from accessd.protocol.codec import encode
    from accessd.protocol.commands import make_command, verify_command
    from accessd.protocol.signing import OfficeKey, PublicKeys

    key = OfficeKey.generate()
    cmd = make_command(key, type="release", site="s", door="d", operator="o", seconds=5)
    payload = {**cmd["payload"], "issued_at": issued_at}
    with pytest.raises(ProtocolError, match=r"^invalid: issued_at"):
        verify_command(encode(key.sign(payload)), PublicKeys([key.public]), site="s",
                       door="d", now=utcnow())


@needs_mosquitto
def test_a_stored_unusable_rule_version_does_not_wedge_the_uplink(tmp_path: Path) -> None:
    """Found by the insider scenario: a rule version stored as '6.0' (or garbage) made the
    uplink's worker raise at its first status, so the door never delivered an event or
    received a rule again. It is now rewritten at start (as 6, or 0 for garbage), with an
    alarm, and the office's next snapshot applies."""
    import sqlite3

    from mqtt_broker import OFFICE_KEY, Broker, DoorRig, start_collector, wait_for

    from accessd.central.publisher import build
    from accessd.central.store import open_store
    from accessd.protocol.codec import encode
    from accessd.protocol.transport import connected_client
    from accessd.store.rules import RuleCache

    broker = Broker(tmp_path / "broker")
    broker.start()
    store = open_store(tmp_path / "central.db")
    rig = DoorRig(tmp_path / "door", broker)
    rig.register(store)
    RuleCache(rig.config.storage.rules_db).close()
    db = sqlite3.connect(rig.config.storage.rules_db)
    with db:
        db.execute("INSERT INTO meta(key, value) VALUES ('rule_version', '6.0')")
    db.close()
    collector = start_collector(store, broker)
    rig.start()
    central = connected_client(broker.settings("central"), "publisher")
    try:
        rig.produce(3)
        wait_for(lambda: store.count_events("s1", "d1") == rig.journal.last_seq
                 == rig.journal.acked_seq >= 3, timeout=15,
                 message="the door's events delivered despite the stored value")
        store.set_site("s1", timezone="Europe/Paris")
        for _ in range(7):  # the office's version 7 follows what the door means it holds
            docs = build(store, OFFICE_KEY, "s1")
        central.publish("accessd/s1/rules/snapshot", encode(docs.snapshot), qos=1,
                        retain=True).wait_for_publish(10)
        wait_for(lambda: rig.uplink.state()["rule_version"] == 7, timeout=15,
                 message="the next office snapshot applied, the stored value repaired")
        cache = RuleCache(rig.config.storage.rules_db)
        assert cache.get_meta("rule_version") == "7"
        cache.close()
        alarms = [e for e in rig.uplink_events if e.type == "alarm.rule_cache"]
        assert [e.reason for e in alarms] == ["invalid_version"]
        assert "'6.0'" in alarms[0].detail["error"]
    finally:
        central.disconnect()
        central.loop_stop()
        rig.close()
        collector.stop()
        store.close()
        broker.stop()


@pytest.mark.parametrize("site_args", [["--timezone", "Europe/Pariss", "--opens", "09:00"],
                                       ["--timezone", "Europe/Paris", "--closures",
                                        "2026-02-30"]])
def test_the_office_refuses_a_calendar_that_means_nothing(tmp_path: Path,
                                                          site_args: list[str]) -> None:
    """Found by the insider scenario: the office signed and published a schedule with an
    unknown time zone or an impossible date, which every door then refused whole (the docs
    promise the check at the office before signing too)."""
    from accessd.central import publisher
    from accessd.central.cli import main as central
    from accessd.central.store import open_store
    from accessd.protocol.signing import OfficeKey

    store_path = str(tmp_path / "central.db")
    assert central(["central", "site", "--store", store_path, "--site", "s", *site_args]) == 1
    store = open_store(store_path)
    try:
        assert (store.site("s") or {}).get("schedule") is None  # nothing stored
        # a store that holds one already (written by an older version): never signed
        store.set_site("s", timezone="Europe/Paris", schedule={
            "timezone": "Europe/Pariss", "opens": "09:00", "closes": "18:00",
            "days": ["mon"], "closures": ["2026-02-30"]})
        with pytest.raises(ValueError, match="Pariss"):
            publisher.build(store, OfficeKey.generate(), "s")
        assert store.latest_version("s") == 0
    finally:
        store.close()


@pytest.mark.parametrize("what", ["card", "member"])
def test_a_pending_door_revocation_survives_the_next_members_file(tmp_path: Path,
                                                                  what: str) -> None:
    """Found by the insider scenario: a card the host revoked at one door was suspended at
    once at the office, but the office's next routine publish of its members file made it
    active again at every other door while the revocation waited for an operator."""
    from datetime import UTC, datetime

    from rights_helpers import Office

    from accessd import admin
    from accessd.decision import Reason, Status

    lost = "0A00000001"
    day = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    office = Office(tmp_path)
    try:
        rows = [{"id": "ana", "plan": "subscriber", "card": lost}]
        office.import_members(rows)
        office.publish_to_all()
        a, b = office.doors["a"], office.doors["b"]
        if what == "card":  # the member reports the card lost at door a
            admin.revoke_card(a.site, uid=lost)
        else:
            admin.set_status(a.site, "ana", Status.REVOKED)
        office.deliver("a")
        assert len(office.store.proposals("s1")) == 1  # the revocation waits for an operator
        office.publish_to_all()
        assert b.decide(lost, day).reason is Reason.MEMBER_SUSPENDED
        counts = office.import_members(rows)  # the office's routine publish of its file
        office.publish_to_all()
        assert b.decide(lost, day).reason is Reason.MEMBER_SUSPENDED, counts
        assert counts["kept_suspended"] == (["ana"] if what == "member"
                                            else [office.hasher(lost)[:12]])
        assert not a.opens(lost, day)
        (p,) = office.store.proposals("s1")
        office.store.reject("s1", [p["id"]], by="olivia")  # the operator says no: the file
        office.import_members(rows)  # decides again
        office.publish_to_all()
        assert b.opens(lost, day)
    finally:
        office.close()


def test_the_door_key_makes_a_private_storage_folder_whatever_the_umask(tmp_path: Path) -> None:
    """Found by the insider scenario: `accessd door-key`, the installation step that makes
    the door's key, created the storage folder with the umask's mode (world-listable, and
    writable by others under umask 000: rules.db could have been replaced)."""
    import os
    import stat

    from accessd.protocol.signing import DoorKey

    old = os.umask(0)
    try:
        DoorKey.load_or_create(tmp_path / "state" / "door.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "state" / "door.key").stat().st_mode) == 0o600


@needs_mosquitto
@pytest.mark.xfail(strict=True, reason="found by the insider scenario, not fixed (a protocol "
                   "change): an event signed with a stolen door key that takes the number "
                   "after one of the door's events in flight makes the office acknowledge past "
                   "the door's last number; the door takes a new journal and sends its "
                   "unacknowledged event again, which the office then stores twice")
def test_a_stolen_key_taking_the_next_number_does_not_store_a_real_event_twice(
        tmp_path: Path) -> None:
    from mqtt_broker import Broker, DoorRig, start_collector, wait_for

    from accessd.central.store import open_store
    from accessd.events import Event, EventType, JournalEntry
    from accessd.protocol.codec import encode
    from accessd.protocol.transport import connected_client
    from accessd.uplink.outbox import event_message

    broker = Broker(tmp_path / "broker")
    broker.start()
    store = open_store(tmp_path / "central.db")
    collector = start_collector(store, broker)
    rig = DoorRig(tmp_path / "door", broker)
    key = rig.register(store)  # the thief copied it from the SD card
    rig.start()
    thief = connected_client(broker.settings("door-s1-d1"), "thief")
    try:
        rig.produce(3)
        wait_for(lambda: rig.journal.acked_seq == 3 == store.count_events("s1", "d1"),
                 message="3 stored")
        collector.stop()  # the office is slow: what comes now waits at the broker
        forged = JournalEntry(5, "forged-5", "s1", "d1", Event(
            EventType.ACCESS_GRANTED, member_id="mallory", result="granted",
            reason="subscriber"))
        thief.publish("accessd/s1/d1/event", encode(key.sign(event_message(
            forged, rig.uplink.state()["journal"]))), qos=1).wait_for_publish(10)
        rig.produce(1)  # the door's own #4, right behind it
        collector = start_collector(store, broker)
        wait_for(lambda: rig.journal.depth() == 0 and store.count_events("s1", "d1") >= 5,
                 timeout=30, message="the door's events acknowledged again")
        ids = [e["id"] for e in store.events("s1", door="d1")]
        assert len(ids) == len(set(ids)), "a real event is stored under two numbers"
    finally:
        thief.disconnect()
        thief.loop_stop()
        rig.close()
        collector.stop()
        store.close()
        broker.stop()
