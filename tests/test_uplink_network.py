"""Rules, commands, status and discovery over a real Mosquitto with TLS, logins and ACLs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from mqtt_broker import (
    PREFIX,
    Broker,
    DoorRig,
    needs_mosquitto,
    run_broker,
    start_collector,
    wait_for,
)

from accessd.central import publisher
from accessd.central.store import open_store
from accessd.events import EventType, utcnow
from accessd.protocol.codec import encode
from accessd.protocol.commands import make_command
from accessd.protocol.rules import make_delta
from accessd.protocol.signing import OfficeKey
from accessd.protocol.transport import connected_client

pytestmark = needs_mosquitto
H = [f"{i:064x}" for i in range(1, 10)]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from run_broker(tmp_path / "broker")


@pytest.fixture
def office(tmp_path: Path):
    key = OfficeKey.generate()
    key.save(tmp_path / "office.key", tmp_path / "office.pub")
    store = open_store(tmp_path / "central.db")
    yield key, store, tmp_path / "office.pub"
    store.close()


class Listener:
    """A client that records what arrives on some topics."""

    def __init__(self, broker: Broker, user: str, topics: list[str]) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = connected_client(broker.settings(user), f"listen-{user}-{time.time()}")
        self.client.on_message = lambda _c, _u, m: self.messages.append(
            (m.topic, m.payload, m.retain))
        acked: list[int] = []
        self.client.on_subscribe = lambda _c, _u, mid, _codes, _p: acked.append(mid)
        mids = [self.client.subscribe(t, qos=1)[1] for t in topics]
        wait_for(lambda: set(mids) <= set(acked), timeout=10, message="subscribed")

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def kinds(rig: DoorRig) -> list[tuple[str, str | None]]:
    return [(str(e.type), e.reason) for e in rig.uplink_events]


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "child-process"])
def test_rules_reach_an_online_door_within_seconds(tmp_path, broker, office, monkeypatch,
                                                    in_child):
    if in_child:  # every document through accessd.uplink.apply, as a large one would go
        monkeypatch.setattr("accessd.uplink.service.CHILD_APPLY_BYTES", 0)
    key, store, pub = office
    collector = start_collector(store, broker, key=key)
    rig = DoorRig(tmp_path / "door", broker, public_key=pub)
    rig.register(store)
    rig.start()
    try:
        wait_for(lambda: rig.uplink.state()["connected"], message="door online")
        store.import_members("s1", [{"id": "a", "name": "Alice", "plan": "subscriber",
                                     "status": "active"}],
                             [{"hash": H[0], "member_id": "a", "status": "active"}])
        docs = publisher.build(store, key, "s1")
        t0 = time.monotonic()
        publisher.send(docs, broker.settings("central"), prefix=PREFIX)
        wait_for(lambda: rig.uplink.state()["rule_version"] == 1, timeout=10,
                 message="version 1 applied")
        assert time.monotonic() - t0 < 5
        assert (str(EventType.RULES_APPLIED), "snapshot") in kinds(rig)
        # an office revocation, sent as a delta (and a fresh retained snapshot)
        store.revoke("s1", credential_hash=H[0])
        docs = publisher.build(store, key, "s1", delta=True)
        assert docs.delta is not None and docs.changes == 1
        publisher.send(docs, broker.settings("central"), prefix=PREFIX)
        wait_for(lambda: rig.uplink.state()["rule_version"] == 2, timeout=10,
                 message="version 2 applied")
        from accessd.store.rules import RuleCache

        cache = RuleCache(rig.config.storage.rules_db, readonly=True)
        assert str(cache.lookup(H[0]).credential_status) == "revoked"
        cache.close()
        # the rules.applied events travel back to the office like any other event
        wait_for(lambda: store.count_events("s1", "d1") == rig.journal.last_seq >= 2,
                 message="rules.applied events stored centrally")
        types = [e["type"] for e in store.events("s1")]
        assert types.count("rules.applied") == 2
    finally:
        rig.close()
        collector.stop()


def test_bad_documents_over_the_wire_are_rejected_with_a_reason(tmp_path, broker, office):
    key, store, pub = office
    rig = DoorRig(tmp_path / "door", broker, public_key=pub)
    rig.start()
    sender = connected_client(broker.settings("central"), "sender")
    try:
        wait_for(lambda: rig.uplink.state()["connected"], message="door online")
        docs = publisher.build(store, key, "s1")
        publisher.send(docs, broker.settings("central"), prefix=PREFIX)
        wait_for(lambda: rig.uplink.state()["rule_version"] == 1, message="v1")
        snap = f"{PREFIX}/s1/rules/snapshot"
        forged = json.loads(encode(docs.snapshot))
        forged["payload"]["version"] = 9
        stale = publisher.build(store, key, "s1")  # v2 ...
        publisher.build(store, key, "s1")  # ... v3 recorded, never sent
        for payload in (encode(forged), b'{"payload": {', b"x" * (33 * 1024 * 1024)):
            sender.publish(snap, payload, qos=1).wait_for_publish(10)
        delta = make_delta(key, site="s1", version=5, base_version=4)
        sender.publish(f"{PREFIX}/s1/rules/delta", encode(delta), qos=1).wait_for_publish(10)
        wait_for(lambda: len([k for k in kinds(rig) if k[0] == "rules.rejected"]) == 4,
                 message="four rejections")
        reasons = [r for t, r in kinds(rig) if t == "rules.rejected"]
        assert reasons == ["bad_signature", "malformed", "too_large", "version_gap"]
        assert rig.uplink.state()["rule_version"] == 1
        # the gap made the door ask; with a collector running it gets the latest snapshot
        collector = start_collector(store, broker, key=key)
        try:
            sender.publish(f"{PREFIX}/s1/d1/command", encode(make_command(
                key, type="request_snapshot", site="s1", door="d1", operator="ops")), qos=1)
            wait_for(lambda: rig.uplink.state()["rule_version"] == 3, timeout=15,
                     message="latest snapshot applied after the request")
            assert collector.stats.snapshots_republished >= 1
            # an old snapshot replayed by someone with write access: refused as stale
            sender.publish(snap, encode(stale.snapshot), qos=1).wait_for_publish(10)
            wait_for(lambda: ("rules.rejected", "stale_version") in kinds(rig),
                     message="stale snapshot refused")
            assert rig.uplink.state()["rule_version"] == 3
        finally:
            collector.stop()
    finally:
        sender.disconnect()
        sender.loop_stop()
        rig.close()


def test_a_remote_release_is_accepted_once(tmp_path, broker, office):
    key, _store, pub = office
    rig = DoorRig(tmp_path / "door", broker, public_key=pub)
    rig.start()
    sender = connected_client(broker.settings("central"), "sender")
    topic = f"{PREFIX}/s1/d1/command"
    try:
        wait_for(lambda: rig.uplink.state()["connected"], message="door online")
        cmd = encode(make_command(key, type="release", site="s1", door="d1",
                                  operator="alice@office", seconds=4))
        sender.publish(topic, cmd, qos=1).wait_for_publish(10)
        wait_for(lambda: rig.releases == [("alice@office", 4.0)], message="released")
        sender.publish(topic, cmd, qos=1).wait_for_publish(10)  # replayed
        expired = make_command(key, type="release", site="s1", door="d1", operator="eve",
                               now=utcnow() - timedelta(seconds=60))
        sender.publish(topic, encode(expired), qos=1).wait_for_publish(10)
        other = make_command(key, type="release", site="s1", door="d2", operator="eve")
        sender.publish(topic, encode(other), qos=1).wait_for_publish(10)
        forged = make_command(OfficeKey.generate(), type="release", site="s1", door="d1",
                              operator="eve")
        sender.publish(topic, encode(forged), qos=1).wait_for_publish(10)
        wait_for(lambda: len([k for k in kinds(rig) if k[0] == "command.rejected"]) == 4,
                 message="four refusals")
        assert [r for t, r in kinds(rig) if t == "command.rejected"] == [
            "replayed", "expired", "wrong_door", "unknown_key"]
        assert rig.releases == [("alice@office", 4.0)]
        # the door restarts: the seen id is remembered on disk
        rig.stop()
        rig.start()
        wait_for(lambda: rig.uplink.state()["connected"], message="door back")
        sender.publish(topic, cmd, qos=1).wait_for_publish(10)
        wait_for(lambda: [r for t, r in kinds(rig) if t == "command.rejected"][-1:]
                 == ["replayed"] and len(kinds(rig)) >= 5, message="replay after restart")
        assert rig.releases == [("alice@office", 4.0)]
    finally:
        sender.disconnect()
        sender.loop_stop()
        rig.close()


def test_status_is_retained_and_home_assistant_discovers_the_door(tmp_path, broker):
    rig = DoorRig(tmp_path / "door", broker,
                  mqtt_extra="homeassistant_discovery = true\n")
    rig.start()
    try:
        wait_for(lambda: rig.uplink.state()["connected"], message="door online")
        ha = Listener(broker, "homeassistant", [f"{PREFIX}/+/+/status", "homeassistant/#"])
        wait_for(lambda: len(ha.messages) >= 4, message="status and discovery")
        status = json.loads(ha.on(f"{PREFIX}/s1/d1/status")[-1])
        assert status["online"] is True and status["lock"] == "locked"
        assert status["door_state"] == "closed" and status["outbox_depth"] == 0
        topics = {t for t, _, _ in ha.messages}
        assert "homeassistant/binary_sensor/accessd_s1_d1/door/config" in topics
        assert "homeassistant/binary_sensor/accessd_s1_d1/lock/config" in topics  # read-only
        assert "homeassistant/sensor/accessd_s1_d1/last_access/config" in topics
        rig.status = {**rig.status, "door_contact": {"state": "open"}}
        wait_for(lambda: json.loads(ha.on(f"{PREFIX}/s1/d1/status")[-1])["door_state"]
                 == "open", message="status follows the door")
        ha.close()
    finally:
        rig.close()


def test_a_door_that_dies_is_shown_offline_by_its_last_will(tmp_path, broker):
    import signal
    import subprocess
    import sys

    from mqtt_broker import door_config_text

    folder = tmp_path / "door"
    config = folder / "accessd.toml"
    config.parent.mkdir(parents=True)
    config.write_text(door_config_text(folder, broker, mqtt_extra="keepalive_s = 2\n"))
    ha = Listener(broker, "homeassistant", [f"{PREFIX}/+/+/status"])
    proc = subprocess.Popen([sys.executable, "-m", "accessd.uplink", "--config", str(config)])
    try:
        last = lambda: json.loads(ha.on(f"{PREFIX}/s1/d1/status")[-1])  # noqa: E731
        wait_for(lambda: ha.on(f"{PREFIX}/s1/d1/status") and last()["online"],
                 message="online")
        proc.send_signal(signal.SIGKILL)  # no DISCONNECT, no goodbye status
        proc.wait(5)
        wait_for(lambda: last()["online"] is False, timeout=15, message="last will")
    finally:
        proc.kill()
        proc.wait(5)
        ha.close()


def test_home_assistant_release_only_when_the_site_allows_it(tmp_path, broker):
    rig = DoorRig(tmp_path / "door", broker, mqtt_extra=(
        "homeassistant_discovery = true\nhomeassistant_allow_release = true\n"))
    rig.start()
    ha = connected_client(broker.settings("homeassistant"), "ha")
    try:
        wait_for(lambda: rig.uplink.state()["connected"], message="door online")
        ha.publish(f"{PREFIX}/s1/d1/ha/release", b"UNLOCK", qos=1).wait_for_publish(10)
        wait_for(lambda: rig.releases == [("homeassistant", 5.0)], message="HA release")
    finally:
        ha.disconnect()
        ha.loop_stop()
        rig.close()


def test_acls_keep_each_door_to_its_own_topics(tmp_path, broker):
    spy = Listener(broker, "central", [f"{PREFIX}/#"])
    door = connected_client(broker.settings("door-s1-d1"), "door-s1-d1")
    try:
        for topic in (f"{PREFIX}/s1/d2/event", f"{PREFIX}/s1/rules/snapshot",
                      f"{PREFIX}/s1/d1/command", f"{PREFIX}/s1/d2/ack"):
            door.publish(topic, b'{"forged": true}', qos=1).wait_for_publish(10)
        door.publish(f"{PREFIX}/s1/d1/event", b'{"mine": true}', qos=1).wait_for_publish(10)
        wait_for(lambda: spy.on(f"{PREFIX}/s1/d1/event"), message="own event delivered")
        # one connection's publishes are handled in order: the forged ones came first
        assert [t for t, _, _ in spy.messages] == [f"{PREFIX}/s1/d1/event"]
        with pytest.raises(ConnectionError):
            connected_client(broker.settings("door-s1-d1", password="guess"), "x", 5)
        with pytest.raises(ConnectionError):
            connected_client(broker.settings("", password=""), "anon", 5)
    finally:
        door.disconnect()
        door.loop_stop()
        spy.close()
