"""End to end: a real door daemon, a real broker, the office's collector and publisher.

A card tapped at the door shows up in the central store; a card revoked at the office is
refused at the door moments later; a card the host enrols at the door survives the next
snapshot from the office.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_broker import (
    PREFIX,
    Broker,
    door_config_text,
    needs_mosquitto,
    run_broker,
    start_collector,
    wait_for,
)

from accessd.central import publisher
from accessd.central.store import open_store
from accessd.credentials import CredentialHasher
from accessd.protocol.signing import OfficeKey

pytestmark = needs_mosquitto
SITE_KEY = "42" * 32
ANA, BEN, CHLOE = "0A1B2C3D4E", "04A1B2C3", "04D5E6F708"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from run_broker(tmp_path / "broker")


def accessd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "accessd", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=30)


class Door:
    def __init__(self, config: Path, folder: Path) -> None:
        self.fifo = folder / "taps"
        self.log_path = folder / "daemon.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "accessd", "--config", str(config),
                                      "run"], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_for(lambda: "ready" in self.text() or self.proc.poll() is not None,
                 message="daemon ready")
        assert self.proc.poll() is None, self.text()

    def text(self) -> str:
        return self.log_path.read_text()

    def tap(self, uid: str) -> None:
        with self.fifo.open("w") as fh:
            fh.write(uid + "\n")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.log.close()


def test_tap_to_office_and_office_revocation_to_door(tmp_path: Path, broker: Broker):
    key = OfficeKey.generate()
    key.save(tmp_path / "office.key", tmp_path / "office.pub")
    folder = tmp_path / "door"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "site.key").write_text(SITE_KEY + "\n")
    (folder / "data" / "site.key").chmod(0o600)
    config = folder / "accessd.toml"
    config.write_text(door_config_text(folder, broker, public_key=tmp_path / "office.pub",
                                       extra="[lock]\nrelease_s = 3\n"))
    hasher = CredentialHasher(bytes.fromhex(SITE_KEY))
    store = open_store(tmp_path / "central.db")
    store.set_site("s1", credential_key=SITE_KEY, timezone="Europe/Paris")
    store.import_members("s1", [
        {"id": "ana", "name": "Ana", "plan": "subscriber", "status": "active"},
        {"id": "ben", "name": "Ben", "plan": "subscriber", "status": "active"}], [
        {"hash": hasher(ANA), "member_id": "ana", "status": "active"},
        {"hash": hasher(BEN), "member_id": "ben", "status": "active"}])
    # the door's key, made on the device, registered at the office from its printed line
    r = accessd(config, "door-key")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ed25519 ") and r.stdout.strip().endswith(" s1/d1")
    store.add_door_key("s1", "d1", r.stdout)
    assert (folder / "data" / "door.key").stat().st_mode & 0o777 == 0o600
    collector = start_collector(store, broker, key=key)
    publisher.send(publisher.build(store, key, "s1"), broker.settings("central"),
                   prefix=PREFIX)
    door = Door(config, folder)

    def decisions(member: str) -> list[tuple[str, str]]:
        return [(e["result"], e["reason"]) for e in store.events("s1")
                if e["type"].startswith("access.") and e["member_id"] == member]

    try:
        wait_for(lambda: any(e["type"] == "rules.applied" for e in store.events("s1")),
                 message="the door applied version 1 and said so")
        door.tap(ANA)
        wait_for(lambda: decisions("ana") == [("granted", "subscriber")], timeout=10,
                 message="Ana's entry in the central store")
        # the host enrols Chloé at the door while the office knows nothing of her
        r = accessd(config, "enroll", "--name", "Chloé", "--plan", "subscriber",
                    "--card", CHLOE)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: any(p["proposed"].get("name") == "Chloé"
                             for p in store.proposals("s1")),
                 message="the enrolment reached the office, as a proposal")
        assert not any(m["name"] == "Chloé" for m in store.rules("s1")[0])
        # the office revokes Ben's card and publishes; Chloé is not in the new rules (the
        # office has not decided), and her door keeps her
        store.revoke("s1", credential_hash=hasher(BEN))
        t0 = time.monotonic()
        publisher.send(publisher.build(store, key, "s1", delta=True),
                       broker.settings("central"), prefix=PREFIX)
        wait_for(lambda: len(re.findall("rules version 2 applied", door.text())) == 1 or
                 sum(e["type"] == "rules.applied" for e in store.events("s1")) == 2,
                 timeout=10, message="version 2 at the door")
        door.tap(BEN)
        wait_for(lambda: decisions("ben") == [("denied", "credential_revoked")], timeout=10,
                 message="Ben refused at the door, and the office knows")
        assert time.monotonic() - t0 < 10
        door.tap(CHLOE)
        wait_for(lambda: any(e["member_name"] == "Chloé" and e["result"] == "granted"
                             for e in store.events("s1")), timeout=10,
                 message="Chloé still enters after the office's snapshot")
        # nothing lost, nothing twice: the door's journal and the office agree
        from accessd.store.journal import Journal

        journal = Journal(folder / "data" / "journal.db", "s1", "d1", readonly=True)
        wait_for(lambda: journal.acked_seq == journal.last_seq, message="outbox empty")
        assert store.count_events("s1", "d1") == journal.last_seq
        journal.close()
    finally:
        door.stop()
        collector.stop()
        store.close()
