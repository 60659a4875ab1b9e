"""Over a real Mosquitto with real uplinks and a real collector: a door catching up sends its
events in signed batches (version 3), a door set to version 2 sends them one by one, and the
office stores both, each event once; a batch a stolen door login forges is refused whole."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_broker import PREFIX, Broker, DoorRig, needs_mosquitto, run_broker, start_collector
from mqtt_broker import wait_for as wait

from accessd.central.store import CentralStore, open_store
from accessd.events import Event, EventType, JournalEntry
from accessd.protocol.codec import encode
from accessd.protocol.delivery import encode_events
from accessd.protocol.signing import DoorKey, canonical
from accessd.protocol.transport import connected_client
from accessd.uplink.outbox import event_message

pytestmark = needs_mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from run_broker(tmp_path / "broker")


@pytest.fixture
def office(tmp_path: Path) -> Iterator[CentralStore]:
    store = open_store(tmp_path / "central.db")
    yield store
    store.close()


def stored_as_journaled(store: CentralStore, rig: DoorRig) -> bool:
    held = {(e.seq, e.id) for e in rig.journal.iter_all()}
    got = {(e["seq"], e["id"]) for e in store.events("s1", door=rig.door)}
    return store.count_events("s1", rig.door) == len(held) and got == held


def test_a_backlog_goes_in_signed_batches_and_a_version_2_door_is_stored_alike(
        tmp_path, broker, office):
    batched = DoorRig(tmp_path / "d1", broker, "s1", "d1")
    single = DoorRig(tmp_path / "d2", broker, "s1", "d2", mqtt_extra="event_version = 2\n")
    for rig in (batched, single):
        rig.register(office)
        rig.produce(250, batch=250)  # a backlog: journaled while the office was away
    collector = start_collector(office, broker)
    try:
        for rig in (batched, single):
            rig.start()
        wait(lambda: all(stored_as_journaled(office, r) and r.journal.depth() == 0
                         for r in (batched, single)), timeout=30,
             message="both backlogs stored and acknowledged")
        # d2's 250 events came one a message; d1's in a few messages of up to 100
        assert 250 + 3 <= collector.stats.received < 250 + 20
        assert office.alarms() == [] and office.conflicts() == []
        assert collector.stats.invalid == 0 and collector.stats.duplicates == 0
        batched.produce(3)  # live taps after the catch-up: alone, as they come
        wait(lambda: stored_as_journaled(office, batched) and batched.journal.depth() == 0,
             message="three live taps")
    finally:
        for rig in (batched, single):
            rig.close()
        collector.stop()


def _batch(seqs: range, journal: str, key: DoorKey | None) -> bytes:
    lines = [canonical(event_message(JournalEntry(
        seq, f"forged-{seq}", "s1", "d1", Event(EventType.ACCESS_GRANTED, member_id="mallory",
                                                result="granted")), journal)).decode()
        for seq in seqs]
    if key is not None:
        return encode_events(key, [json.loads(line) for line in lines])
    return encode({"v": 3, "events": "\n".join(lines)})


def test_a_stolen_door_login_gets_no_forged_batch_stored(tmp_path, broker, office):
    collector = start_collector(office, broker)
    rig = DoorRig(tmp_path / "door", broker)
    door_key = rig.register(office)
    rig.start()
    thief = connected_client(broker.settings("door-s1-d1"), "thief")
    try:
        rig.produce(4)
        wait(lambda: office.count_events("s1", "d1") == 4 == rig.journal.acked_seq,
             message="4 genuine events")
        journal = rig.uplink.state()["journal"]
        genuine = json.loads(_batch(range(5, 9), journal, door_key))
        tampered = {**genuine, "events": genuine["events"].replace("mallory", "mallorx")}
        for raw in (_batch(range(5, 9), journal, None),  # unsigned
                    _batch(range(5, 9), journal, DoorKey.generate()),  # a key of its own
                    encode(tampered),  # the door's signature over other lines
                    encode({**genuine, "v": 2})):  # an envelope no schema knows
            thief.publish(f"{PREFIX}/s1/d1/event", raw, qos=1).wait_for_publish(10)
        wait(lambda: collector.stats.invalid == 4, message="four forged batches refused")
        assert office.count_events("s1", "d1") == 4 and office.stored_seq("s1") == {"d1": 4}
        kinds = {a["kind"]: a["count"] for a in office.alarms()}
        assert kinds == {"event_unsigned": 1, "event_unknown_key": 1,
                         "event_bad_signature": 1, "event_invalid": 1}
        rig.produce(4)  # the door's own 5..8 are stored, not dropped as copies
        wait(lambda: stored_as_journaled(office, rig) and rig.journal.depth() == 0,
             message="the genuine 5..8")
        assert office.conflicts() == []
    finally:
        thief.disconnect()
        thief.loop_stop()
        rig.close()
        collector.stop()
