"""Over a real Mosquitto (TLS, logins, ACLs): what a stolen door login cannot do, and what no
float where an integer belongs can do to a door.

A stolen door login is the door's broker password without the door's key: it can publish on
the door's own event topic, nothing else the door cannot. It must not get a forged event
stored, move the office's mark, or make the door drop events with a fake acknowledgement.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_broker import (
    OFFICE_KEY,
    PREFIX,
    Broker,
    DoorRig,
    needs_mosquitto,
    run_broker,
    start_collector,
    wait_for,
)

from accessd.central.store import open_store
from accessd.events import Event, EventType, JournalEntry
from accessd.protocol.codec import encode
from accessd.protocol.delivery import make_ack
from accessd.protocol.rules import make_snapshot
from accessd.protocol.signing import DoorKey, OfficeKey
from accessd.protocol.transport import connected_client
from accessd.uplink.outbox import event_message

pytestmark = needs_mosquitto
EVENT, ACK = f"{PREFIX}/s1/d1/event", f"{PREFIX}/s1/d1/ack"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from run_broker(tmp_path / "broker")


@pytest.fixture
def office(tmp_path: Path):
    store = open_store(tmp_path / "central.db")
    yield store
    store.close()


def client(broker: Broker, user: str):  # type: ignore[no-untyped-def]
    return connected_client(broker.settings(user), f"{user}-thief")


def publish(c, topic: str, payload: bytes) -> None:  # type: ignore[no-untyped-def]
    c.publish(topic, payload, qos=1).wait_for_publish(10)


def forged(seq: int, journal: str, key: DoorKey | None = None, **extra: object) -> bytes:
    entry = JournalEntry(seq, f"forged-{seq}", "s1", "d1", Event(
        EventType.ACCESS_GRANTED, member_id="mallory", result="granted", reason="subscriber"))
    payload = {**event_message(entry, journal), **extra}
    return encode(key.sign(payload) if key else payload)


def test_a_stolen_door_login_gets_no_forged_event_stored_and_no_mark_moved(
        tmp_path, broker, office):
    collector = start_collector(office, broker)
    rig = DoorRig(tmp_path / "door", broker)
    rig.register(office)
    rig.start()
    thief = client(broker, "door-s1-d1")
    try:
        rig.produce(5)
        wait_for(lambda: office.count_events("s1", "d1") == 5 == rig.journal.acked_seq,
                 message="5 genuine events stored")
        journal = rig.uplink.state()["journal"]
        mine = DoorKey.generate()  # the thief's own key: registered nowhere
        publish(thief, EVENT, forged(6, journal))  # unsigned, with the door's next number
        publish(thief, EVENT, forged(6, journal, mine))
        publish(thief, EVENT, forged(7, journal, mine, floor=7))  # "1..6 are gone"
        publish(thief, EVENT, forged(900, journal, floor=900))
        publish(thief, EVENT, b'{"payload": {"seq": 6}')  # not even JSON
        wait_for(lambda: collector.stats.invalid == 5, message="five forgeries refused")
        assert office.count_events("s1", "d1") == 5
        assert office.stored_seq("s1") == {"d1": 5} and office.purged() == []
        kinds = {a["kind"]: a for a in office.alarms()}
        assert set(kinds) == {"event_unsigned", "event_unknown_key", "event_invalid"}
        assert all((a["site"], a["door"]) == ("s1", "d1") for a in kinds.values())
        assert kinds["event_unsigned"]["count"] == 2
        # the door's own events with those numbers are stored, not dropped as copies
        rig.produce(2)
        wait_for(lambda: office.count_events("s1", "d1") == 7 == rig.journal.acked_seq,
                 message="the genuine 6 and 7")
        ids = {e.seq: e.id for e in rig.journal.iter_all()}
        assert {e["seq"]: e["id"] for e in office.events("s1")} == ids
        assert office.conflicts() == []
    finally:
        thief.disconnect()
        thief.loop_stop()
        rig.close()
        collector.stop()


def test_no_fake_acknowledgement_makes_the_door_drop_events(tmp_path, broker, office,
                                                             caplog):
    collector = start_collector(office, broker)
    rig = DoorRig(tmp_path / "door", broker)
    rig.register(office)
    rig.start()
    thief, central = client(broker, "door-s1-d1"), client(broker, "central")
    try:
        rig.produce(3)
        wait_for(lambda: rig.journal.acked_seq == 3, message="3 acknowledged")
        journal = rig.uplink.state()["journal"]
        old = encode(make_ack(OFFICE_KEY, site="s1", door="d1", journal=journal, acked=1))
        collector.stop()  # the office is away: nothing stores the next events
        rig.produce(4)
        wait_for(lambda: rig.journal.depth() == 4, message="4 waiting")
        # the door login may not publish acknowledgements at all (the ACL drops them)
        publish(thief, ACK, encode(make_ack(OfficeKey.generate(), site="s1", door="d1",
                                            journal=journal, acked=7)))
        # a client that could (a broken ACL, the central login): none of these is used
        fakes = [
            encode({"v": 1, "acked": 7}),
            encode({"v": 2, "site": "s1", "door": "d1", "journal": journal, "acked": 7}),
            encode(make_ack(OfficeKey.generate(), site="s1", door="d1", journal=journal,
                            acked=7)),
            encode(make_ack(OFFICE_KEY, site="s1", door="d2", journal=journal, acked=7)),
            encode(OFFICE_KEY.sign({"v": 2, "site": "s1", "door": "d1", "journal": journal,
                                    "acked": 7.0})),
            encode(OFFICE_KEY.sign({"v": 2, "site": "s1", "door": "d1", "journal": journal,
                                    "acked": True})),
        ]
        with caplog.at_level(logging.WARNING, logger="accessd.uplink.service"):
            for fake in fakes:
                publish(central, ACK, fake)
            wait_for(lambda: rig.uplink.state()["acks_refused"] == len(fakes),
                     message="every fake counted")
        warnings = [r for r in caplog.records if "ignoring an acknowledgement" in r.message]
        assert len(warnings) == 1  # one WARNING, then a count
        # an old genuine acknowledgement replayed: a fact about the past, it changes nothing
        publish(central, ACK, old)
        publish(central, ACK, encode(make_ack(OFFICE_KEY, site="s1", door="d1",
                                              journal=journal, acked=4)))
        wait_for(lambda: rig.journal.acked_seq == 4, message="a genuine ack, after the replay")
        assert rig.journal.depth() == 3 and rig.uplink.state()["acks_refused"] == len(fakes)
        # the office comes back: the events the fakes claimed are delivered
        collector = start_collector(office, broker)
        wait_for(lambda: office.count_events("s1", "d1") == 7 == rig.journal.acked_seq,
                 message="all 7 stored")
    finally:
        for c in (thief, central):
            c.disconnect()
            c.loop_stop()
        rig.close()
        collector.stop()


def test_a_float_mark_stored_by_an_old_version_does_not_wedge_the_uplink(
        tmp_path, broker, office):
    rig = DoorRig(tmp_path / "door", broker, mqtt_extra="status_interval_s = 1\n")
    rig.register(office)
    rig.produce(40)
    db = sqlite3.connect(rig.config.storage.journal_db)
    with db:
        db.execute("INSERT INTO meta(key, value) VALUES ('acked_seq', '29.0') "
                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value")
    db.close()
    collector = start_collector(office, broker)
    rig.start()
    try:
        # 30..40 go out as usual; 1..29, which the door believes stored, the office asks for
        wait_for(lambda: office.count_events("s1", "d1") == 40 == rig.journal.acked_seq,
                 timeout=30, message="all 40 stored and acknowledged")
        assert rig.uplink.state()["connected"] and rig.uplink.state()["last_error"] is None
    finally:
        rig.close()
        collector.stop()


def test_a_signed_rule_document_with_a_float_version_is_refused_whole(tmp_path, broker):
    rig = DoorRig(tmp_path / "door", broker)
    rig.start()
    central = client(broker, "central")
    members = [{"id": "a", "name": "A", "plan": "subscriber", "status": "active"}]
    creds = [{"hash": "ab" * 32, "member_id": "a", "status": "active"}]
    try:
        wait_for(lambda: rig.uplink.state()["connected"], message="door online")
        good = make_snapshot(OFFICE_KEY, site="s1", version=6, members=members,
                             credentials=creds)
        for odd in (6.0, True):
            bad = OFFICE_KEY.sign({**good["payload"], "version": odd})
            publish(central, f"{PREFIX}/s1/rules/snapshot", encode(bad))
        wait_for(lambda: len([e for e in rig.uplink_events
                              if e.type == EventType.RULES_REJECTED]) == 2,
                 message="two rejections")
        assert [e.reason for e in rig.uplink_events] == ["invalid", "invalid"]
        assert "version" in json.dumps([e.detail for e in rig.uplink_events])
        assert rig.uplink.state()["rule_version"] == 0
        publish(central, f"{PREFIX}/s1/rules/snapshot", encode(good))
        wait_for(lambda: rig.uplink.state()["rule_version"] == 6, message="v6 applied")
    finally:
        central.disconnect()
        central.loop_stop()
        rig.close()
