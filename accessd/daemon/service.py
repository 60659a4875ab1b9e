"""`accessd run`: build the door from its configuration, run it, and always end locked.

The lock relay is the first thing built (driven locked from its first pin write) and the last
thing closed; everything in between runs inside one try/finally, so a clean stop, SIGTERM, an
error at start-up and any exception the process can catch all leave the door locked. A kill
that no code can catch is covered by the unit's ExecStopPost (accessd.door.lockdown).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from accessd import __version__
from accessd.cards.gate import CardGate
from accessd.clock import ClockTrust
from accessd.config import Config
from accessd.credentials import CredentialHasher, check_secrets, load_or_create_site_secret
from accessd.daemon.control import ControlServer, Peer
from accessd.daemon.controller import DoorController
from accessd.daemon.notify import sd_notify, watchdog_interval
from accessd.daemon.storagelock import StorageLock
from accessd.decision import Plan, Proof
from accessd.errors import AccessdError
from accessd.events import Event, EventType, format_ts
from accessd.guard import UnknownCardGuard
from accessd.schedule import Schedule
from accessd.store import spool
from accessd.store.cards import CardStore
from accessd.store.db import limit_page_cache
from accessd.store.journal import Journal
from accessd.store.rules import RuleCache
from accessd.words import alarm_words

log = logging.getLogger("accessd")
TICK_S = 0.2
PURGE_EVERY_S = 3600.0
SWITCH_INTERVAL_S = 0.0005  # a tap's thread gets the GIL within 0.5 ms, not 5 ms


class SiteTimeFormatter(logging.Formatter):
    """Log times in the site's time zone with their offset (`2026-11-02 18:02:11,250
    +01:00`): the console a host reads shows the door's time whatever the machine's zone, and
    a program reading the log still knows the instant."""

    def __init__(self, fmt: str, tz: tzinfo | None) -> None:
        super().__init__(fmt)
        self.tz = tz

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        when = datetime.fromtimestamp(record.created, self.tz).astimezone(self.tz)
        offset = when.strftime("%z")
        return f"{when:%Y-%m-%d %H:%M:%S},{int(record.msecs):03d} {offset[:3]}:{offset[3:]}"


def setup_logging(level: str, tz: tzinfo | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SiteTimeFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                           tz))
    logging.basicConfig(level=level, handlers=[handler])


def check_startup(cfg: Config) -> None:
    """What `run` and `check-config` refuse before anything starts: loose secrets, and with
    `[cards] enabled` a card master key file that is missing, too open or malformed."""
    check_secrets(cfg)
    if cfg.cards.enabled:
        from accessd.cards.keys import Keyring

        Keyring.load(cfg.cards.master_key_file, cfg.site.id)


def config_schedule(cfg: Config) -> Schedule:
    s = cfg.schedule
    return Schedule(cfg.site.tz, s.opens, s.closes, frozenset(s.days), frozenset(s.closures))


class Daemon:
    """The running door: hardware, stores, controller, readers, control socket, uplink."""

    def __init__(self, cfg: Config) -> None:
        from accessd.door.hardware import DoorHardware

        self.cfg = cfg
        self.stopping = threading.Event()
        self.hardware = DoorHardware.from_config(cfg.pins, cfg.lock, cfg.door)  # locked now
        self.started_at = time.time()
        self.readers: list[Any] = []
        self.control: ControlServer | None = None
        self.uplink: Any = None
        self.controller: DoorController | None = None

    # -- building ----------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        key = load_or_create_site_secret(cfg.site.secret_file)
        rules = RuleCache(cfg.storage.rules_db)
        journal = Journal(cfg.storage.journal_db, cfg.site.id, cfg.site.door)
        clock = ClockTrust(cfg.clock.trust, cfg.clock.not_before)
        spool.import_spools(journal, self.spool_folders(), clock.trusted)  # before any tap
        sec = cfg.security
        self.door_monitor = self.hardware.new_state_machine()
        self.secure = None
        if cfg.cards.enabled:  # the authenticated cards' modules only where they are used
            from accessd.cards.host import secure_cards

            self.secure = secure_cards(cfg, follow=True)
        self.controller = c = DoorController(
            site=cfg.site.id, door=cfg.site.door, rules=rules, journal=journal,
            hasher=CredentialHasher(key), clock=clock,
            schedule=config_schedule(cfg), lock=self.hardware.relay, release_s=cfg.lock.release_s,
            guard_factory=lambda: UnknownCardGuard(sec.unknown_card_limit,
                                                   sec.unknown_card_window_s, sec.lockout_s),
            door_monitor=self.door_monitor, feedback=self.hardware.feedback,
            cards=CardGate(CardStore(rules.db.conn), frozenset(
                Plan(p) for p in cfg.cards.required_plans)),
        )
        self.hardware.relay.on_change(self._lock_changed)
        inputs = self.hardware.inputs
        inputs.on_door_opened = lambda at: self._door(self.door_monitor.door_opened, at)
        inputs.on_door_closed = lambda at: self._door(self.door_monitor.door_closed, at)
        inputs.on_exit_request = lambda at: c.on_exit_request()
        c.record(c.event(EventType.DAEMON_STARTED, detail={
            "version": __version__, "lock": cfg.lock.type,
            "readers": [r.name for r in cfg.readers]}))
        c.flush()  # ready once daemon.started is durable, as before the writer thread

        if cfg.mqtt.enabled:
            self._start_uplink()
        self.control = ControlServer(cfg.storage.control_socket, {
            "status": lambda req, peer: self.status(),
            "open": self._control_open,
            "capture": self._control_capture,
            "card": self._control_card,
        })
        self.control.start()
        from accessd.readers.factory import build_reader

        for rc in cfg.readers:
            reader = build_reader(rc, secure=self.secure)
            reader.start(c.on_card, c.on_reader_status)
            self.readers.append(reader)

    def spool_folders(self) -> list[Path]:
        folders = [self.cfg.storage.dir / "spool"]
        runtime = os.environ.get("RUNTIME_DIRECTORY")
        if runtime:
            folders.append(Path(runtime.split(":")[0]) / "spool")
        return folders

    def _start_uplink(self) -> None:
        try:
            from accessd.uplink import Uplink
        except ImportError as exc:
            log.warning("MQTT uplink unavailable: %s", exc)
            return
        c = self.controller
        assert c is not None
        self.uplink = Uplink(
            self.cfg, self.cfg.storage.journal_db, self.cfg.storage.rules_db,
            status_provider=self.status,
            on_event=lambda event: c.record(event),
            on_remote_release=lambda operator, seconds: c.manual_release(
                operator, seconds, remote=True),
        )
        c.listeners.append(lambda entry: self.uplink.notify())
        self.uplink.start()

    # -- inputs from the hardware ------------------------------------------------------
    def _door(self, handler: Callable[[float], list[Any]], at: float) -> None:
        assert self.controller is not None
        self.controller.door_input(handler, at, self._door_event)

    def _door_event(self, e: Any) -> Event:
        assert self.controller is not None
        detail = {k: v for k, v in e.to_dict().items() if k not in ("type", "at")}
        if e.kind in ("door.forced", "door.held_open"):
            log.warning("%s", e.kind)
        return self.controller.event(EventType(e.kind), result=None, detail=detail)

    def _lock_changed(self, released: bool) -> None:
        log.info("lock %s", "RELEASED" if released else "LOCKED")

    # -- control socket ----------------------------------------------------------------
    def _control_open(self, req: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """A manual release, journalled with who ordered it as the kernel tells it.

        `operator` is the caller's account from the socket's peer credentials; when that is
        the service user or root (the host's sudo wrapper runs as the service user), the
        `sudo_user` the CLI read from SUDO_USER names the person. The typed name is kept
        beside it (`operator_typed`): it is what the person said, not a proof.
        """
        assert self.controller is not None
        typed = str(req.get("operator") or "").strip()[:80]
        if not typed:
            raise ValueError("a manual release needs the operator's name")
        seconds = float(req.get("seconds") or self.cfg.lock.release_s)
        if seconds < 3 or seconds > 3600:
            raise ValueError("release time must be between 3 s and 1 hour")
        operator, sudo_user = peer.user, req.get("sudo_user")
        if (peer.uid in (0, os.geteuid()) and isinstance(sudo_user, str)
                and sudo_user.strip()):
            operator = sudo_user.strip()[:80]
        self.controller.manual_release(operator, seconds, detail={
            "operator_typed": typed, "peer_user": peer.user, "peer_uid": peer.uid})
        return {"seconds": seconds, "operator": operator}

    def _control_capture(self, req: dict[str, Any], _peer: Peer) -> dict[str, Any]:
        assert self.controller is not None
        timeout = min(float(req.get("timeout") or 30), 300)
        read = self.controller.capture_next(req.get("reader"), timeout)
        if read is None:
            return {"credential_hash": None}
        if read.proof is not None and read.proof.proof is not Proof.AUTHENTICATED:
            raise ValueError(f"the card failed authentication ({read.proof.why or read.proof.proof}"
                             "): not enrolled; an accessd card is enrolled by 'accessd card "
                             "issue'")
        return {"credential_hash": self.controller.hasher(read.uid),
                "technology": read.technology, "reader": read.reader}

    def _control_card(self, req: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """Issue, re-key or wipe the next card on an NFC reader (accessd card ...)."""
        from accessd.cards.host import refuse_enrolled

        assert self.controller is not None
        name = req.get("reader")
        readers = [r for r in self.readers if getattr(r, "secure", None) is not None
                   and name in (None, r.name)]
        if self.secure is None or not readers:
            raise ValueError("no NFC reader takes authenticated cards here ([cards] enabled, "
                             "a reader of type nfc" + (f" named {name!r})" if name else ")"))
        timeout = min(float(req.get("timeout") or 30), 300)
        hasher = self.controller.hasher
        rules = RuleCache(self.cfg.storage.rules_db, readonly=True)
        try:
            approve = refuse_enrolled(rules, hasher) if req.get("action") == "issue" else None
            job = self.secure.job(str(req.get("action")), req.get("member_ref"), approve)
            issued = readers[0].run_on_next_card(job, timeout)
        except AccessdError as exc:
            raise ValueError(str(exc)) from None
        finally:
            rules.close()
        return {"card": issued.kind, "key_version": issued.key_version,
                "credential_hash": hasher(issued.uid.hex().upper())}

    def status(self) -> dict[str, Any]:
        c = self.controller
        assert c is not None
        relay = self.hardware.relay
        door_open = self.hardware.inputs.door_open
        now = c.wallclock()
        journal_state = c.journal_state()
        last = dict(c.last_decision) if c.last_decision else None
        if last:
            last["ts"] = format_ts(last["ts"])
        return {
            "site": self.cfg.site.id, "door": self.cfg.site.door, "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 1),
            "readers": {r.name: {"online": bool(getattr(r, "online", False)),
                                 "type": rc.type, "direction": rc.direction,
                                 **(r.health() if hasattr(r, "health") else {})}
                        for r, rc in zip(self.readers, self.cfg.readers, strict=False)},
            "lock": {"state": "released" if relay.released else "locked",
                     "type": self.cfg.lock.type,
                     # read back from the pin factory: what the relay is really driven at
                     "relay_pin": {True: "high", False: "low"}.get(relay.pin_level, "closed")},
            "door_contact": {"state": "unknown" if door_open is None else
                             ("open" if door_open else "closed")},
            "alarms": c.alarms(),
            "clock": {"trusted": c.clock.trusted(now), "now": format_ts(now)},
            "journal": journal_state,
            "rules": {"version": c.rule_version(), **c.rules.counts(),
                      "problems": dict(c.problems)},
            "decisions": {"granted": c.counters.granted, "denied": c.counters.denied,
                          "internal_errors": c.counters.internal_errors},
            "last_decision": last,
            "uplink": self.uplink.state() if self.uplink is not None else {"enabled": False},
        }

    # -- the loop ----------------------------------------------------------------------
    def loop(self) -> None:
        c = self.controller
        assert c is not None
        sd_notify("READY=1\nSTATUS=door locked, waiting for cards")
        log.info("accessd %s ready: site %s door %s, %d reader(s)", __version__,
                 self.cfg.site.id, self.cfg.site.door, len(self.readers))
        wd = watchdog_interval()
        last_wd = last_purge = 0.0
        active: list[str] = []
        while not self.stopping.wait(TICK_S):
            mono = time.monotonic()
            c.door_input(self.door_monitor.tick, mono, self._door_event)
            alarms = c.alarms()
            if bool(alarms) != bool(active):
                self.hardware.feedback.alarm(bool(alarms))
            for alarm in alarms:
                if alarm not in active:
                    log.warning("alarm on: %s", alarm_words(alarm))
            for alarm in active:
                if alarm not in alarms:
                    log.warning("alarm off: %s", alarm_words(alarm))
            active = alarms
            if wd and mono - last_wd >= wd:
                sd_notify("WATCHDOG=1")
                last_wd = mono
            if mono - last_purge >= PURGE_EVERY_S:
                last_purge = mono
                self._purge()

    def _purge(self) -> None:
        """Retention in its own connection so that taps never wait behind the clean-up."""
        cfg = self.cfg
        try:
            j = Journal(cfg.storage.journal_db, cfg.site.id, cfg.site.door)
            try:
                n = j.purge(cfg.storage.retention_days)
            finally:
                j.close()
        except Exception:
            log.exception("journal retention clean-up failed")
            return
        if n and self.controller is not None:
            self.controller.record(self.controller.event(
                EventType.EVENTS_PURGED, detail={"deleted": n,
                                                 "retention_days": cfg.storage.retention_days}))

    def stop(self) -> None:
        """Stop inputs first, then record the stop, then lock and let go of the hardware."""
        sd_notify("STOPPING=1")
        try:
            for reader in self.readers:
                try:
                    reader.stop()
                except Exception:
                    log.exception("could not stop reader %s", getattr(reader, "name", "?"))
            if self.control is not None:
                self.control.stop()
            if self.controller is not None:
                self.hardware.relay.lock()
                self.controller.record(self.controller.event(EventType.DAEMON_STOPPED))
                # the writer drains (daemon.stopped is the last entry); what the journal
                # refused goes to a spool file
                self.controller.spool(self.spool_folders())
            if self.uplink is not None:
                self.uplink.stop()
        finally:
            self.hardware.close()
            if self.controller is not None:
                self.controller.close(0)  # no-op after a clean stop; else ends the writer
                self.controller.rules.close()
                self.controller.journal.close()


def run(cfg: Config) -> int:
    """Run until SIGTERM/SIGINT; the exit status is what systemd sees."""
    setup_logging(cfg.log_level, cfg.site.tz)
    check_startup(cfg)  # before anything is touched: a loose secret is a one-line error
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    limit_page_cache()  # SQLite's page caches small: the Pi's memory (accessd/store/db.py)
    # one daemon per storage folder: locked before the relay, the socket or the broker
    with StorageLock(cfg.storage.dir):
        daemon = Daemon(cfg)
        try:
            def on_signal(signum: int, _frame: object) -> None:
                log.info("received %s, stopping", signal.Signals(signum).name)
                daemon.stopping.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            daemon.start()
            daemon.loop()
        finally:
            daemon.stop()
            log.info("stopped; door locked")
    return 0
