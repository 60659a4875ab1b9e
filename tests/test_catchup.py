"""The office catches up from the doors' journals, over a real Mosquitto with a real uplink
and a real collector: a wiped office store, numbers deleted by retention, a door's journal
replaced, a journal restored from an old copy. Every event ends in the store once."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from mqtt_broker import Broker, DoorRig, needs_mosquitto, run_broker, start_collector, wait_for

from accessd.central.store import CentralStore, open_store
from accessd.events import EventType, format_ts, utcnow

pytestmark = needs_mosquitto
QUICK = "status_interval_s = 1\n"  # the retained status says what the door holds, each second


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from run_broker(tmp_path / "broker")


def same_as_journal(store: CentralStore, rig: DoorRig) -> bool:
    """The store holds exactly the door's journal: every event, once, with its number."""
    stored = {(e["seq"], e["id"]) for e in store.events("s1", door="d1")}
    held = {(e.seq, e.id) for e in rig.journal.iter_all()}
    return store.count_events("s1", "d1") == len(held) and stored == held


def test_a_wiped_office_store_fills_again_from_the_door_s_journal(tmp_path, broker):
    first = open_store(tmp_path / "office-a.db")
    collector = start_collector(first, broker, client_id="collector-a")
    rig = DoorRig(tmp_path / "door", broker, mqtt_extra=QUICK)
    rig.register(first)
    rig.start()
    try:
        rig.produce(450, batch=50)
        wait_for(lambda: rig.journal.acked_seq == 450, message="all acknowledged")
        collector.stop()
        first.close()
        (tmp_path / "office-a.db").unlink()  # the office's disk is lost
        store = open_store(tmp_path / "office-b.db")  # a new, empty store
        rig.register(store)  # the doors' keys are registered again
        # the same collector, on the new store (a second client id would leave the first
        # one's session in the shared group, taking half the messages into its queue)
        collector = start_collector(store, broker, client_id="collector-a")
        wait_for(lambda: same_as_journal(store, rig), timeout=60,
                 message="450 events back in the new store")
        assert store.stored_seq("s1") == {"d1": 450}
        assert collector.stats.resend_requests >= 5  # a window of 100 at a time
        assert store.alarms() == [] and store.conflicts() == []
        rig.produce(5)  # and life goes on
        wait_for(lambda: same_as_journal(store, rig) and rig.journal.depth() == 0,
                 message="new events too")
        store.close()
    finally:
        rig.close()
        collector.stop()


def test_numbers_retention_deleted_are_declared_and_the_rest_arrives(tmp_path, broker):
    store = open_store(tmp_path / "office.db")
    rig = DoorRig(tmp_path / "door", broker, mqtt_extra=QUICK)
    rig.register(store)
    rig.produce(60)
    rig.journal.acknowledge(60)  # delivered long ago to an office store since lost
    old = format_ts(utcnow() - timedelta(days=120))
    rig.journal.conn.execute("UPDATE events SET ts = ? WHERE seq <= 25", (old,))
    assert rig.journal.purge(90) == 25
    collector = start_collector(store, broker)
    rig.start()
    try:
        wait_for(lambda: same_as_journal(store, rig), timeout=30, message="26..60 stored")
        assert store.stored_seq("s1") == {"d1": 60}
        assert [(p["first_seq"], p["last_seq"]) for p in store.purged("s1")] == [(1, 25)]
        (alarm,) = store.alarms()
        assert (alarm["kind"], alarm["door"], alarm["count"]) == ("events_purged", "d1", 25)
    finally:
        rig.close()
        collector.stop()
        store.close()


def _wipe(folder: Path) -> None:
    for name in ("journal.db", "journal.db-wal", "journal.db-shm", "door.key"):
        (folder / "data" / name).unlink(missing_ok=True)


def test_a_door_whose_journal_was_replaced_is_renumbered_after_the_office(tmp_path, broker):
    store = open_store(tmp_path / "office.db")
    collector = start_collector(store, broker)
    rig = DoorRig(tmp_path / "door", broker)
    rig.register(store)
    rig.start()
    try:
        rig.produce(30)
        wait_for(lambda: store.count_events("s1", "d1") == 30 == rig.journal.acked_seq,
                 message="30 stored")
        rig.close()
        _wipe(tmp_path / "door")  # a new SD card: a new journal, a new door key
        rig = DoorRig(tmp_path / "door", broker)
        rig.produce(12)  # numbered 1..12 again
        rig.register(store)  # the operator registers the new key
        rig.start()
        wait_for(lambda: store.count_events("s1", "d1") == 43, timeout=30,
                 message="the 12 new events and the renumbering event, after the 30")
        seqs = [e.seq for e in rig.journal.iter_all()]
        assert seqs == list(range(31, 44))  # renumbered after the office's 30
        renumbered = [e for e in rig.journal.iter_all()
                      if e.event.type == EventType.JOURNAL_RENUMBERED]
        assert len(renumbered) == 1 and renumbered[0].event.detail["after"] == 30
        wait_for(lambda: rig.journal.depth() == 0, message="all acknowledged")
        assert {(e["seq"], e["id"]) for e in store.events("s1") if e["seq"] > 30} == {
            (e.seq, e.id) for e in rig.journal.iter_all()}
        assert [a["kind"] for a in store.alarms()] == ["journal_replaced"]
        assert store.conflicts() == []
    finally:
        rig.close()
        collector.stop()
        store.close()


def test_a_journal_restored_from_an_old_copy_takes_a_new_id(tmp_path, broker):
    store = open_store(tmp_path / "office.db")
    collector = start_collector(store, broker)
    rig = DoorRig(tmp_path / "door", broker)
    rig.register(store)
    rig.start()
    data = tmp_path / "door" / "data"
    try:
        rig.produce(5)
        wait_for(lambda: store.count_events("s1", "d1") == 5 == rig.journal.acked_seq,
                 message="5 stored")
        rig.close()
        shutil.copytree(data, tmp_path / "copy")  # an image of the SD card
        rig = DoorRig(tmp_path / "door", broker)
        rig.start()
        rig.produce(5)
        wait_for(lambda: store.count_events("s1", "d1") == 10 == rig.journal.acked_seq,
                 message="10 stored")
        rig.close()
        shutil.rmtree(data)
        shutil.copytree(tmp_path / "copy", data)  # the old image is put back
        rig = DoorRig(tmp_path / "door", broker)
        rig.produce(3)  # 6, 7, 8 again: not the office's 6, 7, 8
        rig.start()
        wait_for(lambda: store.count_events("s1", "d1") == 14 and rig.journal.depth() == 0,
                 timeout=30, message="the 3 new events and the renumbering, after the 10")
        assert [e.seq for e in rig.journal.iter_all()] == [1, 2, 3, 4, 5, 11, 12, 13, 14]
        kept = {e["seq"]: e["id"] for e in store.events("s1")}
        assert all(kept[e.seq] == e.id for e in rig.journal.iter_all())
        assert sorted(c["seq"] for c in store.conflicts()) == [6, 7, 8]
        assert {a["kind"] for a in store.alarms()} == {"event_conflict", "journal_replaced"}
    finally:
        rig.close()
        collector.stop()
        store.close()
