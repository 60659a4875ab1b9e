"""Drive the lock relay to its locked level and exit: `python -m accessd.door.lockdown`.

Run by systemd's ExecStopPost after accessd stops, crashes or is killed, when nothing else is
left to re-lock the door. It does not import the daemon or read its database, so it still
works when those are what broke. It exits without closing the gpiozero device on purpose:
closing turns the pin back into an input, which would drop the level just written (whether a
line keeps its level once the process is gone depends on the backend and the kernel; see
docs/hardware.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from accessd.errors import HardwareError

#: the device stays referenced until the process ends: gpiozero closes a device it garbage
#: collects (`Device.__del__`), which would turn the pin back into an input at once
HELD: list[Any] = []

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m accessd.door.lockdown",
        description="Drive the door lock relay to its locked level and exit "
                    "(systemd ExecStopPost). Use the same values as [lock] and [pins].",
    )
    parser.add_argument("--pin", type=int, default=17, help="BCM pin of the lock relay "
                        "([pins] lock_relay, default 17)")
    parser.add_argument("--lock-type", choices=("fail-secure", "fail-safe"),
                        default="fail-secure", help="[lock] type (default fail-secure)")
    parser.add_argument("--active-high", type=_bool, default=True, metavar="true|false",
                        help="[pins] relay_active_high: a high input energises the relay "
                             "(default true)")
    parser.add_argument("--factory", default="default",
                        help="[pins] factory: default, lgpio, rpigpio, pigpio, native, mock")
    parser.add_argument("--config", metavar="PATH",
                        help="read the values from this accessd configuration; the other "
                             "options are then only the fallback if it cannot be read")
    return parser


def _from_config(args: argparse.Namespace) -> None:
    """Take pins, lock types, polarities and factory from the site's configuration if
    readable, so that a drop-in written at installation cannot drive a stale pin after an
    edit. Every door of the Pi is locked (`args.relays`)."""
    from accessd.config import load_config
    from accessd.errors import ConfigError

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"lockdown: warning: {exc}; using the command-line values", file=sys.stderr)
        return
    args.relays = [(d.pins.lock_relay, d.lock.type, d.pins.relay_active_high)
                   for d in cfg.doors]
    args.pin, args.lock_type, args.active_high = args.relays[0]
    args.factory = cfg.pins.factory


def lockdown(pin: int, lock_type: str, active_high: bool, factory_name: str,
             factory: object = None) -> bool:
    """Drive `pin` to the locked level; return that level (True = high)."""
    from gpiozero import DigitalOutputDevice

    from accessd.door.lock import locked_level
    from accessd.door.pins import make_pin_factory

    level = locked_level(lock_type, active_high)
    factory = factory or make_pin_factory(factory_name)
    try:
        HELD.append(DigitalOutputDevice(pin, active_high=True, initial_value=level,
                                        pin_factory=factory))
    except Exception as exc:  # backend boundary
        raise HardwareError(f"lock relay on BCM{pin}: {exc}") from exc
    return level


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.relays = None
    if args.config:
        _from_config(args)
    relays = args.relays or [(args.pin, args.lock_type, args.active_high)]
    for pin, _type, _high in relays:
        if not 1 <= pin <= 27:
            print(f"lockdown: error: --pin must be a BCM pin 1..27, got {pin}", file=sys.stderr)
            return 2
    from accessd.door.pins import make_pin_factory

    failed = 0
    try:
        factory = make_pin_factory(args.factory)
    except HardwareError as exc:
        print(f"lockdown: error: {exc}", file=sys.stderr)
        return 1
    for pin, lock_type, active_high in relays:  # every door: one failing stops no other
        try:
            level = lockdown(pin, lock_type, active_high, args.factory, factory)
        except HardwareError as exc:
            print(f"lockdown: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"lockdown: BCM{pin} driven {'high' if level else 'low'} "
              f"(locked, {lock_type}, relay active-{'high' if active_high else 'low'})",
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip atexit: gpiozero's shutdown would close the device and float the pin we just set.
    os._exit(code)
