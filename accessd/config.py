"""The one configuration schema of accessd: a TOML file validated at start.

Every key is documented in `docs/configuration.md` and in `config/accessd.example.toml`. An
invalid file raises `ConfigError` naming the file and the dotted key, so that the daemon and
`accessd check-config` print the same single line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from accessd.errors import ConfigError

DEFAULT_PATH = Path("/etc/accessd/accessd.toml")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PLANS = ("subscriber", "occasional")
MIN_RELEASE_S = 3.0  # IEC 60839-11-1


@dataclass(frozen=True)
class SiteConfig:
    id: str
    door: str
    name: str
    timezone: str
    secret_file: Path
    door_key_file: Path  # this door's own Ed25519 key: signs its events; never leaves it

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class ScheduleConfig:
    """Opening hours for occasional members: [opens, closes) on `days`, minus `closures`."""

    opens: time = time(9, 0)
    closes: time = time(18, 0)
    days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    closures: tuple[date, ...] = ()


@dataclass(frozen=True)
class ReaderConfig:
    name: str
    type: str  # "serial" | "nfc" | "simulated"
    direction: str = "entry"  # "entry" | "exit"
    port: str = ""  # serial device, or nfcpy path such as "usb", "tty:AMA0:pn532"
    baudrate: int = 9600
    hold_off_s: float = 2.0
    source: str = "stdin"  # simulated: "stdin" or a FIFO path


@dataclass(frozen=True)
class LockConfig:
    type: str = "fail-secure"  # "fail-secure" strike or "fail-safe" magnetic lock
    release_s: float = 5.0


@dataclass(frozen=True)
class PinsConfig:
    """BCM pin numbers; 0 disables an optional device."""

    factory: str = "default"  # gpiozero pin factory: "default", "mock", "lgpio", ...
    lock_relay: int = 17
    relay_active_high: bool = True
    door_contact: int = 27
    door_contact_closed_is_low: bool = True
    exit_button: int = 22
    buzzer: int = 0
    led_granted: int = 0
    led_denied: int = 0


@dataclass(frozen=True)
class DoorConfig:
    held_open_prealarm_s: float = 20.0
    held_open_alarm_s: float = 30.0


@dataclass(frozen=True)
class UnlockConfig:
    """A door held unlocked on a schedule (staffed hours): [start, end) on `days`, site
    time, never on the site's closures; with `first_in`, only once a subscriber or the host
    has badged in (or opened the door) that day. Never without trusted time."""

    days: tuple[str, ...]
    start: time
    end: time
    first_in: bool = False


@dataclass(frozen=True)
class SecurityConfig:
    unknown_card_limit: int = 5
    unknown_card_window_s: float = 30.0
    lockout_s: float = 60.0


@dataclass(frozen=True)
class ClockConfig:
    trust: str = "auto"  # "auto" (kernel/timesyncd sync state), "always", "never"
    not_before: date = date(2026, 1, 1)


@dataclass(frozen=True)
class StorageConfig:
    dir: Path = Path("/var/lib/accessd")
    retention_days: int = 90  # CNIL: movement logs three months at most
    control_socket: Path = Path("/var/lib/accessd/control.sock")

    @property
    def rules_db(self) -> Path:
        return self.dir / "rules.db"

    @property
    def journal_db(self) -> Path:
        return self.dir / "journal.db"


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    topic_prefix: str = "accessd"
    keepalive_s: int = 30
    status_interval_s: float = 60.0
    rules_public_key_file: Path | None = None
    homeassistant_discovery: bool = False
    homeassistant_prefix: str = "homeassistant"
    homeassistant_allow_release: bool = False
    homeassistant_show_names: bool = False  # member names in HA's recorder (docs/homeassistant.md)
    homeassistant_support_url: str = ""  # origin.support_url of the discovery configs
    client_id: str = ""  # default: accessd-<site>-<door>
    outbox_window: int = 1000  # events in flight before the central office acknowledges
    ack_timeout_s: float = 15.0  # no acknowledgement for this long: send the window again
    event_version: int = 3  # 3: events signed in batches; 2: one per message, for an old office
    reconnect_max_s: int = 60  # cap of the exponential reconnection back-off
    rules_max_bytes: int = 32 * 1024 * 1024  # larger rule documents are refused unparsed


@dataclass(frozen=True)
class CardsConfig:
    """Authenticated cards (NTAG 424 DNA, DESFire EV2/EV3) on the NFC readers."""

    enabled: bool = False
    master_key_file: Path = Path("/var/lib/accessd/cards.keys")
    require_authenticated: bool = False  # every plan: UID-only cards refused
    require_authenticated_plans: tuple[str, ...] = ()  # or some plans only (migration)
    ntag424_mode: str = "authenticate"  # or "sun"
    sun_url: str = "https://accessd.invalid/c"
    desfire_aid: str = "F5A0CD"
    rekey_on_tap: bool = True

    @property
    def required_plans(self) -> frozenset[str]:
        if self.require_authenticated:
            return frozenset(PLANS)
        return frozenset(self.require_authenticated_plans)


@dataclass(frozen=True)
class DoorSpec:
    """One door driven by this Pi: its readers, relay, contact, exit button, journal and key.

    The single-door form of the file (`[site] door`, `[[readers]]`, `[lock]`, `[pins]`,
    `[door]`) is one DoorSpec; the `[[doors]]` form gives several (docs/configuration.md).
    Each door journals under its own sequence and journal id, and signs its events with its
    own key (registered at the office under its door id).
    """

    id: str
    name: str
    readers: tuple[ReaderConfig, ...]
    lock: LockConfig
    pins: PinsConfig
    door: DoorConfig
    journal_file: Path
    door_key_file: Path
    unlock: UnlockConfig | None = None


@dataclass(frozen=True)
class Config:
    path: Path | None
    site: SiteConfig
    schedule: ScheduleConfig
    readers: tuple[ReaderConfig, ...]
    lock: LockConfig
    pins: PinsConfig
    door: DoorConfig
    security: SecurityConfig
    clock: ClockConfig
    storage: StorageConfig
    mqtt: MqttConfig
    log_level: str = "INFO"
    extra: dict[str, Any] = field(default_factory=dict)
    cards: CardsConfig = field(default_factory=CardsConfig)
    doors: tuple[DoorSpec, ...] = ()  # every door of this Pi; the first is `site.door`'s
    unlock: UnlockConfig | None = None  # the first door's unlock schedule

    def door_spec(self, door: str | None = None) -> DoorSpec:
        """The door called `door` (ConfigError naming the choices), or the first one."""
        if door is None:
            return self.doors[0]
        for d in self.doors:
            if d.id == door:
                return d
        raise ConfigError(f"{self.path or 'configuration'}: no door {door!r} here; doors: "
                          f"{', '.join(d.id for d in self.doors)}")

    @property
    def several_doors(self) -> bool:
        return len(self.doors) > 1


_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_HHMM_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class _Section:
    """Typed access to one table of the file, every error naming `section.key` and the file."""

    def __init__(self, data: dict[str, Any], name: str, where: str) -> None:
        self.data, self.name, self.where = data, name, where
        self.used: set[str] = set()

    def fail(self, key: str, message: str) -> ConfigError:
        dotted = f"{self.name}.{key}" if self.name else key
        return ConfigError(f"{self.where}: {dotted}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool:
            raise self.fail(key, f"expected {_kind_name(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise self.fail(key, f"expected {_kind_name(kind)}, got {type(value).__name__}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def positive(self, key: str, default: float, minimum: float = 0.0) -> float:
        value = self.get(key, float, default)
        if value <= minimum:
            raise self.fail(key, f"must be greater than {minimum:g}, got {value:g}")
        return value

    def path(self, key: str, default: Path | None, base: Path) -> Path | None:
        value = self.get(key, str, None)
        if value is None:
            return default
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    def check_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _table(root: _Section, key: str) -> _Section:
    value = root.get(key, dict, {})
    return _Section(value, key, root.where)


def _hhmm(section: _Section, key: str, default: time) -> time:
    value = section.get(key, str, None)
    if value is None:
        return default
    m = _HHMM_RE.match(value)
    if not m:
        raise section.fail(key, f"expected HH:MM, got {value!r}")
    return time(int(m.group(1)), int(m.group(2)))


def _parse(data: dict[str, Any], where: str, base: Path) -> Config:
    root = _Section(data, "", where)

    s = _table(root, "site")
    site_id = s.get("id", str, "site")
    s_raw_door = {k: s.data[k] for k in ("door", "door_key_file") if k in s.data}
    door = s.get("door", str, "front")
    for key, value in (("id", site_id), ("door", door)):
        if not _ID_RE.match(value):
            raise s.fail(key, f"use lower-case letters, digits, '-' or '_' (got {value!r})")
    tzname = s.get("timezone", str, "Europe/Paris")
    try:
        ZoneInfo(tzname)
    except (ZoneInfoNotFoundError, ValueError):
        raise s.fail("timezone", f"unknown time zone {tzname!r}") from None

    st = _table(root, "storage")
    storage_dir = st.path("dir", StorageConfig.dir, base) or StorageConfig.dir
    storage = StorageConfig(
        dir=storage_dir,
        retention_days=int(st.positive("retention_days", 90)),
        control_socket=st.path("control_socket", None, base) or storage_dir / "control.sock",
    )
    site = SiteConfig(
        id=site_id,
        door=door,
        name=s.get("name", str, site_id),
        timezone=tzname,
        secret_file=s.path("secret_file", None, base) or storage.dir / "site.key",
        door_key_file=s.path("door_key_file", None, base) or storage.dir / "door.key",
    )
    s.check_unknown()
    st.check_unknown()

    sc = _table(root, "schedule")
    opens = _hhmm(sc, "opens", time(9, 0))
    closes = _hhmm(sc, "closes", time(18, 0))
    if closes <= opens:
        raise sc.fail("closes", f"must be after opens ({opens:%H:%M})")
    days = sc.get("days", list, list(ScheduleConfig.days))
    for d in days:
        if d not in WEEKDAYS:
            raise sc.fail("days", f"unknown day {d!r}; use {', '.join(WEEKDAYS)}")
    closures = []
    for c in sc.get("closures", list, []):
        if isinstance(c, date):
            closures.append(c)
            continue
        try:
            closures.append(date.fromisoformat(str(c)))
        except ValueError:
            raise sc.fail("closures", f"expected dates as YYYY-MM-DD, got {c!r}") from None
    schedule = ScheduleConfig(opens, closes, tuple(days), tuple(sorted(set(closures))))
    sc.check_unknown()

    raw_doors = root.get("doors", list, None)
    pin_factory = _table(root, "pins") if raw_doors is None else None
    if raw_doors is None:  # the single-door form: [site] door, [[readers]], [lock], [pins]...
        spec = _door_spec(
            door, door, root.get("readers", list, []), "readers", _table(root, "lock"),
            pin_factory, _table(root, "door"), _table(root, "unlock"), where,
            days_default=schedule.days)
        if pin_factory is not None:
            pin_factory.check_unknown()
        doors = [replace_paths(spec, storage.journal_db, site.door_key_file)]
    else:
        doors = _doors(root, s_raw_door, raw_doors, storage, base, where, schedule.days)
    readers, lock, pins, door_cfg = (doors[0].readers, doors[0].lock, doors[0].pins,
                                     doors[0].door)
    if raw_doors is not None:  # `site.door` and its key: the first door's
        site = dataclasses.replace(site, door=doors[0].id,
                                   door_key_file=doors[0].door_key_file)

    se = _table(root, "security")
    security = SecurityConfig(
        unknown_card_limit=se.get("unknown_card_limit", int, 5),
        unknown_card_window_s=se.positive("unknown_card_window_s", 30.0),
        lockout_s=se.positive("lockout_s", 60.0),
    )
    if security.unknown_card_limit < 1:
        raise se.fail("unknown_card_limit", "must be at least 1")
    se.check_unknown()

    c = _table(root, "clock")
    nb = c.get("not_before", (str, date), "2026-01-01")
    try:
        not_before = nb if isinstance(nb, date) else date.fromisoformat(nb)
    except ValueError:
        raise c.fail("not_before", f"expected YYYY-MM-DD, got {nb!r}") from None
    clock = ClockConfig(trust=c.choice("trust", ("auto", "always", "never"), "auto"),
                        not_before=not_before)
    c.check_unknown()

    m = _table(root, "mqtt")
    mqtt = MqttConfig(
        enabled=m.get("enabled", bool, False),
        host=m.get("host", str, "127.0.0.1"),
        port=m.get("port", int, 1883),
        username=m.get("username", str, ""),
        password_file=m.path("password_file", None, base),
        tls=m.get("tls", bool, False),
        ca_file=m.path("ca_file", None, base),
        cert_file=m.path("cert_file", None, base),
        key_file=m.path("key_file", None, base),
        topic_prefix=m.get("topic_prefix", str, "accessd"),
        keepalive_s=m.get("keepalive_s", int, 30),
        status_interval_s=m.positive("status_interval_s", 60.0),
        rules_public_key_file=m.path("rules_public_key_file", None, base),
        homeassistant_discovery=m.get("homeassistant_discovery", bool, False),
        homeassistant_prefix=m.get("homeassistant_prefix", str, "homeassistant"),
        homeassistant_allow_release=m.get("homeassistant_allow_release", bool, False),
        homeassistant_show_names=m.get("homeassistant_show_names", bool, False),
        homeassistant_support_url=m.get("homeassistant_support_url", str, ""),
        client_id=m.get("client_id", str, ""),
        outbox_window=m.get("outbox_window", int, 1000),
        ack_timeout_s=m.positive("ack_timeout_s", 15.0),
        event_version=m.get("event_version", int, 3),
        reconnect_max_s=m.get("reconnect_max_s", int, 60),
        rules_max_bytes=m.get("rules_max_bytes", int, 32 * 1024 * 1024),
    )
    if not 1 <= mqtt.outbox_window <= 10000:
        raise m.fail("outbox_window", f"must be 1..10000, got {mqtt.outbox_window}")
    if mqtt.event_version not in (2, 3):
        raise m.fail("event_version", f"must be 2 or 3, got {mqtt.event_version}")
    if not 1 <= mqtt.reconnect_max_s <= 3600:
        raise m.fail("reconnect_max_s", f"must be 1..3600, got {mqtt.reconnect_max_s}")
    if not 1024 <= mqtt.rules_max_bytes <= 256 * 1024 * 1024:
        raise m.fail("rules_max_bytes", "must be 1024..268435456 bytes")
    if not 1 <= mqtt.port <= 65535:
        raise m.fail("port", f"must be 1..65535, got {mqtt.port}")
    if "/" in mqtt.topic_prefix.strip("/") or not mqtt.topic_prefix or any(
        ch in mqtt.topic_prefix for ch in "+#"
    ):
        raise m.fail("topic_prefix", "one topic level without '/', '+' or '#'")
    ha = mqtt.homeassistant_prefix
    if not ha or any(not level or set(level) & set("+#\0") for level in ha.split("/")):
        raise m.fail("homeassistant_prefix", "topic levels without '+', '#' or empty levels")
    if mqtt.homeassistant_support_url and not re.match(r"https?://[^\s/]+\S*$",
                                                       mqtt.homeassistant_support_url):
        raise m.fail("homeassistant_support_url", "an http:// or https:// URL")
    m.check_unknown()

    cards = _cards(_table(root, "cards"), storage.dir, base)

    level = root.get("log_level", str, "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise root.fail("log_level", f"must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    root.check_unknown()

    return Config(None, site, schedule, tuple(readers), lock, pins, door_cfg, security, clock,
                  storage, mqtt, level, cards=cards, doors=tuple(doors), unlock=doors[0].unlock)

def replace_paths(spec: DoorSpec, journal: Path, key: Path) -> DoorSpec:
    return dataclasses.replace(spec, journal_file=journal, door_key_file=key)


def _readers(raw_readers: Any, prefix: str, where: str, seen: set[str]) -> list[ReaderConfig]:
    if not isinstance(raw_readers, list) or not raw_readers:
        raise ConfigError(f"{where}: {prefix}: configure at least one [[{prefix.split('[')[0]}"
                          f"{'.readers' if '.' in prefix else ''}]] table")
    readers = []
    for i, raw in enumerate(raw_readers):
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: {prefix}[{i}]: expected a table")
        r = _Section(raw, f"{prefix}[{i}]", where)
        name = r.get("name", str, f"reader{i}")
        if name in seen:
            raise r.fail("name", f"duplicate reader name {name!r} (reader names are unique "
                                 "on a Pi)")
        seen.add(name)
        rtype = r.choice("type", ("serial", "nfc", "simulated"), "serial")
        port = r.get("port", str, "")
        if rtype in ("serial", "nfc") and not port:
            raise r.fail("port", f"a {rtype} reader needs a port")
        readers.append(ReaderConfig(
            name=name,
            type=rtype,
            direction=r.choice("direction", ("entry", "exit"), "entry"),
            port=port,
            baudrate=r.get("baudrate", int, 9600),
            hold_off_s=r.positive("hold_off_s", 2.0, minimum=-1e-9),
            source=r.get("source", str, "stdin"),
        ))
        r.check_unknown()
    return readers


def _lock(lk: _Section) -> LockConfig:
    lock = LockConfig(
        type=lk.choice("type", ("fail-secure", "fail-safe"), "fail-secure"),
        release_s=lk.get("release_s", float, 5.0),
    )
    if lock.release_s < MIN_RELEASE_S:
        raise lk.fail("release_s", f"must be at least {MIN_RELEASE_S:g} s (IEC 60839-11-1)")
    lk.check_unknown()
    return lock


PIN_KEYS = (("lock_relay", 17), ("door_contact", 27), ("exit_button", 22), ("buzzer", 0),
            ("led_granted", 0), ("led_denied", 0))


def _pins(p: _Section, factory: str) -> PinsConfig:
    pin_values = {}
    for key, default in PIN_KEYS:
        v = p.get(key, int, default)
        if not 0 <= v <= 27:
            raise p.fail(key, f"BCM pin must be 0..27 (0 disables), got {v}")
        pin_values[key] = v
    if pin_values["lock_relay"] == 0:
        raise p.fail("lock_relay", "the lock relay pin is required")
    used = [v for v in pin_values.values() if v]
    if len(used) != len(set(used)):
        raise p.fail("lock_relay", "two devices share one pin")
    return PinsConfig(
        factory=factory,
        relay_active_high=p.get("relay_active_high", bool, True),
        door_contact_closed_is_low=p.get("door_contact_closed_is_low", bool, True),
        **pin_values,
    )


def _door_timing(d: _Section) -> DoorConfig:
    door_cfg = DoorConfig(
        held_open_prealarm_s=d.positive("held_open_prealarm_s", 20.0),
        held_open_alarm_s=d.positive("held_open_alarm_s", 30.0),
    )
    if door_cfg.held_open_prealarm_s >= door_cfg.held_open_alarm_s:
        raise d.fail("held_open_prealarm_s", "must be shorter than held_open_alarm_s")
    d.check_unknown()
    return door_cfg


def _unlock(u: _Section, days_default: tuple[str, ...]) -> UnlockConfig | None:
    if not u.data:
        return None
    days = u.get("days", list, list(days_default))
    for d in days:
        if d not in WEEKDAYS:
            raise u.fail("days", f"unknown day {d!r}; use {', '.join(WEEKDAYS)}")
    if "start" not in u.data or "end" not in u.data:
        raise u.fail("start" if "start" not in u.data else "end",
                     "an unlock schedule needs start and end (HH:MM)")
    start, end = _hhmm(u, "start", time(0)), _hhmm(u, "end", time(0))
    if end <= start:
        raise u.fail("end", f"must be after start ({start:%H:%M})")
    unlock = UnlockConfig(tuple(days), start, end, u.get("first_in", bool, False))
    u.check_unknown()
    return unlock


def _door_spec(door_id: str, name: str, raw_readers: Any, readers_key: str, lk: _Section,
               p: _Section | None, d: _Section, u: _Section, where: str, *,
               days_default: tuple[str, ...], factory: str = "default",
               seen: set[str] | None = None) -> DoorSpec:
    readers = _readers(raw_readers, readers_key, where, set() if seen is None else seen)
    if p is not None and "factory" in p.data:
        factory = p.get("factory", str, "default")
    pins = _pins(p if p is not None else _Section({}, "pins", where), factory)
    return DoorSpec(door_id, name, tuple(readers), _lock(lk), pins, _door_timing(d),
                    Path(), Path(), _unlock(u, days_default))


def _doors(root: _Section, site_door: dict[str, Any], raw_doors: list[Any],
           storage: StorageConfig, base: Path, where: str,
           days_default: tuple[str, ...]) -> list[DoorSpec]:
    """The [[doors]] form: several doors on this Pi, each with its own tables."""
    for key in ("readers", "lock", "door", "unlock"):
        if key in root.data:
            raise root.fail(key, "with [[doors]], each door has its own (doors[N]."
                                 f"{key}); remove the top-level one")
    for key in site_door:
        raise ConfigError(f"{where}: site.{key}: with [[doors]], each door has its own "
                          f"(doors[N].{'id' if key == 'door' else key})")
    shared = _table(root, "pins")
    factory = shared.get("factory", str, "default")
    shared.check_unknown()
    if not raw_doors:
        raise root.fail("doors", "configure at least one [[doors]] table")
    out: list[DoorSpec] = []
    seen_readers: set[str] = set()
    owners: dict[int, str] = {}
    files: dict[Path, str] = {}
    for i, raw in enumerate(raw_doors):
        prefix = f"doors[{i}]"
        if not isinstance(raw, dict):
            raise root.fail(prefix, "expected a table ([[doors]])")
        sec = _Section(raw, prefix, where)
        door_id = sec.get("id", str, "")
        if not _ID_RE.match(door_id):
            raise sec.fail("id", f"use lower-case letters, digits, '-' or '_' (got {door_id!r})")
        if any(d.id == door_id for d in out):
            raise sec.fail("id", f"duplicate door id {door_id!r}")
        name = sec.get("name", str, door_id)
        sub = {k: _Section(sec.get(k, dict, {}), f"{prefix}.{k}", where)
               for k in ("lock", "pins", "door", "unlock")}
        if "factory" in sub["pins"].data:
            raise sub["pins"].fail("factory", "the pin factory is the Pi's: [pins] factory")
        spec = _door_spec(door_id, name, sec.get("readers", list, []), f"{prefix}.readers",
                          sub["lock"], sub["pins"], sub["door"], sub["unlock"], where,
                          days_default=days_default, factory=factory, seen=seen_readers)
        sub["pins"].check_unknown()
        for key, _default in PIN_KEYS:
            pin = getattr(spec.pins, key)
            if pin and pin in owners:
                raise sub["pins"].fail(key, f"BCM{pin} is already {owners[pin]}")
            if pin:
                owners[pin] = f"{prefix}.pins.{key}"
        journal = sec.path("journal_file", None, storage.dir) or \
            storage.dir / f"journal-{door_id}.db"
        key_file = sec.path("door_key_file", None, storage.dir) or \
            storage.dir / f"door-{door_id}.key"
        for key, path in (("journal_file", journal), ("door_key_file", key_file)):
            if path in files:
                raise sec.fail(key, f"{path} is already {files[path]}")
            files[path] = f"{prefix}.{key}"
        sec.check_unknown()
        out.append(replace_paths(spec, journal, key_file))
    return out


def _cards(c: _Section, storage_dir: Path, base: Path) -> CardsConfig:
    plans = c.get("require_authenticated_plans", list, [])
    for plan in plans:
        if plan not in PLANS:
            raise c.fail("require_authenticated_plans",
                         f"unknown plan {plan!r}; use {', '.join(PLANS)}")
    aid = c.get("desfire_aid", str, "F5A0CD")
    if not re.fullmatch(r"[0-9A-Fa-f]{6}", aid) or aid == "000000":
        raise c.fail("desfire_aid", f"6 hex digits, not 000000 (got {aid!r})")
    sun_url = c.get("sun_url", str, "https://accessd.invalid/c")
    if not re.fullmatch(r"https?://[!-~]{1,150}", sun_url) or "#" in sun_url:
        raise c.fail("sun_url", "an http(s) URL of printable ASCII, at most 150 characters, "
                                "without a fragment")
    cards = CardsConfig(
        enabled=c.get("enabled", bool, False),
        master_key_file=(c.path("master_key_file", None, base)
                         or storage_dir / "cards.keys"),
        require_authenticated=c.get("require_authenticated", bool, False),
        require_authenticated_plans=tuple(plans),
        ntag424_mode=c.choice("ntag424_mode", ("authenticate", "sun"), "authenticate"),
        sun_url=sun_url,
        desfire_aid=aid.upper(),
        rekey_on_tap=c.get("rekey_on_tap", bool, True),
    )
    c.check_unknown()
    return cards


def parse_config(text: str, where: str = "<string>", base: Path | None = None) -> Config:
    """Parse TOML text; relative paths resolve against `base` (the file's folder)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    return _parse(data, where, base or Path.cwd())


def resolve_path(explicit: str | os.PathLike[str] | None) -> Path:
    """`--config` wins, then `ACCESSD_CONFIG`, then /etc/accessd/accessd.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("ACCESSD_CONFIG")
    return Path(env) if env else DEFAULT_PATH


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    p = resolve_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: configuration file not found "
                          "(use --config PATH or ACCESSD_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    cfg = parse_config(text, str(p), p.resolve().parent)
    return dataclasses.replace(cfg, path=p)
