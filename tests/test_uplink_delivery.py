"""Door -> central office over a real Mosquitto: every event stored once, whatever breaks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_broker import Broker, DoorRig, needs_mosquitto, run_broker, start_collector, wait_for

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
