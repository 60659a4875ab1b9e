"""Door -> central office over a real Mosquitto: every event stored once, whatever breaks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_broker import (
    Broker,
    DoorRig,
    needs_mosquitto,
    register_door,
    run_broker,
    start_collector,
    wait_for,
)

from accessd.central.store import open_store

pytestmark = needs_mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from run_broker(tmp_path / "broker")


@pytest.fixture
def volatile_broker(tmp_path: Path) -> Iterator[Broker]:
    yield from run_broker(tmp_path / "broker", persistence=False)


def stored_all(store, rig: DoorRig) -> bool:
    return (store.count_events(rig.site, rig.door) == rig.journal.last_seq
            and rig.journal.acked_seq == rig.journal.last_seq)


def test_events_reach_the_store_once_and_leave_the_outbox(tmp_path: Path, broker: Broker):
    store = open_store(tmp_path / "central.db")
    collector = start_collector(store, broker)
    rig = DoorRig(tmp_path / "door", broker)
    rig.register(store)
    rig.start()
    try:
        rig.produce(250, batch=10)
        wait_for(lambda: stored_all(store, rig), message="250 events stored and acked")
        assert store.count_events("s1", "d1") == 250
        assert rig.journal.depth() == 0
        assert collector.stats.stored == 250
        assert store.stored_seq("s1") == {"d1": 250}
        wait_for(lambda: rig.uplink.state()["outbox_depth"] == 0, message="state refreshed")
        assert rig.uplink.state()["connected"] is True
    finally:
        rig.close()
        collector.stop()
        store.close()


def _burst_through_outage(tmp_path: Path, broker: Broker, *, kill: bool) -> None:
    store = open_store(tmp_path / "central.db")
    collector = start_collector(store, broker)
    rig = DoorRig(tmp_path / "door", broker)
    rig.register(store)
    rig.start()
    producer = threading.Thread(target=lambda: [  # 400 events over ~1.6 s (a load, paced)
        (rig.produce(5), time.sleep(0.02)) for _ in range(80)])
    try:
        producer.start()
        wait_for(lambda: store.count_events("s1", "d1") >= 20, message="delivery under way")
        broker.kill() if kill else broker.stop()  # mid-burst: events in flight are lost
        wait_for(lambda: rig.journal.last_seq - store.count_events("s1", "d1") >= 20,
                 message="events waiting in the journal during the outage")
        depth_during_outage = rig.journal.depth()
        broker.start()
        producer.join()
        wait_for(lambda: stored_all(store, rig), timeout=40,
                 message="all 400 events stored after the broker restart")
        assert depth_during_outage > 0
        assert rig.journal.last_seq == 400
        assert store.count_events("s1", "d1") == 400  # produced = stored, PK forbids copies
        assert store.stored_seq("s1") == {"d1": 400}
        assert rig.journal.depth() == 0
    finally:
        producer.join()
        rig.close()
        collector.stop()
        store.close()


def test_broker_killed_during_a_burst_with_persistence(tmp_path: Path, broker: Broker):
    _burst_through_outage(tmp_path, broker, kill=True)


def test_broker_restarted_without_persistence_during_a_burst(tmp_path: Path,
                                                             volatile_broker: Broker):
    # the collector's session and every queued message are gone with the broker
    _burst_through_outage(tmp_path, volatile_broker, kill=True)


def test_collector_offline_while_the_door_publishes(tmp_path: Path, broker: Broker):
    store = open_store(tmp_path / "central.db")
    collector = start_collector(store, broker, client_id="collector-a")
    rig = DoorRig(tmp_path / "door", broker)
    rig.register(store)
    rig.start()
    try:
        rig.produce(20)
        wait_for(lambda: stored_all(store, rig), message="first 20 stored")
        collector.stop()  # the office goes away; its session stays at the broker
        rig.produce(200, batch=10)
        wait_for(lambda: rig.uplink.state()["outbox_depth"] == 200, message="outbox filled")
        assert store.count_events("s1", "d1") == 20
        assert rig.journal.acked_seq == 20  # the broker having them is not enough
        collector = start_collector(store, broker, client_id="collector-a")
        wait_for(lambda: stored_all(store, rig), timeout=40, message="backlog delivered")
        assert store.count_events("s1", "d1") == 220
        assert rig.journal.depth() == 0
    finally:
        rig.close()
        collector.stop()
        store.close()


def test_two_collectors_share_the_load_without_loss_or_copies(tmp_path: Path, broker: Broker):
    store_url = tmp_path / "central.db"
    stores = [open_store(store_url), open_store(store_url)]
    collectors = [start_collector(stores[0], broker, client_id="collector-a"),
                  start_collector(stores[1], broker, client_id="collector-b")]
    rigs = [DoorRig(tmp_path / "d1", broker, door="d1"),
            DoorRig(tmp_path / "d2", broker, door="d2")]
    for rig in rigs:
        rig.register(stores[0])
        rig.start()
    try:
        for _ in range(10):
            for rig in rigs:
                rig.produce(30, batch=3)
        wait_for(lambda: all(stored_all(stores[0], r) for r in rigs), timeout=40,
                 message="600 events from two doors stored")
        assert stores[0].count_events("s1") == 600
        assert stores[0].stored_seq("s1") == {"d1": 300, "d2": 300}
        assert all(c.stats.stored > 0 for c in collectors), "both collectors took a share"
        assert sum(c.stats.stored for c in collectors) == 600
    finally:
        for rig in rigs:
            rig.close()
        for c in collectors:
            c.stop()
        for s in stores:
            s.close()


def test_a_hole_in_the_sequence_is_asked_for_again(tmp_path: Path, broker: Broker):
    store = open_store(tmp_path / "central.db")
    collector = start_collector(store, broker, gap_timeout_s=0.5)
    rig = DoorRig(tmp_path / "door", broker, mqtt_extra="ack_timeout_s = 120\n")
    rig.register(store)
    rig.start()
    try:
        wait_for(lambda: rig.uplink.state()["connected"], message="door connected")
        outbox = rig.uplink.outbox
        real_send, dropped = outbox.send, []

        def lossy(entries):  # the network loses seq 3 once (the rest of its batch arrives)
            kept = [item for item in entries if item[0].seq != 3 or dropped]
            if len(kept) < len(entries):
                dropped.append(3)
                return len(entries) if real_send(kept) == len(kept) else 0
            return real_send(entries)

        outbox.send = lossy
        rig.produce(10)
        wait_for(lambda: stored_all(store, rig), timeout=20, message="hole filled")
        assert dropped == [3]
        assert collector.stats.resend_requests >= 1
        assert store.count_events("s1", "d1") == 10
    finally:
        rig.close()
        collector.stop()
        store.close()


def test_uplink_sigkilled_with_unacknowledged_events(tmp_path: Path, broker: Broker):
    """A door process killed -9 mid-delivery resends from its journal when it comes back."""
    import os
    import signal
    import subprocess
    import sys

    from mqtt_broker import door_config_text

    folder = tmp_path / "door"
    config = folder / "accessd.toml"
    config.parent.mkdir(parents=True)
    config.write_text(door_config_text(folder, broker))
    from accessd.store.journal import Journal

    (folder / "data").mkdir()
    journal = Journal(folder / "data" / "journal.db", "s1", "d1")
    from accessd.events import Event, EventType

    journal.append_many([Event(EventType.ACCESS_GRANTED, member_id=f"m{i}")
                         for i in range(500)])
    store = open_store(tmp_path / "central.db")
    register_door(store, folder)
    collector = start_collector(store, broker)

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "accessd.uplink", "--config",
                                 str(config)], stderr=subprocess.PIPE)

    proc = spawn()
    try:
        wait_for(lambda: store.count_events("s1", "d1") > 0, message="delivery started")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        killed_at = journal.acked_seq
        journal.append_many([Event(EventType.ACCESS_DENIED, member_id="late")
                             for _ in range(100)])  # the daemon went on without the uplink
        proc = spawn()
        wait_for(lambda: journal.acked_seq == 600, timeout=40, message="all 600 acked")
        assert killed_at < 600
        assert store.count_events("s1", "d1") == 600
        assert store.stored_seq("s1") == {"d1": 600}
    finally:
        proc.terminate()
        proc.wait(10)
        journal.close()
        collector.stop()
        store.close()
