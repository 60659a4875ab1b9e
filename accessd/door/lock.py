"""The lock relay: a fail-secure strike or a fail-safe magnetic lock on one GPIO pin.

The relay is driven locked from its very first pin write (gpiozero's `initial_value`), every
release ends by itself after a bounded time on the relay's own thread, and every way out of
the process (close(), a `with` block, an uncaught exception reaching atexit) drives it locked
before the pin is let go. The inversion between the two lock types lives in one place: the
gpiozero device's `active_high`, chosen so that device "on" always means *released*.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Literal

from gpiozero import DigitalOutputDevice

from accessd.config import MIN_RELEASE_S
from accessd.errors import HardwareError

log = logging.getLogger(__name__)

FAIL_SECURE = "fail-secure"  # strike: de-energised = locked, energised = released
FAIL_SAFE = "fail-safe"  # magnetic lock: energised = locked (magnet holding)
LOCK_TYPES = (FAIL_SECURE, FAIL_SAFE)
LockType = Literal["fail-secure", "fail-safe"]
Listener = Callable[[bool], None]


def released_level(lock_type: str, active_high: bool) -> bool:
    """The pin level (True = high) that releases the door.

    `active_high` describes the relay module: True when a high input energises the coil.
    A strike is released by energising the relay, a magnetic lock by de-energising it.
    """
    if lock_type not in LOCK_TYPES:
        raise ValueError(f"lock type must be one of {', '.join(LOCK_TYPES)}, got {lock_type!r}")
    return active_high if lock_type == FAIL_SECURE else not active_high


def locked_level(lock_type: str, active_high: bool) -> bool:
    """The pin level (True = high) that keeps the door locked."""
    return not released_level(lock_type, active_high)


class _RelayOutput(DigitalOutputDevice):
    """A gpiozero output whose "on" means released and whose close() always writes locked.

    Overriding close() covers every closer, including gpiozero's own shutdown of devices.
    """

    def close(self) -> None:
        try:
            if not self.closed:
                self._write(False)
        except Exception:
            log.exception("could not drive the lock relay locked while closing it")
        finally:
            super().close()


class LockRelay:
    """The door lock. Thread-safe: readers, the control socket and timers all call it."""

    def __init__(
        self,
        pin: int,
        *,
        lock_type: LockType | str = FAIL_SECURE,
        active_high: bool = True,
        release_s: float = 5.0,
        pin_factory: Any = None,
    ) -> None:
        self.pin = pin
        self.lock_type = lock_type
        self.active_high = active_high
        self.release_s = _check_seconds(release_s)
        self.locked_level = locked_level(lock_type, active_high)
        try:
            self._device = _RelayOutput(
                pin,
                active_high=not self.locked_level,
                initial_value=False,  # the first write is the locked level: no glitch
                pin_factory=pin_factory,
            )
        except Exception as exc:  # backend boundary: gpiozero and its backends raise many kinds
            raise HardwareError(f"lock relay on BCM{pin}: {exc}") from exc
        self._cond = threading.Condition(threading.RLock())
        self._released = False
        self._deadline: float | None = None
        self._held = False  # held released until unheld (an unlock schedule, a host's hold)
        self._closed = False
        self._pending: list[bool] = []  # state changes not yet told to the listeners
        self._listeners: list[Listener] = []
        self._worker = threading.Thread(
            target=self._run, name=f"lock-relay-BCM{pin}", daemon=True
        )
        self._worker.start()
        _LIVE.add(self)
        log.info("lock relay on BCM%d (%s, relay active-%s): locked", pin, lock_type,
                 "high" if active_high else "low")

    # -- state ---------------------------------------------------------------------------

    @property
    def released(self) -> bool:
        with self._cond:
            return self._released

    @property
    def held(self) -> bool:
        """Whether the door is held released (not timed): `hold(True)` until `hold(False)`."""
        with self._cond:
            return self._held

    @property
    def released_until(self) -> float | None:
        """time.monotonic() at which the lock re-locks by itself, None while locked."""
        with self._cond:
            return self._deadline

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pin_level(self) -> bool | None:
        """The level the relay pin is driven at (None once closed), read back from gpiozero."""
        with self._cond:
            if self._closed:
                return None
            return bool(self._device.pin.state)

    def on_change(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(released)` after each change; returns a function that unsubscribes.

        Listeners run on the relay's own thread, in order, so a slow journal or display never
        delays a release or a re-lock. An exception in a listener is logged, not propagated.
        """
        with self._cond:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._cond:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    # -- commands ------------------------------------------------------------------------

    def release(self, seconds: float | None = None) -> float:
        """Release the door for `seconds` (default release_s, at least 3 s); never blocks.

        A release while already released extends to the later deadline; it never shortens
        one. Returns the monotonic deadline.
        """
        duration = self.release_s if seconds is None else _check_seconds(seconds)
        with self._cond:
            if self._closed:
                raise HardwareError(f"lock relay on BCM{self.pin} is closed")
            deadline = time.monotonic() + duration
            if self._deadline is not None:
                deadline = max(deadline, self._deadline)
            self._deadline = deadline
            self._set(True)
            self._cond.notify_all()
            return deadline

    def hold(self, held: bool) -> None:
        """Hold the door released until further notice (True), or end the hold (False): the
        door then locks, or at the deadline of a release still running. A release during a
        hold ends nothing. `lock()` and `close()` end a hold too."""
        with self._cond:
            if self._closed:
                if held:
                    raise HardwareError(f"lock relay on BCM{self.pin} is closed")
                return
            self._held = held
            if held:
                self._set(True)
            elif self._deadline is None or self._deadline <= time.monotonic():
                self._deadline = None
                self._set(False)
            self._cond.notify_all()

    def lock(self) -> None:
        """Lock at once (cancels any release and any hold). A no-op once closed: close()
        already locked."""
        with self._cond:
            if self._closed:
                return
            self._deadline = None
            self._held = False
            self._set(False)
            self._cond.notify_all()

    def close(self) -> None:
        """Drive the relay locked, then release the GPIO. Idempotent; safe on every path."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._deadline = None
            self._held = False
            try:
                self._set(False)
            finally:
                _LIVE.discard(self)
                self._cond.notify_all()
                self._device.close()  # _RelayOutput.close writes the locked level again
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout=2.0)

    def __enter__(self) -> LockRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "released" if self._released else "locked"
        return f"<LockRelay BCM{self.pin} {self.lock_type} {state}>"

    # -- internals -----------------------------------------------------------------------

    def _set(self, released: bool) -> None:
        """Drive the pin (always, to re-assert it) and queue a notification on change."""
        if released:
            self._device.on()
        else:
            self._device.off()
        if released != self._released:
            self._released = released
            self._pending.append(released)
            log.info("door %s (BCM%d)", "released" if released else "locked", self.pin)

    def _run(self) -> None:
        """Re-lock at the deadline and tell the listeners, until closed."""
        while True:
            with self._cond:
                while not self._pending:
                    if self._closed:
                        return
                    if self._deadline is None:
                        self._cond.wait()
                        continue
                    remaining = self._deadline - time.monotonic()
                    if remaining > 0:
                        self._cond.wait(remaining)
                        continue
                    self._deadline = None
                    if self._held:
                        continue  # held: the release's end locks nothing
                    try:
                        self._set(False)
                    except Exception:
                        log.exception("could not re-lock the door on BCM%d; retrying", self.pin)
                        self._deadline = time.monotonic() + 0.5
                changes, self._pending = self._pending, []
                listeners = list(self._listeners)
            for released in changes:
                for listener in listeners:
                    try:
                        listener(released)
                    except Exception:
                        log.exception("lock state listener %r failed", listener)


def _check_seconds(seconds: float) -> float:
    value = float(seconds)
    if not math.isfinite(value) or value < MIN_RELEASE_S:
        raise ValueError(
            f"a release lasts at least {MIN_RELEASE_S:g} s (IEC 60839-11-1), got {seconds!r}"
        )
    return value


# Every relay still open when the interpreter exits is locked and closed before gpiozero's own
# shutdown (atexit runs handlers last-registered first, and gpiozero registered at import).
_LIVE: weakref.WeakSet[LockRelay] = weakref.WeakSet()


def _lock_all_at_exit() -> None:
    for relay in list(_LIVE):
        try:
            relay.close()
        except Exception:
            log.exception("could not lock %r at exit", relay)


atexit.register(_lock_all_at_exit)
