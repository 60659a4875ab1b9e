"""A private Mosquitto for tests: free loopback port, TLS with a throwaway CA, logins, ACLs.

Never the shared broker on 1883. Each test gets its own config, password file, ACL and
persistence directory under tmp_path; the broker can be killed (SIGKILL), stopped and started
again on the same port to play outages.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from accessd.protocol.signing import DoorKey, OfficeKey, public_line
from accessd.protocol.transport import BrokerSettings

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PASSWD = shutil.which("mosquitto_passwd")
PREFIX = "accessd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost: (ca.crt, server.crt, server.key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("accessd test CA"))
          .issuer_name(_name("accessd test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.crt", folder / "server.crt", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def door_acl(site: str, door: str, prefix: str = PREFIX, user: str | None = None) -> str:
    from accessd.uplink.homeassistant import legacy_node_id, node_id

    base = f"{prefix}/{site}/{door}"
    nodes = dict.fromkeys((node_id(site, door), legacy_node_id(site, door)))
    return "\n".join([
        *([f"user {user or f'door-{site}-{door}'}"] if user != "" else []),
        f"topic write {base}/event", f"topic readwrite {base}/status",
        f"topic read {base}/ack", f"topic read {base}/command", f"topic read {base}/ha/release",
        f"topic read {prefix}/{site}/rules/snapshot", f"topic read {prefix}/{site}/rules/delta",
        f"topic write {prefix}/{site}/rules/request",
        *(f"topic write homeassistant/+/{n}/#" for n in nodes), ""])


class Broker:
    def __init__(self, folder: Path, *, persistence: bool = True,
                 doors: tuple[tuple[str, str], ...] = (("s1", "d1"),),
                 max_queued: int = 100000,
                 pis: dict[str, tuple[tuple[str, str], ...]] | None = None) -> None:
        """`pis`: logins of Pis that drive several doors (user -> its doors), each allowed
        every topic of each of its doors."""
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persistence = persistence
        self.ca, cert, key = make_tls(folder)
        self.users = {"central": "central-pw", "homeassistant": "ha-pw", "intruder": "x-pw"}
        for site, door in doors:
            self.users[f"door-{site}-{door}"] = f"pw-{site}-{door}"
        for user in pis or {}:
            self.users[user] = f"pw-{user}"
        pwfile = folder / "passwd"
        pwfile.write_text("")
        for user, password in self.users.items():
            subprocess.run([PASSWD, "-b", str(pwfile), user, password], check=True,
                           capture_output=True)
        acl = folder / "acl"
        acl.write_text(
            f"user central\ntopic readwrite {PREFIX}/#\n"
            f"topic read $share/+/{PREFIX}/#\n\n"
            f"user homeassistant\ntopic read {PREFIX}/+/+/status\ntopic read homeassistant/#\n"
            + "".join(f"topic write {PREFIX}/{s}/{d}/ha/release\n" for s, d in doors) + "\n"
            + "\n".join(door_acl(s, d) for s, d in doors)
            + "".join(f"\nuser {user}\n" + "\n".join(door_acl(s, d, user="") for s, d in pi)
                      for user, pi in (pis or {}).items()))
        (folder / "data").mkdir(exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"""
