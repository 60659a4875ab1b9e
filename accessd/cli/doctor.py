"""`accessd doctor`: the door's health, one line per check, each problem with its fix.

A host runs it when something seems wrong. It works with the daemon running (what the daemon
says through its control socket: readers, relay, rules) or stopped (then it looks for itself:
opens the reader's port briefly, claims the GPIO pins under the daemon's storage lock, so that
a daemon cannot start half-way through). Whatever the daemon's state it checks the
configuration, the clock and its source, the disk and the stores, the broker (a real TLS
connection and login), the office's acknowledgements and the rules' age.

Each check is `ok`, `info` (worth knowing, nothing to do) or `action` (something to fix);
the exit status is 1 when any check needs action.
"""

from __future__ import annotations

import logging
import shutil
import socket
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from accessd.cli.main import print_json
from accessd.cli.timeparse import local_time
from accessd.config import Config, ReaderConfig, load_config
from accessd.errors import AccessdError, ControlError
from accessd.events import parse_ts

OK, INFO, ACTION = "ok", "info", "action"
SERIAL_LISTEN_S = 1.0  # how long a free serial port is read for frames
MIN_FREE_BYTES = 200 * 1024 * 1024
MIN_FREE_RATIO = 0.05
MAX_WAL_BYTES = 64 * 1024 * 1024
CERT_WARN_DAYS = 30
OFFICE_LATE_S = 3600.0  # unacknowledged events older than this need a look
BROKER_TIMEOUT_S = 8.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | info | action
    message: str
    fix: str = ""

    def line(self) -> str:
        label = {OK: "ok", INFO: "info", ACTION: "ACTION"}[self.status]
        return f"{label:<7}{self.name}: {self.message}" + (f" — fix: {self.fix}"
                                                            if self.fix else "")


