"""The insider scenario's site, built the way an installer builds a real one.

- the broker: the shipped `config/mosquitto/mosquitto.conf` (TLS only, no anonymous client)
  with the logins, password file, ACL and TLS material `scripts/make-site-credentials` makes;
- the office: its key (`accessd central keygen`), its site and members file, the real CLI
  for everything an operator does, and the real collector (in this process, to read its
  counters) on the store;
- two doors of one site: real `accessd run` processes (FIFO readers, mock pins), each with
  the broker password and TLS files the script made for it, its own event key made by
  `accessd door-key` and registered with `accessd central door add`;
- the clients an insider would use: any broker login, with the broker's own answer (PUBACK
  reason code) to each publish.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faultsuite.core import Pending
from faultsuite.daemon import PYTHON, ROOT, Daemon, Site, until

SITE = "morez"
DOORS = ("front", "back")
PREFIX = "accessd"
ACCESS = ("access.granted", "access.denied")
NOT_AUTHORIZED = 135  # MQTT 5 reason code: the broker's ACL refused the publish
PUBLISHED = (0, 16)  # success, or success with nobody subscribed


def now() -> datetime:
    return datetime.now(UTC)


def run(args: list[Any], *, env: dict[str, str] | None = None, timeout: float = 120,
        cwd: Path | str = ROOT, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})}, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ShippedBroker:
    """Mosquitto with the shipped configuration and a site's generated credentials."""

    def __init__(self, folder: Path) -> None:
        import shutil

        self.mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        missing = [t for t in ("mosquitto_passwd", "openssl") if shutil.which(t) is None]
        if missing or not Path(self.mosquitto).exists():
            raise Pending(f"needs mosquitto, mosquitto_passwd and openssl (missing: "
                          f"{missing or ['mosquitto']}; scripts/setup --test)")
        self.folder = folder
        self.creds = folder / "site"
        r = run([ROOT / "scripts" / "make-site-credentials", "--site", SITE, "--doors",
                 ",".join(DOORS), "--out", self.creds, "--broker-host", "localhost"])
        if r.returncode:
            raise RuntimeError(f"make-site-credentials failed: {r.stderr[-2000:]}")
        self.port = _free_port()
        self.ca = self.creds / "broker" / "tls" / "ca.crt"
        conf = (ROOT / "config" / "mosquitto" / "mosquitto.conf").read_text()
        conf = (conf.replace("/etc/mosquitto/accessd/tls", str(self.creds / "broker" / "tls"))
                .replace("/etc/mosquitto/accessd", str(self.creds / "broker"))
                .replace("/var/lib/mosquitto/", f"{folder}/data/")
                .replace("listener 8883", f"listener {self.port} 127.0.0.1")
                .replace("log_dest syslog", f"log_dest file {folder}/mosquitto.log"))
        (folder / "data").mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        # as root, Mosquitto would switch to its own account, which cannot read this folder
        self.conf.write_text(("user root\n" if os.geteuid() == 0 else "") + conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def password(self, user: str) -> str:
        if user.startswith("door-"):
            path = self.creds / "doors" / user.rsplit("-", 1)[1] / "mqtt.pw"
        else:
            path = self.creds / "central" / f"{user}.pw"
        return path.read_text().strip()

    def settings(self, user: str) -> Any:
        from accessd.protocol.transport import BrokerSettings

        return BrokerSettings(host="localhost", port=self.port, username=user,
                              password=self.password(user), tls=True, ca_file=self.ca,
                              reconnect_min_s=1, reconnect_max_s=2, keepalive_s=10)

    def start(self) -> None:
        self.proc = subprocess.Popen([self.mosquitto, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        if not until(lambda: self.proc.poll() is not None or listening(), 10) or \
                self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto did not start: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()

    def log(self) -> str:
        p = self.folder / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def connections(self, client_id: str) -> int:
        """How many times a client with this id connected (the shipped config logs it)."""
        return len(re.findall(rf"New client connected from \S+ as {re.escape(client_id)} ",
                              self.log()))


class Client:
    """A broker login used by hand; each publish returns the broker's PUBACK reason code."""

    def __init__(self, broker: ShippedBroker, user: str, client_id: str) -> None:
        from accessd.protocol.transport import connected_client

        self._codes: dict[int, int] = {}
        self._cond = threading.Condition()
        self.received: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        self.client = connected_client(broker.settings(user), client_id)
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, m.payload))
        self.client.on_subscribe = lambda *_: self._subscribed.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        with self._cond:
            self._codes[mid] = int(getattr(rc, "value", rc))
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._cond:
            if not self._cond.wait_for(lambda: info.mid in self._codes, timeout=15):
                raise TimeoutError(f"no PUBACK from the broker for {topic}")
            return self._codes.pop(info.mid)

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        if not self._subscribed.wait(10):
            raise TimeoutError(f"no SUBACK for {topic}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


class Office:
    """The office's key, store and members file, driven through `accessd central`."""

    def __init__(self, folder: Path, broker: ShippedBroker) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.broker = folder, broker
        self.store_path = folder / "central.db"
        self.key_path, self.pub_path = folder / "office.key", folder / "office.pub"
        self.members_file = folder / "members.csv"
        self.central("keygen", "--out", folder)
        self.publishes = 0

    def central(self, *args: Any, ok: bool = True, store: bool = False
                ) -> subprocess.CompletedProcess[str]:
        argv = [PYTHON, "-m", "accessd", "central", *args]
        if store:
            argv += ["--store", self.store_path]
        r = run(argv, env={"SUDO_USER": "olivia"})
        if ok and r.returncode:
            raise RuntimeError(f"accessd central {' '.join(map(str, args[:2]))} failed "
                               f"({r.returncode}): {r.stderr[-1500:]}")
        return r

    def broker_args(self) -> list[Any]:
        return ["--host", "localhost", "--port", self.broker.port, "--ca-file", self.broker.ca,
                "--password-file", self.broker.creds / "central" / "central.pw"]

    def write_members(self, rows: list[dict[str, str]]) -> None:
        import csv

        cols = ("id", "name", "plan", "status", "valid_from", "valid_until", "card")
        with self.members_file.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow({c: r.get(c, "") for c in cols})

    def publish(self, *, members: bool = True) -> tuple[int, str]:
        """`accessd central publish` (with the members file): the version and what it said."""
        args = ["publish", "--site", SITE, "--key", self.key_path, *self.broker_args()]
        if members:
            args += ["--members", self.members_file]
        r = self.central(*args, store=True)
        m = re.search(r"rules version (\d+)", r.stdout)
        if m is None:
            raise RuntimeError(f"publish said: {r.stdout} {r.stderr}")
        self.publishes += 1
        return int(m.group(1)), r.stderr


class Door:
    """One door of the site: its folder, configuration, daemon, reader FIFO and journal."""

    def __init__(self, root: Path, name: str, broker: ShippedBroker, office: Office,
                 hours: tuple[str, str]) -> None:
        self.name, self.root, self.broker = name, root, broker
        creds = broker.creds / "doors" / name
        self.site = Site.__new__(Site)  # the daemon harness's view of a door's folder
        self.site.root, self.site.retention_days = root, 90
        self.site.storage = root / "state"
        self.site.fifo, self.site.socket = root / "taps", root / "state" / "control.sock"
        self.site.config = root / "accessd.toml"
        root.mkdir(parents=True, exist_ok=True)
        self.config = self.site.config
        self.secret = creds / "site.key"
        self.config.write_text(f"""
[site]
id = "{SITE}"
door = "{name}"
timezone = "Europe/Paris"
secret_file = "{self.secret}"

[[readers]]
name = "door"
type = "simulated"
source = "{self.site.fifo}"
hold_off_s = 0

[lock]
release_s = 3

[pins]
factory = "mock"
door_contact_closed_is_low = false  # the mock contact reads high: a door that stays closed

[clock]
trust = "always"

[schedule]
opens = "{hours[0]}"
closes = "{hours[1]}"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

[security]
unknown_card_limit = 100000

[storage]
dir = "{self.site.storage}"
control_socket = "{self.site.socket}"

[mqtt]
enabled = true
host = "localhost"
port = {broker.port}
tls = true
ca_file = "{creds / 'ca.crt'}"
username = "door-{SITE}-{name}"
password_file = "{creds / 'mqtt.pw'}"
topic_prefix = "{PREFIX}"
rules_public_key_file = "{office.pub_path}"
ack_timeout_s = 2
reconnect_max_s = 2
keepalive_s = 10
status_interval_s = 1
rules_max_bytes = {RULES_MAX_BYTES}
""")
        self.daemon: Daemon | None = None
        self.lives: list[tuple[Daemon, datetime, datetime | None]] = []

    @property
    def journal_path(self) -> Path:
        return self.site.journal_path

    @property
    def rules_path(self) -> Path:
        return self.site.rules_path

    @property
    def key_path(self) -> Path:
        return self.site.storage / "door.key"

    def accessd(self, *args: Any) -> subprocess.CompletedProcess[str]:
        return run([PYTHON, "-m", "accessd", "--config", self.config, *args])

    def host(self, *args: Any, sudo_user: str = "claire") -> subprocess.CompletedProcess[str]:
        """What `sudo -u accessd accessd-host ARGS` runs: the root-owned wrapper's line."""
        return run([PYTHON, "-I", "-m", "accessd.cli.host", self.config, *args],
                   env={"SUDO_USER": sudo_user}, cwd="/")

    # -- the daemon -------------------------------------------------------------------------
    def start(self, *, wait: bool = True) -> None:
        self.daemon = Daemon(self.site, wait_ready=False)
        self.lives.append((self.daemon, now(), None))
        if wait:
            self.ready()

    def ready(self) -> None:
        assert self.daemon is not None
        if not self.daemon.wait_for(r"reader door: (back )?online", timeout=20):
            raise RuntimeError(f"{self.name}: the reader did not come online")

    def stop(self) -> int:
        assert self.daemon is not None
        code = self.daemon.stop()
        d, began, _ = self.lives[-1]
        self.lives[-1] = (d, began, now())
        self.daemon = None
        return code

    def status(self, timeout: float = 10) -> dict[str, Any]:
        assert self.daemon is not None
        return self.daemon.status(timeout=timeout)

    def tap(self, uid: str) -> int:
        """Present a card; returns the journal's last number before it (for `decision`)."""
        assert self.daemon is not None
        mark = self.last_seq()
        self.daemon.tap(uid)
        return mark

    # -- the journal, read as another process would -----------------------------------------
    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.journal_path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def last_seq(self) -> int:
        return int(self.rows("SELECT COALESCE(max(seq), 0) FROM events")[0][0])

    def events(self, after: int = 0, types: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        cols = ("seq", "id", "ts", "type", "member_id", "result", "reason", "credential",
                "detail")
        marks = ",".join("?" * len(types))
        where = f" AND type IN ({marks})" if types else ""
        return [dict(zip(cols, r, strict=True)) for r in self.rows(
            f"SELECT {', '.join(cols)} FROM events WHERE seq > ?{where} ORDER BY seq",
            (after, *types))]

    def decision(self, short: str, after: int, timeout: float = 10) -> dict[str, Any] | None:
        """The access decision journalled for this card after `after`, once there."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [e for e in self.events(after, ACCESS) if e["credential"] == short]
            return bool(found)

        deadline = time.monotonic() + timeout  # a decision takes milliseconds: look often
        while not seen() and time.monotonic() < deadline:
            time.sleep(0.01)
        return found[0] if found else None


RULES_MAX_BYTES = 1 << 20  # a door refuses larger rule documents unparsed
