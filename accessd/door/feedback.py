"""Optional feedback at the door: a green LED, a red LED and a buzzer (pin 0 = absent).

Everything is a gpiozero background blink, so a reader thread that reports a decision never
waits for a beep to finish. While the alarm sounds, granted/denied leave the buzzer and the
red LED to the alarm, so a badge cannot silence it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from gpiozero import LED, Buzzer, DigitalOutputDevice

from accessd.errors import HardwareError

log = logging.getLogger(__name__)

GRANTED_LED_S = 1.0
DENIED_LED_S = 1.0
BEEP_S = 0.1
ALARM_PERIOD_S = 0.5


class Feedback:
    """LEDs and buzzer; every method returns at once and is safe to call from any thread."""

    def __init__(self, buzzer_pin: int = 0, led_granted_pin: int = 0, led_denied_pin: int = 0,
                 pin_factory: Any = None) -> None:
        self._buzzer: Buzzer | None = None
        self._green: LED | None = None
        self._red: LED | None = None
        self._alarm = False
        self._lock = threading.Lock()
        which, pin = "buzzer", buzzer_pin
        try:
            if buzzer_pin:
                self._buzzer = Buzzer(buzzer_pin, pin_factory=pin_factory)
            which, pin = "granted LED", led_granted_pin
            if led_granted_pin:
                self._green = LED(led_granted_pin, pin_factory=pin_factory)
            which, pin = "denied LED", led_denied_pin
            if led_denied_pin:
                self._red = LED(led_denied_pin, pin_factory=pin_factory)
        except Exception as exc:  # backend boundary
            self.close()
            raise HardwareError(f"{which} on BCM{pin}: {exc}") from exc

    @property
    def alarm_on(self) -> bool:
        return self._alarm

    def granted(self) -> None:
        """Green LED for a second and one short beep."""
        with self._lock:
            _pulse(self._green, GRANTED_LED_S)
            if not self._alarm:
                _pulse(self._buzzer, BEEP_S)

    def denied(self) -> None:
        """Red LED for a second and two short beeps."""
        with self._lock:
            if not self._alarm:
                _pulse(self._red, DENIED_LED_S)
                _pulse(self._buzzer, BEEP_S, times=2)

    def alarm(self, on: bool) -> None:
        """Sound (or stop) the forced / held-open alarm: buzzer and red LED blinking."""
        with self._lock:
            self._alarm = on
            for device in (self._buzzer, self._red):
                if device is None:
                    continue
                if on:
                    device.blink(on_time=ALARM_PERIOD_S, off_time=ALARM_PERIOD_S, n=None,
                                 background=True)
                else:
                    device.off()

    def close(self) -> None:
        for device in (self._buzzer, self._green, self._red):
            if device is not None:
                try:
                    device.close()
                except Exception:
                    log.exception("could not close %r", device)

    def __enter__(self) -> Feedback:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _pulse(device: DigitalOutputDevice | None, on_s: float, times: int = 1) -> None:
    if device is not None:
        device.blink(on_time=on_s, off_time=on_s if times > 1 else 0.0, n=times,
                     background=True)
