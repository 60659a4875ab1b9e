"""`accessd run`: build the door from its configuration, run it, and always end locked.

The lock relay is the first thing built (driven locked from its first pin write) and the last
thing closed; everything in between runs inside one try/finally, so a clean stop, SIGTERM, an
error at start-up and any exception the process can catch all leave the door locked. A kill
that no code can catch is covered by the unit's ExecStopPost (accessd.door.lockdown).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from accessd import __version__
from accessd.cards.gate import CardGate
from accessd.clock import ClockTrust
from accessd.config import Config, DoorSpec
from accessd.credentials import CredentialHasher, check_secrets, load_or_create_site_secret
from accessd.daemon.control import ControlServer, Peer
from accessd.daemon.controller import Capture, DoorController
from accessd.daemon.notify import sd_notify, watchdog_interval
from accessd.daemon.storagelock import StorageLock
from accessd.decision import Plan, Proof
from accessd.door.mode import Hold
from accessd.errors import AccessdError
from accessd.events import Event, EventType, format_ts
from accessd.guard import UnknownCardGuard
from accessd.schedule import Schedule
from accessd.store import spool
from accessd.store.cards import CardStore
from accessd.store.db import limit_page_cache
from accessd.store.journal import Journal
from accessd.store.rules import RuleCache
from accessd.store.writer import CLOSE_S
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


@dataclass
class DoorUnit:
    """One door of this Pi at run time: its hardware, state machine, controller, readers and
    uplink. The Pi's doors share the rule cache, the site key and the clock."""

    spec: DoorSpec
    hardware: Any
    monitor: Any = None
    controller: DoorController | None = None
    readers: list[Any] = field(default_factory=list)
    uplink: Any = None
    active: list[str] = field(default_factory=list)  # its alarms at the last tick


