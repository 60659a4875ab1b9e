"""All the door hardware of one site, built from the configuration and closed locked."""

from __future__ import annotations

import logging
import time
from typing import Any

from gpiozero import Device

from accessd.config import DoorConfig, LockConfig, PinsConfig
from accessd.door.feedback import Feedback
from accessd.door.lock import LockRelay
from accessd.door.monitor import DoorInputs, DoorStateMachine
from accessd.door.pins import make_pin_factory

log = logging.getLogger(__name__)


class DoorHardware:
    """The pin factory, lock relay, door inputs and feedback, owned together.

    `close()` locks first and then lets go of everything else, whatever fails on the way;
    it is idempotent and also what leaving a `with DoorHardware.from_config(...)` block does,
    exception or not.
    """

    def __init__(self, factory: Any, relay: LockRelay, inputs: DoorInputs, feedback: Feedback,
                 door: DoorConfig, *, owns_factory: bool) -> None:
        self.factory = factory
        self.relay = relay
        self.inputs = inputs
        self.feedback = feedback
        self.door = door
        self._owns_factory = owns_factory
        self._closed = False

    @classmethod
    def from_config(cls, pins: PinsConfig, lock: LockConfig, door: DoorConfig, *,
                    bounce_s: float = 0.05, factory: Any = None) -> DoorHardware:
        """Build everything; on any failure, close what was built (the relay locked) and
        re-raise (a `HardwareError` for GPIO faults). `factory`: a pin factory shared with
        the Pi's other doors (its owner closes it); default: the one `pins` names."""
        shared = factory is not None
        factory = factory if shared else make_pin_factory(pins.factory)
        owns_factory = not shared and factory is not Device.pin_factory
        built: list[Any] = []
        try:
            relay = LockRelay(pins.lock_relay, lock_type=lock.type,
                              active_high=pins.relay_active_high, release_s=lock.release_s,
                              pin_factory=factory)
            built.append(relay)
            inputs = DoorInputs(pins.door_contact, pins.door_contact_closed_is_low,
                                pins.exit_button, factory, bounce_s)
            built.append(inputs)
            feedback = Feedback(pins.buzzer, pins.led_granted, pins.led_denied, factory)
        except BaseException:
            for device in built:  # the relay first: it locks
                _close_quietly(device)
            if owns_factory:
                _close_quietly(factory)
            raise
        return cls(factory, relay, inputs, feedback, door, owns_factory=owns_factory)

    def new_state_machine(self, now: float | None = None) -> DoorStateMachine:
        """A door state machine with this door's timings, started from the contact's state."""
        now = time.monotonic() if now is None else now
        return DoorStateMachine(self.door.held_open_prealarm_s, self.door.held_open_alarm_s,
                                open_since=now if self.inputs.door_open else None)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.relay.close()
        finally:
            try:
                self.inputs.close()
            finally:
                try:
                    self.feedback.close()
                finally:
                    if self._owns_factory:
                        self.factory.close()

    def __enter__(self) -> DoorHardware:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _close_quietly(thing: Any) -> None:
    try:
        thing.close()
    except Exception:
        log.exception("could not close %r", thing)