user root
per_listener_settings false
allow_anonymous false
password_file {pwfile}
acl_file {acl}
listener {self.port} 127.0.0.1
cafile {self.ca}
certfile {cert}
keyfile {key}
persistence {"true" if persistence else "false"}
persistence_location {folder}/data/
autosave_interval 1
persistent_client_expiration 1d
max_queued_messages {max_queued}
max_inflight_messages 100
set_tcp_nodelay true
log_dest file {folder}/mosquitto.log
log_type error
log_type warning
log_type notice
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def settings(self, user: str = "central", **changes: object) -> BrokerSettings:
        base = dict(host="127.0.0.1", port=self.port, username=user,
                    password=self.users.get(user, "wrong"), tls=True, ca_file=self.ca,
                    reconnect_min_s=1, reconnect_max_s=2, keepalive_s=10)
        base.update(changes)
        return BrokerSettings(**base)  # type: ignore[arg-type]

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()}"
                                   + self.log())
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def kill(self) -> None:
        """SIGKILL: nothing is saved beyond the last autosave."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self, *, kill: bool = True, down_s: float = 0.0) -> None:
        self.kill() if kill else self.stop()
        time.sleep(down_s)
        self.start()

    def log(self) -> str:
        p = self.folder / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""


needs_mosquitto = pytest.mark.skipif(
    not os.path.exists(MOSQUITTO) or PASSWD is None,
    reason="mosquitto and mosquitto_passwd are needed (apt-get install mosquitto)")


def run_broker(folder: Path, *, persistence: bool = True,
               doors: tuple[tuple[str, str], ...] = (("s1", "d1"), ("s1", "d2")),
               pis: dict[str, tuple[tuple[str, str], ...]] | None = None,
               ) -> Iterator[Broker]:
    """Body of a test module's `broker` fixture: started, then always stopped."""
    b = Broker(folder, persistence=persistence, doors=doors, pis=pis)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def wait_for(predicate: object, timeout: float = 20.0, interval: float = 0.05,
             message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")


# -- doors and offices wired to a test broker ------------------------------------------------
OFFICE_KEY = OfficeKey.generate()  # the tests' office: signs acknowledgements and rules


def office_public_file(folder: Path, key: OfficeKey = OFFICE_KEY) -> Path:
    """The office's public key line in a file, as a door's rules_public_key_file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"office-{key.key_id}.pub"
    path.write_text(public_line(key.public) + "\n")
    return path


def register_door(store: object, folder: Path, site: str = "s1", door: str = "d1") -> DoorKey:
    """Make the door's key where its configuration puts it (folder/data/door.key), as the
    installer would, and register it at the office, as `accessd central door add` would."""
    key = DoorKey.load_or_create(folder / "data" / "door.key")
    store.add_door_key(site, door, public_line(key.public, f"{site}/{door}"))  # type: ignore[attr-defined]
    return key


def door_config_text(folder: Path, broker: Broker, site: str = "s1", door: str = "d1", *,
                     public_key: Path | None = None, mqtt_extra: str = "",
                     readers: str | None = None, extra: str = "") -> str:
    """TOML for a door of the test broker (mock pins, trusted clock, storage in `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    pw = folder / "mqtt.pw"
    pw.write_text(broker.users[f"door-{site}-{door}"] + "\n")
    pw.chmod(0o600)
    readers = readers or (f'[[readers]]\nname = "r1"\ntype = "simulated"\n'
                          f'source = "{folder}/taps"\nhold_off_s = 0\n')
    public_key = public_key or office_public_file(folder)
    key_line = f'rules_public_key_file = "{public_key}"\n'
    return f"""
[site]
id = "{site}"
door = "{door}"
timezone = "Europe/Paris"

[storage]
dir = "{folder}/data"

{readers}
[pins]
factory = "mock"

[clock]
trust = "always"

{extra}
[mqtt]
enabled = true
host = "127.0.0.1"
port = {broker.port}
tls = true
ca_file = "{broker.ca}"
username = "door-{site}-{door}"
password_file = "{pw}"
topic_prefix = "{PREFIX}"
{"" if "ack_timeout_s" in mqtt_extra else "ack_timeout_s = 2"}
reconnect_max_s = 2
{"" if "keepalive_s" in mqtt_extra else "keepalive_s = 10"}
{key_line}{mqtt_extra}
"""


class DoorRig:
    """An Uplink over a real journal and rule cache, with a stand-in for the daemon."""

    def __init__(self, folder: Path, broker: Broker, site: str = "s1", door: str = "d1", *,
                 public_key: Path | None = None, mqtt_extra: str = "",
                 status: dict | None = None) -> None:
        from accessd.config import parse_config
        from accessd.store.journal import Journal

        self.config = parse_config(door_config_text(folder, broker, site, door,
                                                    public_key=public_key,
                                                    mqtt_extra=mqtt_extra),
                                   str(folder / "accessd.toml"), folder)
        self.config.storage.dir.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.journal = Journal(self.config.storage.journal_db, site, door)
        self.site, self.door = site, door
        self.uplink_events: list = []
        self.releases: list[tuple[str, float]] = []
        self.status = status or {"lock": {"state": "locked"},
                                 "door_contact": {"state": "closed"},
                                 "clock": {"trusted": True}}
        self.uplink = None

    def register(self, store: object) -> DoorKey:
        """Register this door's key at the office (made first, as at installation)."""
        return register_door(store, self.folder, self.site, self.door)

    def start(self) -> None:
        from accessd.uplink import Uplink

        self.uplink = Uplink(self.config, self.config.storage.journal_db,
                             self.config.storage.rules_db,
                             status_provider=lambda: self.status,
                             on_event=self._journal, on_remote_release=self._release)
        self.uplink.start()

    def _journal(self, event: object) -> None:
        self.uplink_events.append(event)
        self.journal.append(event)  # type: ignore[arg-type]
        if self.uplink:
            self.uplink.notify()

    def _release(self, operator: str, seconds: float) -> None:
        self.releases.append((operator, seconds))

    def produce(self, n: int, batch: int = 1) -> None:
        from accessd.events import Event, EventType

        for i in range(0, n, batch):
            self.journal.append_many([Event(EventType.ACCESS_GRANTED, reader="r1",
                                            member_id=f"m{j}", result="granted",
                                            reason="subscriber")
                                      for j in range(i, min(n, i + batch))])
            if self.uplink:
                self.uplink.notify()

    def stop(self) -> None:
        if self.uplink:
            self.uplink.stop()
            self.uplink = None

    def close(self) -> None:
        self.stop()
        self.journal.close()


def start_collector(store: object, broker: Broker, client_id: str = "collector-1", *,
                    key: OfficeKey = OFFICE_KEY, **kwargs: object) -> object:
    from accessd.central.collector import Collector

    c = Collector(store, broker.settings("central"), key=key,  # type: ignore[arg-type]
                  prefix=PREFIX, client_id=client_id, **kwargs)  # type: ignore[arg-type]
    c.start()
    wait_for(lambda: c.stats.subscribed, timeout=10, message="collector subscribed")
    return c