class Daemon:
    """The running doors: hardware, stores, controllers, readers, control socket, uplinks.

    One door (the single-door configuration) or several (`[[doors]]`): each door has its own
    relay, contact, exit button, readers, journal and uplink, and they share the rule cache.
    `hardware`, `controller` and `uplink` are the first door's (the only one, usually).
    """

    def __init__(self, cfg: Config) -> None:
        from gpiozero import Device

        from accessd.door.hardware import DoorHardware
        from accessd.door.pins import make_pin_factory

        self.cfg = cfg
        self.stopping = threading.Event()
        # several doors share one pin factory; one door keeps building its own, as before
        self.factory = make_pin_factory(cfg.pins.factory) if cfg.several_doors else None
        self._owns_factory = self.factory is not None and self.factory is not Device.pin_factory
        self.doors: list[DoorUnit] = []
        try:
            for spec in cfg.doors:  # each relay driven locked from its first pin write
                self.doors.append(DoorUnit(spec, DoorHardware.from_config(
                    spec.pins, spec.lock, spec.door, factory=self.factory)))
        except BaseException:
            self._close_hardware()
            raise
        self.hardware = self.doors[0].hardware
        self.started_at = time.time()
        self.readers: list[Any] = []
        self.control: ControlServer | None = None
        self.uplink: Any = None
        self.controller: DoorController | None = None

    # -- building ----------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        key = load_or_create_site_secret(cfg.site.secret_file)
        hasher = CredentialHasher(key)
        clock = ClockTrust(cfg.clock.trust, cfg.clock.not_before)
        sec = cfg.security
        self.secure = None
        if cfg.cards.enabled:  # the authenticated cards' modules only where they are used
            from accessd.cards.host import secure_cards

            self.secure = secure_cards(cfg, follow=True)
        required = frozenset(Plan(p) for p in cfg.cards.required_plans)
        for unit in self.doors:
            spec = unit.spec
            rules = RuleCache(cfg.storage.rules_db)
            journal = Journal(spec.journal_file, cfg.site.id, spec.id)
            spool.import_spools(journal, self.spool_folders(unit), clock.trusted)  # first
            unit.monitor = unit.hardware.new_state_machine()
            unit.controller = c = DoorController(
                site=cfg.site.id, door=spec.id, rules=rules, journal=journal, hasher=hasher,
                clock=clock, schedule=config_schedule(cfg), lock=unit.hardware.relay,
                release_s=spec.lock.release_s,
                guard_factory=lambda: UnknownCardGuard(sec.unknown_card_limit,
                                                       sec.unknown_card_window_s,
                                                       sec.lockout_s),
                door_monitor=unit.monitor, feedback=unit.hardware.feedback,
                cards=CardGate(CardStore(rules.db.conn), required), unlock=spec.unlock,
            )
            unit.hardware.relay.on_change(
                lambda released, door=spec.id: self._lock_changed(door, released))
            inputs = unit.hardware.inputs
            inputs.on_door_opened = lambda at, u=unit: self._door(u, u.monitor.door_opened, at)
            inputs.on_door_closed = lambda at, u=unit: self._door(u, u.monitor.door_closed, at)
            inputs.on_exit_request = lambda at, c=c: c.on_exit_request()
            c.record(c.event(EventType.DAEMON_STARTED, detail={
                "version": __version__, "lock": spec.lock.type,
                "readers": [r.name for r in spec.readers]}))
            if self._stored_hold(unit) is Hold.LOCKED:  # a lock-down outlives a restart
                c.set_hold(Hold.LOCKED, "restored at start")
            c.tick_mode()
            c.flush()  # ready once daemon.started is durable, as before the writer thread
        self.controller = self.doors[0].controller
        self.door_monitor = self.doors[0].monitor
        self._check_orphan_journal()

        if cfg.mqtt.enabled:
            self._start_uplinks()
        self.control = ControlServer(cfg.storage.control_socket, {
            "status": lambda req, peer: self.status(req.get("door")),
            "open": self._control_open,
            "mode": self._control_mode,
            "capture": self._control_capture,
            "card": self._control_card,
        })
        self.control.start()
        from accessd.readers.factory import build_reader

        for unit in self.doors:
            assert unit.controller is not None
            for rc in unit.spec.readers:
                reader = build_reader(rc, secure=self.secure)
                reader.start(unit.controller.on_card, unit.controller.on_reader_status)
                unit.readers.append(reader)
                self.readers.append(reader)

    def unit(self, door: str | None) -> DoorUnit:
        """The door called `door` (ValueError naming the doors), or the first one."""
        if door is None:
            return self.doors[0]
        for unit in self.doors:
            if unit.spec.id == door:
                return unit
        raise ValueError(f"no door {door!r} on this Pi; doors: "
                         f"{', '.join(u.spec.id for u in self.doors)}")

    def _check_orphan_journal(self) -> None:
        """With [[doors]], a journal.db no door uses holds events nobody delivers: say so."""
        old = self.cfg.storage.journal_db
        if not self.cfg.several_doors or any(u.spec.journal_file == old for u in self.doors) \
                or not old.exists():
            return
        try:
            j = Journal(old, self.cfg.site.id, self.cfg.doors[0].id, readonly=True)
            try:
                depth = j.depth()
            finally:
                j.close()
        except Exception as exc:
            depth, note = -1, str(exc)
        else:
            note = ""
        if depth:
            log.error("%s holds %s events no door delivers (the single-door journal): set "
                      "journal_file = \"journal.db\" on the door it belonged to "
                      "(docs/configuration.md) %s", old, depth if depth > 0 else "some", note)

    def spool_folders(self, unit: DoorUnit | None = None) -> list[Path]:
        """Where a door's held events are spooled at stop: the first door keeps the
        single-door folders, the others a sub-folder each."""
        unit = unit or self.doors[0]
        sub = "" if unit is self.doors[0] else unit.spec.id
        folders = [self.cfg.storage.dir / "spool" / sub]
        runtime = os.environ.get("RUNTIME_DIRECTORY")
        if runtime:
            folders.append(Path(runtime.split(":")[0]) / "spool" / sub)
        return folders

    def _start_uplinks(self) -> None:
        try:
            from accessd.uplink import Uplink
        except ImportError as exc:
            log.warning("MQTT uplink unavailable: %s", exc)
            return
        for unit in self.doors:
            c = unit.controller
            assert c is not None
            owner = unit is self.doors[0]  # applies the site's rules for every door
            unit.uplink = Uplink(
                self.cfg, unit.spec.journal_file, self.cfg.storage.rules_db, door=unit.spec,
                rules_owner=owner,
                other_journals={u.spec.id: u.spec.journal_file for u in self.doors
                                if u is not unit} if owner else None,
                status_provider=lambda u=unit: self._door_status(u),
                on_event=lambda event, c=c: c.record(event),
                on_remote_release=lambda operator, seconds, c=c: c.manual_release(
                    operator, seconds, remote=True),
            )
            c.listeners.append(lambda entry, up=unit.uplink: up.notify())
            unit.uplink.start()
        self.uplink = self.doors[0].uplink

    # -- inputs from the hardware ------------------------------------------------------
    def _door(self, unit: DoorUnit, handler: Callable[[float], list[Any]], at: float) -> None:
        assert unit.controller is not None
        unit.controller.door_input(handler, at, lambda e: self._door_event(unit, e))

    def _door_event(self, unit: DoorUnit, e: Any) -> Event:
        assert unit.controller is not None
        detail = {k: v for k, v in e.to_dict().items() if k not in ("type", "at")}
        if e.kind in ("door.forced", "door.held_open"):
            log.warning("%s%s", e.kind, f" ({unit.spec.id})" if self.cfg.several_doors else "")
        return unit.controller.event(EventType(e.kind), result=None, detail=detail)

    def _lock_changed(self, door: str, released: bool) -> None:
        log.info("lock %s%s", "RELEASED" if released else "LOCKED",
                 f" ({door})" if self.cfg.several_doors else "")

    # -- control socket ----------------------------------------------------------------
    def _control_open(self, req: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """A manual release, journalled with who ordered it as the kernel tells it.

        `operator` is the caller's account from the socket's peer credentials; when that is
        the service user or root (the host's sudo wrapper runs as the service user), the
        `sudo_user` the CLI read from SUDO_USER names the person. The typed name is kept
        beside it (`operator_typed`): it is what the person said, not a proof.
        """
        unit = self.unit(req.get("door"))
        assert unit.controller is not None
        operator, typed = _operator(req, peer, "a manual release")
        seconds = float(req.get("seconds") or unit.spec.lock.release_s)
        if seconds < 3 or seconds > 3600:
            raise ValueError("release time must be between 3 s and 1 hour")
        unit.controller.manual_release(operator, seconds, detail={
            "operator_typed": typed, "peer_user": peer.user, "peer_uid": peer.uid})
        return {"seconds": seconds, "operator": operator, "door": unit.spec.id}

    def _control_mode(self, req: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """The host holds a door open or locked until further notice, or gives it back to
        its schedule (`auto`). A held-locked door stays so across a restart; a held-open
        one does not (a door never opens by itself at start)."""
        unit = self.unit(req.get("door"))
        assert unit.controller is not None
        try:
            hold = Hold(str(req.get("mode")))
        except ValueError:
            raise ValueError("mode: open, locked or auto") from None
        operator, typed = _operator(req, peer, "a change of mode")
        state = unit.controller.set_hold(hold, f"{operator} ({typed})" if typed != operator
                                         else operator)
        self._store_hold(unit, hold)
        return {"door": unit.spec.id, "mode": str(state.mode), "why": state.why}

    def _hold_file(self, unit: DoorUnit) -> Path:
        return self.cfg.storage.dir / f"door-mode-{unit.spec.id}.json"

    def _stored_hold(self, unit: DoorUnit) -> Hold:
        try:
            return Hold(json.loads(self._hold_file(unit).read_text())["hold"])
        except (OSError, ValueError, KeyError, TypeError):
            return Hold.NONE

    def _store_hold(self, unit: DoorUnit, hold: Hold) -> None:
        path = self._hold_file(unit)
        try:
            if hold is Hold.LOCKED:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"hold": str(hold)}))
                tmp.replace(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remember the hold of door %s across a restart: %s",
                        unit.spec.id, exc)

    def _control_capture(self, req: dict[str, Any], _peer: Peer) -> dict[str, Any]:
        """The next card on a reader (named), on a door's readers, or on any reader."""
        timeout = min(float(req.get("timeout") or 30), 300)
        reader, door = req.get("reader"), req.get("door")
        if reader is not None:
            units = [u for u in self.doors if any(r.name == reader for r in u.spec.readers)]
            if not units:
                raise ValueError(f"no reader {reader!r} on this Pi")
        else:
            units = [self.unit(door)] if door is not None else list(self.doors)
        cap = Capture(reader)
        for u in units:
            assert u.controller is not None
            u.controller.add_capture(cap)
        log.info("enrolment: the next card on %s is taken for enrolment (%.0f s at most)",
                 reader or (door and f"door {door}") or "any reader", timeout)
        try:
            cap.done.wait(timeout)
        finally:
            for u in units:
                assert u.controller is not None
                u.controller.drop_capture(cap)
        read = cap.read
        if read is None:
            return {"credential_hash": None}
        if read.proof is not None and read.proof.proof is not Proof.AUTHENTICATED:
            raise ValueError(f"the card failed authentication ({read.proof.why or read.proof.proof}"
                             "): not enrolled; an accessd card is enrolled by 'accessd card "
                             "issue'")
        assert self.controller is not None
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

    def status(self, door: str | None = None) -> dict[str, Any]:
        """One door's status (the first by default); on a Pi with several doors, `doors`
        lists each door's status too."""
        unit = self.unit(door)
        out = self._door_status(unit)
        if self.cfg.several_doors:
            out["doors"] = {u.spec.id: self._door_status(u) for u in self.doors}
        return out

    def _door_status(self, unit: DoorUnit) -> dict[str, Any]:
        c = unit.controller
        assert c is not None
        relay = unit.hardware.relay
        door_open = unit.hardware.inputs.door_open
        now = c.wallclock()
        journal_state = c.journal_state()
        last = dict(c.last_decision) if c.last_decision else None
        if last:
            last["ts"] = format_ts(last["ts"])
        return {
            "site": self.cfg.site.id, "door": unit.spec.id, "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 1),
            "readers": {r.name: {"online": bool(getattr(r, "online", False)),
                                 "type": rc.type, "direction": rc.direction,
                                 **(r.health() if hasattr(r, "health") else {})}
                        for r, rc in zip(unit.readers, unit.spec.readers, strict=False)},
            "lock": {"state": "released" if relay.released else "locked",
                     "type": unit.spec.lock.type,
                     # read back from the pin factory: what the relay is really driven at
                     "relay_pin": {True: "high", False: "low"}.get(relay.pin_level, "closed")},
            "door_contact": {"state": "unknown" if door_open is None else
                             ("open" if door_open else "closed")},
            "mode": {"mode": str(c.mode_state.mode), "why": c.mode_state.why,
                     "hold": str(c.mode.hold),
                     "schedule": _schedule_text(unit.spec)},
            "alarms": c.alarms(),
            "clock": {"trusted": c.clock.trusted(now), "now": format_ts(now)},
            "journal": journal_state,
            "rules": {"version": c.rule_version(), **c.rules.counts(),
                      "problems": dict(c.problems)},
            "decisions": {"granted": c.counters.granted, "denied": c.counters.denied,
                          "internal_errors": c.counters.internal_errors},
            "last_decision": last,
            "uplink": unit.uplink.state() if unit.uplink is not None else {"enabled": False},
        }

    # -- the loop ----------------------------------------------------------------------
    def loop(self) -> None:
        sd_notify("READY=1\nSTATUS=door locked, waiting for cards")
        log.info("accessd %s ready: site %s door %s, %d reader(s)", __version__,
                 self.cfg.site.id, ", ".join(u.spec.id for u in self.doors), len(self.readers))
        wd = watchdog_interval()
        last_wd = last_purge = 0.0
        while not self.stopping.wait(TICK_S):
            mono = time.monotonic()
            for unit in self.doors:
                self._tick(unit, mono)
            if wd and mono - last_wd >= wd:
                sd_notify("WATCHDOG=1")
                last_wd = mono
            if mono - last_purge >= PURGE_EVERY_S:
                last_purge = mono
                for unit in self.doors:
                    self._purge(unit)

    def _tick(self, unit: DoorUnit, mono: float) -> None:
        c = unit.controller
        assert c is not None
        c.tick_mode()
        c.door_input(unit.monitor.tick, mono, lambda e: self._door_event(unit, e))
        alarms = c.alarms()
        if bool(alarms) != bool(unit.active):
            unit.hardware.feedback.alarm(bool(alarms))
        where = f" (door {unit.spec.id})" if self.cfg.several_doors else ""
        for alarm in alarms:
            if alarm not in unit.active:
                log.warning("alarm on%s: %s", where, alarm_words(alarm))
        for alarm in unit.active:
            if alarm not in alarms:
                log.warning("alarm off%s: %s", where, alarm_words(alarm))
        unit.active = alarms

    def _purge(self, unit: DoorUnit) -> None:
        """Retention in its own connection so that taps never wait behind the clean-up."""
        cfg = self.cfg
        try:
            j = Journal(unit.spec.journal_file, cfg.site.id, unit.spec.id)
            try:
                n = j.purge(cfg.storage.retention_days)
            finally:
                j.close()
        except Exception:
            log.exception("journal retention clean-up failed")
            return
        if n and unit.controller is not None:
            unit.controller.record(unit.controller.event(
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
            for unit in self.doors:
                if unit.controller is not None:
                    unit.hardware.relay.lock()
                    unit.controller.record(unit.controller.event(EventType.DAEMON_STOPPED))
            # each door's writer drains (daemon.stopped is its last entry), all within one
            # bound; what a journal refused goes to that door's spool file
            deadline = time.monotonic() + CLOSE_S
            for unit in self.doors:
                if unit.controller is not None:
                    unit.controller.spool(self.spool_folders(unit),
                                          timeout=max(0.0, deadline - time.monotonic()))
            for unit in self.doors:
                if unit.uplink is not None:
                    unit.uplink.stop()
        finally:
            self._close_hardware()
            for unit in self.doors:
                if unit.controller is not None:
                    unit.controller.close(0)  # no-op after a clean stop; else ends the writer
                    unit.controller.rules.close()
                    unit.controller.journal.close()

    def _close_hardware(self) -> None:
        """Every door's relay locked and let go, whatever fails; then the shared factory."""
        try:
            for unit in self.doors:
                try:
                    unit.hardware.close()
                except Exception:
                    log.exception("could not close the hardware of door %s", unit.spec.id)
        finally:
            if self._owns_factory and self.factory is not None:
                self.factory.close()
                self._owns_factory = False


def _operator(req: dict[str, Any], peer: Peer, what: str) -> tuple[str, str]:
    """(who, as the kernel says: the caller's account, or the person behind sudo when the
    caller is the service user or root; the name the person typed)."""
    typed = str(req.get("operator") or "").strip()[:80]
    if not typed:
        raise ValueError(f"{what} needs the operator's name")
    operator, sudo_user = peer.user, req.get("sudo_user")
    if peer.uid in (0, os.geteuid()) and isinstance(sudo_user, str) and sudo_user.strip():
        operator = sudo_user.strip()[:80]
    return operator, typed


def _schedule_text(spec: DoorSpec) -> str | None:
    u = spec.unlock
    if u is None:
        return None
    return (f"{','.join(u.days)} {u.start:%H:%M}-{u.end:%H:%M}"
            + (" after the first in" if u.first_in else ""))


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
