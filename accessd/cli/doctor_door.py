"""`accessd doctor`: the door's hardware, from the running daemon or probed while it is
stopped (a serial port opened exclusively for a moment; the GPIO pins claimed under the
daemon's storage lock, the relay driven locked)."""

from __future__ import annotations

import logging
import time
from typing import Any

from accessd.cli.doctor import ACTION, INFO, OK, Check, ago
from accessd.config import Config, ReaderConfig
from accessd.errors import AccessdError

SERIAL_LISTEN_S = 1.0  # how long a free serial port is read for frames


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
        seen = (f"last card read {ago(age)}" if age is not None
                else f"no card read since the daemon started {ago(up)}")
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
