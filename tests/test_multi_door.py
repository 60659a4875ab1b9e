"""One Pi, two doors: a real daemon process, mock pins, two simulated readers, a real broker
and the office's collector. Each door releases only its own relay, journals under its own
sequence and journal id, signs with its own key, and the office stores both."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_broker import PREFIX, Broker, needs_mosquitto, run_broker, start_collector, wait_for

from accessd.central import publisher
from accessd.central.store import open_store
from accessd.config import load_config
from accessd.credentials import CredentialHasher
from accessd.protocol.signing import OfficeKey
from accessd.store.journal import Journal

pytestmark = needs_mosquitto
SITE_KEY = "42" * 32
ANA, BEN = "0A1B2C3D4E", "04A1B2C3"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from run_broker(tmp_path / "broker", doors=(),
                          pis={"pi-s1-hall": (("s1", "d1"), ("s1", "d2"))})


def two_doors(folder: Path, broker: Broker, office_pub: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "site.key").write_text(SITE_KEY + "\n")
    (folder / "data" / "site.key").chmod(0o600)
    pw = folder / "mqtt.pw"
    pw.write_text(broker.users["pi-s1-hall"] + "\n")
    pw.chmod(0o600)
    config = folder / "accessd.toml"
    config.write_text(f"""
[site]
id = "s1"
timezone = "Europe/Paris"

[storage]
dir = "{folder}/data"

[pins]
factory = "mock"

[clock]
trust = "always"

[[doors]]
id = "d1"
[doors.lock]
release_s = 3
[doors.pins]
lock_relay = 17
door_contact = 27
exit_button = 22
[[doors.readers]]
name = "r1"
type = "simulated"
source = "{folder}/taps-d1"
hold_off_s = 0

[[doors]]
id = "d2"
[doors.lock]
release_s = 3
[doors.pins]
lock_relay = 5
door_contact = 6
exit_button = 13
[[doors.readers]]
name = "r2"
type = "simulated"
source = "{folder}/taps-d2"
hold_off_s = 0

[mqtt]
enabled = true
host = "127.0.0.1"
port = {broker.port}
tls = true
ca_file = "{broker.ca}"
username = "pi-s1-hall"
password_file = "{pw}"
topic_prefix = "{PREFIX}"
ack_timeout_s = 2
reconnect_max_s = 2
keepalive_s = 10
rules_public_key_file = "{office_pub}"
""")
    return config


def accessd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "accessd", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=30)


def test_two_doors_on_one_pi(tmp_path: Path, broker: Broker):
    key = OfficeKey.generate()
    key.save(tmp_path / "office.key", tmp_path / "office.pub")
    folder = tmp_path / "pi"
    config = two_doors(folder, broker, tmp_path / "office.pub")
    hasher = CredentialHasher(bytes.fromhex(SITE_KEY))
    store = open_store(tmp_path / "central.db")
    store.set_site("s1", credential_key=SITE_KEY, timezone="Europe/Paris")
    store.import_members("s1", [{"id": "ana", "name": "Ana", "plan": "subscriber",
                                 "status": "active"}],
                         [{"hash": hasher(ANA), "member_id": "ana", "status": "active"}])
    # each door's key, made on the Pi: one line per door, registered under its door id
    r = accessd(config, "door-key")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert [line.rsplit(" ", 1)[1] for line in lines] == ["s1/d1", "s1/d2"]
    assert lines[0].split()[1] != lines[1].split()[1]  # two keys
    for line in lines:
        store.add_door_key("s1", line.rsplit("/", 1)[1], line)
    collector = start_collector(store, broker, key=key)
    publisher.send(publisher.build(store, key, "s1"), broker.settings("central"),
                   prefix=PREFIX)
    log_path = folder / "daemon.log"
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "accessd", "--config", str(config), "run"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def text() -> str:
        return log_path.read_text()

    def releases(pin: int) -> int:
        return len(re.findall(rf"door released \(BCM{pin}\)", text()))

    def locks(pin: int) -> int:
        return len(re.findall(rf"door locked \(BCM{pin}\)", text()))

    def tap(door: str, uid: str) -> None:
        with (folder / f"taps-{door}").open("w") as fh:
            fh.write(uid + "\n")

    def office(door: str) -> list[tuple[str, str | None, str | None]]:
        return [(e["type"], e["result"], e["member_id"]) for e in store.events("s1", door=door)
                if e["type"].startswith(("access.", "lock.", "member."))]

    try:
        wait_for(lambda: "ready" in text() or proc.poll() is not None, message="ready")
        assert proc.poll() is None, text()
        wait_for(lambda: any(e["type"] == "rules.applied" for e in store.events("s1")),
                 message="the Pi applied the office's rules")
        tap("d1", ANA)
        wait_for(lambda: releases(17) == 1, message="door d1's relay")
        tap("d2", ANA)
        wait_for(lambda: releases(5) == 1, message="door d2's relay")
        tap("d2", BEN)  # unknown: refused at d2, no relay
        wait_for(lambda: locks(5) == 1, message="d2 locked again after its release")
        r = accessd(config, "open", "--door", "d2", "--operator", "Hélène")
        assert r.returncode == 0 and "door d2 released" in r.stdout, r.stderr
        wait_for(lambda: releases(5) == 2, message="d2 opened by the host")
        # the host enrols Ben at door d2: journalled there, a proposal from d2 at the office
        r = accessd(config, "enroll", "--door", "d2", "--name", "Ben", "--plan", "subscriber",
                    "--card", BEN)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: office("d1") == [("access.granted", "granted", "ana")]
                 and [t for t, *_ in office("d2")] == ["access.granted", "access.denied",
                                                        "lock.manual_release",
                                                        "member.enrolled"],
                 timeout=15, message="both doors' events at the office, each under its door")
        assert releases(17) == 1  # d1's relay moved only for d1's card
        assert store.proposals("s1")[0]["door"] == "d2"
        # a new snapshot (the office has not decided on Ben): d1's uplink applies it for the
        # Pi and keeps Ben, whose enrolment d2 journalled
        publisher.send(publisher.build(store, key, "s1"), broker.settings("central"),
                       prefix=PREFIX)
        wait_for(lambda: sum(e["type"] == "rules.applied" for e in store.events("s1")) == 2,
                 message="version 2 applied")
        wait_for(lambda: locks(17) == 1, message="d1 locked again")
        tap("d1", BEN)
        wait_for(lambda: releases(17) == 2, message="Ben, kept through the snapshot, at d1")
        status = json.loads(accessd(config, "status", "--json", "--door", "d2").stdout)
        assert status["door"] == "d2" and set(status["doors"]) == {"d1", "d2"}
        reader = status["doors"]["d1"]["readers"]["r1"]
        assert (reader["online"], reader["type"], list(status["doors"]["d1"]["readers"])) == \
            (True, "simulated", ["r1"])
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)
        log.close()
        collector.stop()
    assert proc.returncode == 0, text()
    # each door its own journal: its own numbers from 1, its own journal id
    cfg = load_config(config)
    journals = {d.id: Journal(d.journal_file, "s1", d.id, readonly=True) for d in cfg.doors}
    try:
        seqs = {d: [e.seq for e in j.iter_all()] for d, j in journals.items()}
        assert all(s == list(range(1, len(s) + 1)) for s in seqs.values()), seqs
        assert journals["d1"].journal_id != journals["d2"].journal_id
        assert {e.door for e in journals["d2"].iter_all()} == {"d2"}
    finally:
        for j in journals.values():
            j.close()
    assert store.stored_seq("s1")["d1"] >= 1 and store.stored_seq("s1")["d2"] >= 4
    store.close()
