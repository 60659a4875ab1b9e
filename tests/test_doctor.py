"""`accessd doctor` as a host runs it: the real command, a real pseudo-terminal for the
reader, gpiozero's mock pins, real SQLite files and a private Mosquitto with TLS."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import write_config
from mqtt_broker import Broker, door_config_text, free_port, make_tls, needs_mosquitto
from readers_helpers import Pty

from accessd.events import Event, EventType, format_ts
from accessd.readers.em4100 import encode_frame
from accessd.store.journal import Journal
from accessd.store.rules import RuleCache

NO_CONTACT = "[pins]\nfactory = \"mock\"\ndoor_contact = 0\n"


def doctor(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "accessd", "--config", str(config), "doctor",
                           *args], capture_output=True, text=True, timeout=120)


def checks(config: Path) -> tuple[int, dict[str, list[dict]]]:
    r = doctor(config, "--json")
    report = json.loads(r.stdout)
    assert report["ok"] is (r.returncode == 0), r.stdout
    by_name: dict[str, list[dict]] = {}
    for c in report["checks"]:
        by_name.setdefault(c["name"], []).append(c)
    return r.returncode, by_name


def status_of(found: dict[str, list[dict]], name: str) -> str:
    return found[name][0]["status"]


def quiet_config(tmp_path: Path, extra: str = "", readers: str | None = None) -> Path:
    config = write_config(tmp_path, extra, readers=readers)
    config.write_text(config.read_text().replace('[pins]\nfactory = "mock"\n', NO_CONTACT))
    return config


def test_stopped_daemon_one_line_per_check_and_a_fix_for_what_needs_action(tmp_path):
    config = quiet_config(tmp_path)
    r = doctor(config)
    assert r.returncode == 1, r.stdout  # the daemon is not running: the door opens for nobody
    lines = r.stdout.splitlines()
    assert lines[-1] == "1 thing to fix"
    assert lines[0].startswith(f"ok     configuration: {config} is valid")
    assert any(line.startswith("ACTION daemon: not running") and "— fix: start it" in line
               for line in lines)
    for name in ("reader door", "lock relay", "exit button", "clock", "disk", "journal",
                 "rule cache", "broker", "rules"):
        assert any(line[7:].startswith(name + ":") for line in lines), (name, r.stdout)
    assert any(line.startswith("ok     lock relay: GPIO 17 claimed and low: locked") for line
               in lines)
    assert not r.stderr


def test_a_serial_reader_with_frames_arriving_and_one_unplugged(tmp_path):
    pty = Pty()
    readers = (f'[[readers]]\nname = "door"\ntype = "serial"\nport = "{pty.path}"\n\n'
               f'[[readers]]\nname = "back"\ntype = "serial"\nport = "{tmp_path}/ttyUSB9"\n')
    config = quiet_config(tmp_path, readers=readers)
    done = threading.Event()

    def hold_a_card() -> None:  # an RDM6300 repeats the frame while the card is there
        while not done.wait(0.05):
            pty.write(encode_frame("0A1B2C3D4E"))

    card = threading.Thread(target=hold_a_card)
    card.start()
    try:
        code, found = checks(config)
    finally:
        done.set()
        card.join()
        pty.unplug()
    door, back = found["reader door"][0], found["reader back"][0]
    assert door["status"] == "ok" and "frames arrive" in door["message"], door
    assert back["status"] == "action" and f"cannot open {tmp_path}/ttyUSB9" in back["message"]
    assert "plugged in" in back["fix"]
    assert code == 1


def test_garbled_frames_need_action(tmp_path):
    pty = Pty()
    config = quiet_config(tmp_path, readers=(f'[[readers]]\nname = "door"\ntype = "serial"\n'
                                             f'port = "{pty.path}"\n'))
    done = threading.Event()
    bad = bytearray(encode_frame("0A1B2C3D4E"))
    bad[5] ^= 0x01  # one bit flipped on the wire: the checksum fails

    def noise() -> None:
        while not done.wait(0.05):
            pty.write(bytes(bad))

    t = threading.Thread(target=noise)
    t.start()
    try:
        code, found = checks(config)
    finally:
        done.set()
        t.join()
        pty.unplug()
    assert status_of(found, "reader door") == "action"
    assert "garbled" in found["reader door"][0]["message"] and code == 1


def test_the_pins_are_not_touched_while_another_process_holds_the_door(tmp_path):
    """A daemon that holds the storage lock but does not answer: doctor says so and leaves the
    GPIO alone."""
    from accessd.daemon.storagelock import StorageLock

    config = quiet_config(tmp_path)
    with StorageLock(tmp_path / "state"):
        code, found = checks(config)
    assert status_of(found, "GPIO") == "action" and "lock relay" not in found
    assert "another accessd daemon" in found["GPIO"][0]["message"]


def test_a_door_contact_reading_open_is_said_with_its_fix(tmp_path):
    config = write_config(tmp_path)  # the mock contact has no magnet: it reads open
    code, found = checks(config)
    contact = found["door contact"][0]
    assert contact["status"] == "info" and "reads open" in contact["message"]
    assert "door_contact_closed_is_low" in contact["fix"]


def test_clock_never_trusted_needs_action(tmp_path):
    config = quiet_config(tmp_path)
    config.write_text(config.read_text().replace('trust = "always"', 'trust = "never"'))
    code, found = checks(config)
    assert status_of(found, "clock") == "action"
    assert 'trust = "auto"' in found["clock"][0]["fix"]


def test_a_broken_configuration_is_the_only_line(tmp_path):
    config = quiet_config(tmp_path, "[lock]\nrelease_s = 1\n")
    r = doctor(config)
    assert r.returncode == 1
    first, last = r.stdout.splitlines()
    assert first.startswith("ACTION configuration:") and "lock.release_s" in first
    assert "accessd check-config" in first and last == "1 thing to fix"


def test_stores_health_and_rules_age(tmp_path):
    config = quiet_config(tmp_path)
    rules = RuleCache(tmp_path / "state" / "rules.db")
    issued = datetime.now(UTC) - timedelta(days=3)
    with rules.transaction() as conn:
        rules.set_meta(conn, "rule_version", "7")
        rules.set_meta(conn, "rule_issued_at", format_ts(issued))
    rules.close()
    Journal(tmp_path / "state" / "journal.db", "test-site", "front").close()
    code, found = checks(config)
    assert status_of(found, "journal") == "ok" and "quick_check ok" in \
        found["journal"][0]["message"]
    assert found["rules"][0]["message"].startswith("version 7, issued ")
    assert "3 days ago" in found["rules"][0]["message"]


def test_a_damaged_journal_needs_action(tmp_path):
    config = quiet_config(tmp_path)
    path = tmp_path / "state" / "journal.db"
    j = Journal(path, "test-site", "front")
    for i in range(300):
        j.append(Event(EventType.DAEMON_STARTED, detail={"n": i, "pad": "x" * 200}))
    j.close()
    data = bytearray(path.read_bytes())
    data[4096 * 3: 4096 * 3 + 200] = b"\xff" * 200  # a page of the table scribbled over
    path.write_bytes(bytes(data))
    code, found = checks(config)
    assert status_of(found, "journal") == "action", found["journal"]
    assert code == 1


# -- the broker ------------------------------------------------------------------------------
@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path / "broker", doors=(("s1", "d1"),))
    b.start()
    try:
        yield b
    finally:
        b.stop()


def door_config(tmp_path: Path, broker: Broker, **replace: str) -> Path:
    text = door_config_text(tmp_path / "door", broker).replace(
        '[pins]\nfactory = "mock"\n', NO_CONTACT)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "door" / "accessd.toml"
    path.write_text(text)
    return path


@needs_mosquitto
def test_broker_reachable_certificate_days_and_login(tmp_path, broker):
    code, found = checks(door_config(tmp_path, broker))
    tls, login = found["broker TLS"][0], found["broker login"][0]
    # the test CA signs for one day: trusted, and due for renewal
    assert tls["status"] == "action" and "certificate trusted; it expires in 0 days" in \
        tls["message"]
    assert "renew" in tls["fix"]
    assert login == {"name": "broker login", "status": "ok", "message": "door-s1-d1 accepted",
                     "fix": ""}


@needs_mosquitto
def test_a_wrong_password_a_wrong_ca_and_no_broker(tmp_path, broker):
    config = door_config(tmp_path, broker)
    (tmp_path / "door" / "mqtt.pw").write_text("not-the-password\n")
    code, found = checks(config)
    login = found["broker login"][0]
    assert login["status"] == "action" and login["message"].startswith("door-s1-d1 refused")
    assert "password_file" in login["fix"]

    other = tmp_path / "other-ca"
    other.mkdir()
    other_ca, _, _ = make_tls(other)
    config = door_config(tmp_path, broker, **{str(broker.ca): str(other_ca)})
    code, found = checks(config)
    assert found["broker TLS"][0]["status"] == "action"
    assert "not trusted" in found["broker TLS"][0]["message"]
    assert "broker login" not in found

    config = door_config(tmp_path, broker, **{f"port = {broker.port}": f"port = {free_port()}"})
    code, found = checks(config)
    assert found["broker"][0]["status"] == "action"
    assert found["broker"][0]["message"].startswith("cannot reach 127.0.0.1:")


@needs_mosquitto
def test_the_office_has_not_acknowledged_for_hours(tmp_path, broker):
    config = door_config(tmp_path, broker)
    j = Journal(tmp_path / "door" / "data" / "journal.db", "s1", "d1")
    j.append(Event(EventType.DAEMON_STARTED, ts=datetime.now(UTC) - timedelta(hours=3)))
    j.append(Event(EventType.DAEMON_STOPPED, ts=datetime.now(UTC) - timedelta(hours=2)))
    j.acknowledge(1)
    j.close()
    code, found = checks(config)
    office = found["office"][-1]
    assert office["status"] == "action"
    assert office["message"].startswith("1 event waiting, the oldest from ")
    assert "2 h ago" in office["message"] and "event 1 (" in office["message"]
    assert "collector" in office["fix"]