def _ago(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 90:
        return f"{s} s ago"
    if s < 5400:
        return f"{s // 60} min ago"
    if s < 2 * 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


# -- the daemon ------------------------------------------------------------------------------
def daemon_status(cfg: Config) -> tuple[dict[str, Any] | None, str]:
    from accessd.daemon.control import call

    try:
        return call(cfg.storage.control_socket, {"op": "status"}, timeout=5), ""
    except ControlError as exc:
        return None, str(exc)


def check_daemon(cfg: Config, status: dict[str, Any] | None, why: str) -> list[Check]:
    if status is not None:
        up = float(status.get("uptime_s") or 0)
        return [Check("daemon", OK, f"running (accessd {status.get('version')}, started "
                                    f"{_ago(up)})")]
    return [Check("daemon", ACTION, why.removeprefix("the daemon is "),
                  "start it: sudo systemctl start accessd (its log: journalctl -u accessd)")]


# -- readers ---------------------------------------------------------------------------------
def check_readers_running(cfg: Config, status: dict[str, Any]) -> list[Check]:
    out = []
    up = float(status.get("uptime_s") or 0)
    for name, r in (status.get("readers") or {}).items():
        label = f"reader {name}"
        if not r.get("online"):
            out.append(Check(label, ACTION, f"offline ({r.get('detail') or r.get('type')})",
                             _reader_fix(_reader_config(cfg, name))))
            continue
        frames = r.get("frames") or {}
        bad = int(frames.get("checksum_errors", 0)) + int(frames.get("framing_errors", 0))
        good = int(frames.get("frames_ok", 0))
        if bad and bad > good // 10:
            out.append(Check(label, ACTION, f"online, but {bad} garbled frames for {good} good "
                                            "ones", "check the antenna and its wiring, and "
                                                    "the baud rate ([[readers]] baudrate)"))
            continue
        age = r.get("last_read_s")
        seen = (f"last card read {_ago(age)}" if age is not None
                else f"no card read since the daemon started {_ago(up)}")
        out.append(Check(label, OK, f"online ({r.get('type')}); {seen}"))
    return out


def _reader_config(cfg: Config, name: str) -> ReaderConfig | None:
    return next((r for r in cfg.readers if r.name == name), None)


def _reader_fix(rc: ReaderConfig | None) -> str:
    if rc is None:
        return "check the reader's cable and its [[readers]] table"
    if rc.type == "serial":
        return (f"check that {rc.port} exists (the USB adapter is plugged in, or the UART "
                "is enabled in raspi-config) and that no other program uses it")
    if rc.type == "nfc":
        return f"plug the NFC reader in and check [[readers]] port = {rc.port!r}"
    return f"check the simulated reader's source {rc.source!r}"


def check_readers_stopped(cfg: Config) -> list[Check]:
    return [_probe_reader(rc) for rc in cfg.readers]


def _probe_reader(rc: ReaderConfig) -> Check:
    label = f"reader {rc.name}"
    if rc.type == "simulated":
        where = "stdin" if rc.source == "stdin" else f"FIFO {rc.source}"
        return Check(label, INFO, f"simulated: card numbers from {where}, no hardware")
    if rc.type == "serial":
        return _probe_serial(rc, label)
    return _probe_nfc(rc, label)


def _probe_serial(rc: ReaderConfig, label: str) -> Check:
    """Open the port (exclusively: never beside another program) and listen a moment."""
    import serial

    from accessd.readers.em4100 import FrameParser

    try:
        port = serial.serial_for_url(rc.port, baudrate=rc.baudrate, timeout=0.1,
                                     exclusive=True)
    except (OSError, ValueError) as exc:
        return Check(label, ACTION, f"cannot open {rc.port}: {exc}", _reader_fix(rc))
    parser = FrameParser()
    cards: list[str] = []
    try:
        deadline = time.monotonic() + SERIAL_LISTEN_S
        while time.monotonic() < deadline:
            cards += parser.feed(port.read(port.in_waiting or 1))
    except OSError as exc:
        return Check(label, ACTION, f"{rc.port} failed while reading: {exc}", _reader_fix(rc))
    finally:
        port.close()
    bad = parser.rejected_frames
    if bad and bad >= len(cards):
        return Check(label, ACTION, f"{rc.port} opens, but {bad} garbled frames arrived",
                     "check the antenna and its wiring, and the baud rate ([[readers]] "
                     "baudrate)")
    if cards:
        return Check(label, OK, f"{rc.port} opens and frames arrive ({len(cards)} card reads "
                                f"in {SERIAL_LISTEN_S:g} s)")
    return Check(label, OK, f"{rc.port} opens; no frame in {SERIAL_LISTEN_S:g} s (hold a card "
                            "on the reader while 'accessd doctor' runs to test the antenna)")


def _probe_nfc(rc: ReaderConfig, label: str) -> Check:
    try:
        import nfc
    except ImportError as exc:
        return Check(label, ACTION, f"nfcpy cannot be imported: {exc}",
                     "reinstall accessd (pip install accessd)")
    try:
        clf = nfc.ContactlessFrontend(rc.port)
    except (OSError, ValueError) as exc:
        return Check(label, ACTION, f"cannot open NFC reader {rc.port!r}: {exc}",
                     _reader_fix(rc))
    try:
        device = str(getattr(clf, "device", "") or rc.port)
    finally:
        clf.close()
    return Check(label, OK, f"NFC reader present ({device})")


# -- GPIO ------------------------------------------------------------------------------------
def check_gpio_running(cfg: Config, status: dict[str, Any]) -> list[Check]:
    from accessd.door.lock import locked_level, released_level

    lock = status.get("lock") or {}
    level = {"high": True, "low": False}.get(str(lock.get("relay_pin")))
    wanted = (released_level if lock.get("state") == "released" else locked_level)(
        cfg.lock.type, cfg.pins.relay_active_high)
    pin = cfg.pins.lock_relay
    out = []
    if level is None:
        out.append(Check("lock relay", ACTION, f"GPIO {pin} is not driven (relay pin "
                                               f"{lock.get('relay_pin')})",
                         "restart accessd; if it persists, check the relay's wiring"))
    elif level != wanted:
        out.append(Check("lock relay", ACTION, f"GPIO {pin} is {lock.get('relay_pin')} while "
                                               f"the door is {lock.get('state')}",
                         "check [pins] relay_active_high and [lock] type"))
    else:
        out.append(Check("lock relay", OK, f"GPIO {pin} {lock.get('relay_pin')}: "
                                           f"{lock.get('state')} ({cfg.lock.type})"))
    out += _door_state((status.get("door_contact") or {}).get("state"), None,
                       status.get("alarms") or [], cfg)
    return _mock_note(cfg) + out


def _mock_note(cfg: Config) -> list[Check]:
    if cfg.pins.factory != "mock":
        return []
    return [Check("GPIO", INFO, "simulated pins ([pins] factory = \"mock\"): no real relay, "
                                "contact or button is driven or read")]


def check_gpio_stopped(cfg: Config) -> list[Check]:
    """Claim the pins as the daemon would (the relay driven locked) and read the inputs,
    under the daemon's storage lock."""
    from accessd.daemon.storagelock import StorageLock
    from accessd.door.hardware import DoorHardware
    from accessd.door.lock import locked_level

    try:
        lock = StorageLock(cfg.storage.dir)
        lock.acquire()
    except AccessdError as exc:
        return [Check("GPIO", ACTION, f"not checked: {exc}",
                      "a daemon holds this door but does not answer: sudo systemctl "
                      "restart accessd")]
    try:
        pins_log = logging.getLogger("accessd.door.pins")
        level = pins_log.level
        pins_log.setLevel(logging.ERROR)  # the mock factory's warning is a check line here
        try:
            hw = DoorHardware.from_config(cfg.pins, cfg.lock, cfg.door)
        except (AccessdError, OSError) as exc:
            return [Check("GPIO", ACTION, f"cannot claim the pins: {exc}",
                          "another program uses these GPIO pins, or the service user is "
                          "not in the gpio group; check [pins]")]
        finally:
            pins_log.setLevel(level)
        try:
            wanted = locked_level(cfg.lock.type, cfg.pins.relay_active_high)
            level = hw.relay.pin_level
            pin = cfg.pins.lock_relay
            name = {True: "high", False: "low"}.get(level, "not driven")  # type: ignore[arg-type]
            out = [Check("lock relay", OK, f"GPIO {pin} claimed and {name}: locked "
                                           f"({cfg.lock.type})") if level == wanted else
                   Check("lock relay", ACTION, f"GPIO {pin} reads {name}, not the locked level",
                         "check [pins] relay_active_high and [lock] type")]
            door_open = hw.inputs.door_open
            contact = None if door_open is None else ("open" if door_open else "closed")
            pressed = hw.inputs.exit_pressed
            out += _door_state(contact, pressed, [], cfg)
            return _mock_note(cfg) + out
        finally:
            hw.close()
    finally:
        lock.release()


def _door_state(contact: str | None, exit_pressed: bool | None, alarms: list[str],
                cfg: Config) -> list[Check]:
    from accessd.words import alarm_words

    out = []
    if cfg.pins.door_contact == 0:
        out.append(Check("door contact", INFO, "none fitted ([pins] door_contact = 0): no "
                                               "forced or held-open alarms"))
    elif contact == "open":
        out.append(Check("door contact", INFO, f"GPIO {cfg.pins.door_contact} reads open",
                         "if the door is shut, check the contact's wiring and [pins] "
                         "door_contact_closed_is_low"))
    else:
        out.append(Check("door contact", OK, f"GPIO {cfg.pins.door_contact} reads {contact}"))
    if exit_pressed:
        out.append(Check("exit button", ACTION, f"GPIO {cfg.pins.exit_button} reads pressed",
                         "a stuck button or a short would keep releasing the door: check it "
                         "and its wiring"))
    elif exit_pressed is False:
        out.append(Check("exit button", OK, f"GPIO {cfg.pins.exit_button} reads released"))
    for alarm in alarms:
        out.append(Check("alarm", ACTION, alarm_words(alarm),
                         "see 'accessd log --since today'; a door alarm ends when the door "
                         "closes"))
    return out


# -- the clock -------------------------------------------------------------------------------
def _timedatectl(*args: str) -> dict[str, str]:
    exe = shutil.which("timedatectl")
    if exe is None:
        return {}
    try:
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=3,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def check_clock(cfg: Config) -> list[Check]:
    from accessd.clock import ClockTrust, kernel_synchronised, sync_source

    trust = cfg.clock.trust
    state = _timedatectl("show")
    server = _timedatectl("show-timesync").get("ServerName")
    source = sync_source()
    kernel = kernel_synchronised()
    said = ("synchronised" if source else "not synchronised") + (
        f" ({source}{', server ' + server if server else ''})" if source else "")
    if trust == "always":
        return [Check("clock", INFO, f"trusted by configuration ([clock] trust = \"always\"); "
                                     f"the system says {said}",
                      "on a Raspberry Pi use trust = \"auto\" (no battery clock)")]
    if trust == "never":
        return [Check("clock", ACTION, "never trusted ([clock] trust = \"never\"): occasional "
                                       "members are always refused",
                      "set [clock] trust = \"auto\"")]
    if ClockTrust(trust, cfg.clock.not_before).trusted():
        return [Check("clock", OK, said)]
    if source or kernel:
        return [Check("clock", ACTION, f"{said}, but earlier than [clock] not_before "
                                       f"{cfg.clock.not_before}", "check the date and NTP")]
    ntp = state.get("NTP")
    fix = ("turn NTP on: sudo timedatectl set-ntp true" if ntp == "no" else
           "check the network and the time server: timedatectl timesync-status")
    return [Check("clock", ACTION, "not synchronised: occasional members are refused until "
                                   "it is", fix)]


# -- storage ---------------------------------------------------------------------------------
def check_disk(cfg: Config) -> list[Check]:
    folder = cfg.storage.dir
    probe = folder if folder.exists() else folder.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError as exc:
        return [Check("disk", ACTION, f"{folder}: {exc}", "check the storage folder")]
    free = usage.free
    text = f"{_size(free)} free of {_size(usage.total)} ({100 * free / usage.total:.0f} %)"
    if free < MIN_FREE_BYTES or free < usage.total * MIN_FREE_RATIO:
        return [Check("disk", ACTION, f"{text} on {probe}",
                      "free space (old logs: journalctl --vacuum-size=100M); the journal "
                      "needs room to keep events")]
    return [Check("disk", OK, text)]


def _quick_check(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows[:3])


def check_stores(cfg: Config) -> list[Check]:
    out = []
    for label, path in (("journal", cfg.storage.journal_db), ("rule cache", cfg.storage.rules_db)):
        if not path.exists():
            out.append(Check(label, INFO, f"{path} not made yet (the daemon makes it)"))
            continue
        try:
            verdict = _quick_check(path)
        except sqlite3.Error as exc:
            out.append(Check(label, ACTION, f"{path} cannot be read: {exc}",
                             "check its owner and mode (the service user, 0600)"))
            continue
        wal = Path(f"{path}-wal")
        wal_size = wal.stat().st_size if wal.exists() else 0
        if verdict != "ok":
            out.append(Check(label, ACTION, f"{path} is damaged: {verdict}",
                             "stop accessd, keep a copy of the file, see docs/operations.md"))
        elif wal_size > MAX_WAL_BYTES:
            out.append(Check(label, ACTION, f"healthy, but its write-ahead log is "
                                            f"{_size(wal_size)}",
                             "restart accessd (the log is folded back at stop)"))
        else:
            out.append(Check(label, OK, f"healthy (quick_check ok, write-ahead log "
                                        f"{_size(wal_size)})"))
    return out


# -- the broker ------------------------------------------------------------------------------
def check_broker(cfg: Config) -> list[Check]:
    m = cfg.mqtt
    if not m.enabled:
        return [Check("broker", INFO, "not used ([mqtt] enabled = false): events stay in the "
                                      "journal")]
    where = f"{m.host}:{m.port}"
    try:
        sock = socket.create_connection((m.host, m.port), timeout=BROKER_TIMEOUT_S)
    except OSError as exc:
        return [Check("broker", ACTION, f"cannot reach {where}: {exc.strerror or exc}",
                      "check that the broker runs and the network is up, and [mqtt] host "
                      "and port")]
    out = []
    with sock:
        if m.tls:
            cert = _tls(sock, cfg, out)
            if cert is None:
                return out
            out.append(_expiry(cert, where))
        else:
            out.append(Check("broker", INFO, f"{where} reachable, without TLS ([mqtt] tls = "
                                             "false): only on a private network"))
    out.append(_login(cfg))
    return out


def _tls(sock: socket.socket, cfg: Config, out: list[Check]) -> dict[str, Any] | None:
    m = cfg.mqtt
    ctx = ssl.create_default_context(cafile=str(m.ca_file) if m.ca_file else None)
    if m.cert_file:
        from accessd.credentials import check_secret_permissions

        if m.key_file:
            check_secret_permissions(m.key_file)
        ctx.load_cert_chain(str(m.cert_file), str(m.key_file) if m.key_file else None)
    try:
        with ctx.wrap_socket(sock, server_hostname=m.host) as tls:
            return tls.getpeercert()
    except ssl.SSLCertVerificationError as exc:
        out.append(Check("broker TLS", ACTION, f"the broker's certificate is not trusted: "
                                               f"{exc.verify_message}",
                         "[mqtt] ca_file must be the CA that signed the broker's certificate, "
                         "and [mqtt] host a name the certificate holds"))
    except (ssl.SSLError, OSError) as exc:
        out.append(Check("broker TLS", ACTION, f"TLS handshake failed: {exc}",
                         "is [mqtt] port the broker's TLS listener (8883)?"))
    return None


def _expiry(cert: dict[str, Any], where: str) -> Check:
    not_after = ssl.cert_time_to_seconds(cert["notAfter"])
    days = int((not_after - time.time()) // 86400)
    if days < 0:
        return Check("broker TLS", ACTION, f"{where}: its certificate expired {-days} days ago",
                     "renew the broker's certificate (scripts/make-site-credentials)")
    if days < CERT_WARN_DAYS:
        return Check("broker TLS", ACTION, f"{where}: certificate trusted; it expires in "
                                           f"{days} days",
                     "renew the broker's certificate before then "
                     "(scripts/make-site-credentials)")
    return Check("broker TLS", OK, f"{where}: certificate trusted, expires in {days} days")


def _login(cfg: Config) -> Check:
    from accessd.protocol.transport import connected_client
    from accessd.uplink.service import broker_settings

    settings = broker_settings(cfg)
    client_id = f"accessd-doctor-{cfg.site.id}-{cfg.site.door}-{time.monotonic_ns() % 10**6}"
    try:
        client = connected_client(settings, client_id, timeout_s=BROKER_TIMEOUT_S)
    except ConnectionError as exc:
        why = str(exc).rsplit(": ", 1)[-1]
        return Check("broker login", ACTION, f"{settings.username or 'anonymous'} refused: "
                                             f"{why}",
                     "[mqtt] username and password_file must match the broker's password "
                     "file (scripts/make-site-credentials)")
    client.disconnect()
    client.loop_stop()
    return Check("broker login", OK, f"{settings.username or 'anonymous'} accepted")


# -- the office and the rules ----------------------------------------------------------------
def check_office(cfg: Config, status: dict[str, Any] | None) -> list[Check]:
    from accessd.store.journal import Journal

    if not cfg.mqtt.enabled:
        return []
    uplink = (status or {}).get("uplink") or {}
    out = []
    if cfg.mqtt.rules_public_key_file is None:
        out.append(Check("office", ACTION, "no [mqtt] rules_public_key_file: the office's "
                                           "acknowledgements cannot be checked, so events are "
                                           "never marked delivered",
                         "install the office's public key and name it there"))
    if not cfg.storage.journal_db.exists():
        return out
    j = Journal(cfg.storage.journal_db, cfg.site.id, cfg.site.door, readonly=True)
    try:
        depth, acked = j.depth(), j.acked_seq
        first = j.entries(acked + 1, acked + 1, limit=1)
        last_acked = j.entries(acked, acked, limit=1) if acked else []
    finally:
        j.close()
    tz = cfg.site.tz
    last_ack = uplink.get("last_ack_at")
    heard = (f"last acknowledgement {local_time(parse_ts(last_ack), tz)}" if last_ack else
             f"event {acked} ({local_time(last_acked[0].event.ts, tz)}) acknowledged"
             if last_acked else "nothing acknowledged yet")
    if uplink.get("acks_refused"):
        out.append(Check("office", ACTION, f"{uplink['acks_refused']} acknowledgements "
                                           "refused (not signed by the office's key)",
                         "check [mqtt] rules_public_key_file against the office's key"))
    if not depth:
        out.append(Check("office", OK, f"every event stored by the office; {heard}"))
        return out
    oldest = first[0].event.ts if first else None
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
    text = (f"{depth} event{'s' if depth != 1 else ''} waiting, the oldest from "
            f"{local_time(oldest, tz) if oldest else '?'} ({_ago(age)}); {heard}")
    if age > OFFICE_LATE_S:
        return [*out, Check("office", ACTION, text,
                            "check the broker (above) and that the office's collector runs "
                            "(accessd central collect); the events wait safely meanwhile")]
    return [*out, Check("office", OK, text)]


def check_rules(cfg: Config, status: dict[str, Any] | None) -> list[Check]:
    from accessd.store.rules import RuleCache

    if not cfg.storage.rules_db.exists():
        return [Check("rules", INFO, "no rule cache yet")]
    rules = RuleCache(cfg.storage.rules_db, readonly=True)
    try:
        version = rules.version
        issued = rules.get_meta("rule_issued_at")
        counts = rules.counts()
    except (ValueError, sqlite3.Error) as exc:
        return [Check("rules", ACTION, f"the stored rule version cannot be read: {exc}",
                      "ask the office for a snapshot (it republishes on the door's request)")]
    finally:
        rules.close()
    held = f"{counts['members']} members, {counts['credentials']} cards"
    out = []
    for key, problem in ((status or {}).get("rules") or {}).get("problems", {}).items():
        out.append(Check("rules", ACTION, f"{key}: {problem}",
                         "enrol the member again, or ask the office to publish"))
    if not version:
        if cfg.mqtt.enabled:
            return [*out, Check("rules", ACTION, f"none from the office yet ({held} enrolled "
                                                 "here)",
                                "publish the site's rules at the office (accessd central "
                                "publish) and check the broker")]
        return [*out, Check("rules", INFO, f"none from the office (no office link): {held} "
                                           "enrolled here")]
    when = ""
    if issued:
        ts = parse_ts(issued)
        when = (f", issued {local_time(ts, cfg.site.tz, '%Y-%m-%d %H:%M')} "
                f"({_ago((datetime.now(UTC) - ts).total_seconds())})")
    return [*out, Check("rules", OK, f"version {version}{when}; {held}")]


# -- all of it -------------------------------------------------------------------------------
def run_checks(config_path: str | None) -> list[Check]:
    from accessd.daemon.service import check_startup

    try:
        cfg = load_config(config_path)
        check_startup(cfg)
    except AccessdError as exc:
        return [Check("configuration", ACTION, str(exc),
                      "correct the file, then run: accessd check-config")]
    checks = [Check("configuration", OK, f"{cfg.path} is valid (site {cfg.site.id}, door "
                                         f"{cfg.site.door}, {cfg.site.timezone})")]
    status, why = daemon_status(cfg)
    steps: list[Callable[[], list[Check]]] = [
        lambda: check_daemon(cfg, status, why),
        (lambda: check_readers_running(cfg, status)) if status else
        (lambda: check_readers_stopped(cfg)),
        (lambda: check_gpio_running(cfg, status)) if status else
        (lambda: check_gpio_stopped(cfg)),
        lambda: check_clock(cfg),
        lambda: check_disk(cfg),
        lambda: check_stores(cfg),
        lambda: check_broker(cfg),
        lambda: check_office(cfg, status),
        lambda: check_rules(cfg, status),
    ]
    for step in steps:
        try:
            checks += step()
        except (AccessdError, OSError, ValueError, sqlite3.Error) as exc:
            checks.append(Check("doctor", ACTION, f"a check failed: {exc}",
                                "run it again; if it persists, report it"))
    return checks


def print_checks(checks: list[Check], *, as_json: bool) -> int:
    needs_action = any(c.status == ACTION for c in checks)
    if as_json:
        print_json({"ok": not needs_action, "checks": [asdict(c) for c in checks]})
    else:
        for c in checks:
            print(c.line())
        n = sum(c.status == ACTION for c in checks)
        print(f"{n} thing{'s' if n != 1 else ''} to fix" if n else "nothing to fix")
    return 1 if needs_action else 0
