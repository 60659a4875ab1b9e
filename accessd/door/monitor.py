"""The door contact and the exit button: a pure state machine, then the pins feeding it.

`DoorStateMachine` turns what happened (the contact opened or closed, a card was granted, the
exit button was pressed, the door was released by hand) and a monotonic `now` into typed door
events: authorised opening, forced opening, held open (pre-alarm, then alarm), closed. It does
no I/O and reads no clock, so every timing rule is tested with injected time. `DoorInputs`
is the gpiozero side: it only reports edges, with a timestamp, to callbacks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

from gpiozero import Button, DigitalInputDevice

from accessd.errors import HardwareError

log = logging.getLogger(__name__)

Authorisation = Literal["grant", "exit", "manual", "unlocked"]
Clock = Callable[[], float]
EdgeCallback = Callable[[float], None]


# -- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DoorEvent:
    """Something the door did, at a time.monotonic() instant."""

    at: float
    kind: ClassVar[str] = "door"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **asdict(self)}


@dataclass(frozen=True)
class DoorOpened(DoorEvent):
    """An authorised opening: `by` a card grant, an exit request, a manual release, or the
    door held unlocked (a schedule, the host's hold)."""

    by: Authorisation
    kind: ClassVar[str] = "door.opened"


@dataclass(frozen=True)
class DoorForced(DoorEvent):
    """Opened with no grant, no exit request and no manual release active."""

    kind: ClassVar[str] = "door.forced"


@dataclass(frozen=True)
class DoorHeldOpenPrealarm(DoorEvent):
    """Open for `open_for` s, past the pre-alarm time: warn people at the door."""

    open_for: float
    kind: ClassVar[str] = "door.held_open_prealarm"


@dataclass(frozen=True)
class DoorHeldOpen(DoorEvent):
    """Open for `open_for` s, past the alarm time: the held-open alarm."""

    open_for: float
    kind: ClassVar[str] = "door.held_open"


@dataclass(frozen=True)
class DoorClosed(DoorEvent):
    """Closed after `open_for` s; `cleared` names the alarms this closing ends."""

    open_for: float
    cleared: tuple[str, ...] = ()
    kind: ClassVar[str] = "door.closed"


EVENT_TYPES: tuple[type[DoorEvent], ...] = (
    DoorOpened, DoorForced, DoorHeldOpenPrealarm, DoorHeldOpen, DoorClosed,
)


# -- the pure state machine --------------------------------------------------------------


class DoorStateMachine:
    """Door status monitoring (IEC 60839-11-1): forced and held-open alarms.

    A grant or an exit request authorises one opening within its window (two cards badged
    back to back authorise two openings); a manual release authorises every opening while it
    lasts. Methods take the caller's monotonic `now` and return the events it causes; call
    `tick(now)` at `next_deadline()` (or simply often) for the held-open timings.
    """

    def __init__(self, prealarm_s: float, alarm_s: float, *,
                 open_since: float | None = None) -> None:
        if not 0 < prealarm_s < alarm_s:
            raise ValueError(f"need 0 < prealarm_s < alarm_s, got {prealarm_s}, {alarm_s}")
        self.prealarm_s = prealarm_s
        self.alarm_s = alarm_s
        # A door found open at start is timed for held-open but cannot be judged forced.
        self._opened_at = open_since
        self._forced = False
        self._prealarm = False
        self._alarm = False
        self._authorisations: list[tuple[float, Authorisation]] = []  # (expires, source)
        self._manual_until: float | None = None
        self._unlocked = False  # held unlocked: any opening is lawful

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    @property
    def opened_at(self) -> float | None:
        return self._opened_at

    @property
    def alarms(self) -> tuple[str, ...]:
        """The event types of the alarms active now (ended by the door closing)."""
        active = ((self._forced, DoorForced), (self._prealarm, DoorHeldOpenPrealarm),
                  (self._alarm, DoorHeldOpen))
        return tuple(cls.kind for on, cls in active if on)

    def pending_authorisations(self, now: float) -> int:
        self._expire(now)
        return len(self._authorisations)

    # -- inputs --------------------------------------------------------------------------

    def access_granted(self, now: float, window_s: float) -> None:
        """A card was granted: one opening until now + window_s (the release time)."""
        self._authorise(now, window_s, "grant")

    def exit_requested(self, now: float, window_s: float) -> None:
        """The exit button was pressed: one opening until now + window_s."""
        self._authorise(now, window_s, "exit")

    def manual_release(self, now: float, window_s: float) -> None:
        """The door was released by hand (host, control socket): any opening until then."""
        until = now + _window(window_s)
        self._manual_until = until if self._manual_until is None else max(until,
                                                                           self._manual_until)

    def held_unlocked(self, unlocked: bool) -> None:
        """The door is held unlocked (an unlock schedule, the host's hold) or no longer is:
        while it is, an opening is authorised, not forced."""
        self._unlocked = unlocked

    def locked(self, now: float) -> None:
        """The lock was locked early: every pending authorisation ends now."""
        self._authorisations.clear()
        self._manual_until = None

    def door_opened(self, now: float) -> list[DoorEvent]:
        if self._opened_at is not None:
            return []  # a repeated edge: already open
        self._expire(now)
        self._opened_at = now
        self._prealarm = self._alarm = self._forced = False
        if self._unlocked:
            return [DoorOpened(now, "unlocked")]
        if self._manual_until is not None:
            return [DoorOpened(now, "manual")]
        if self._authorisations:
            # Use the authorisation that would expire first: it is the one at risk.
            first = min(range(len(self._authorisations)),
                        key=lambda i: self._authorisations[i][0])
            _, source = self._authorisations.pop(first)
            return [DoorOpened(now, source)]
        self._forced = True
        return [DoorForced(now)]

    def door_closed(self, now: float) -> list[DoorEvent]:
        if self._opened_at is None:
            return []
        events = self.tick(now)  # an alarm time passed unticked still happened
        open_for = max(0.0, now - self._opened_at)
        events.append(DoorClosed(now, open_for, self.alarms))
        self._opened_at = None
        self._prealarm = self._alarm = self._forced = False
        return events

    def tick(self, now: float) -> list[DoorEvent]:
        """The held-open events due at `now`, each at most once per opening."""
        self._expire(now)
        if self._opened_at is None:
            return []
        open_for = max(0.0, now - self._opened_at)
        events: list[DoorEvent] = []
        if not self._prealarm and open_for >= self.prealarm_s:
            self._prealarm = True
            events.append(DoorHeldOpenPrealarm(now, open_for))
        if not self._alarm and open_for >= self.alarm_s:
            self._alarm = True
            events.append(DoorHeldOpen(now, open_for))
        return events

    def next_deadline(self) -> float | None:
        """When `tick` will next have something to say (None: nothing is timed)."""
        if self._opened_at is None:
            return None
        if not self._prealarm:
            return self._opened_at + self.prealarm_s
        if not self._alarm:
            return self._opened_at + self.alarm_s
        return None

    # -- internals -----------------------------------------------------------------------

    def _authorise(self, now: float, window_s: float, source: Authorisation) -> None:
        self._expire(now)
        self._authorisations.append((now + _window(window_s), source))

    def _expire(self, now: float) -> None:
        self._authorisations = [a for a in self._authorisations if a[0] >= now]
        if self._manual_until is not None and self._manual_until < now:
            self._manual_until = None


def _window(window_s: float) -> float:
    if not window_s > 0:
        raise ValueError(f"an authorisation window must be positive, got {window_s!r}")
    return window_s


# -- the pins ----------------------------------------------------------------------------


class DoorInputs:
    """The door contact and the exit button, with internal pull-ups (contacts to ground).

    `closed_is_low` True is the usual normally-closed contact: closed door = contact closed =
    pin pulled to ground; a cut wire then reads as an open door, which raises an alarm rather
    than hiding one. A pin of 0 disables that input. Callbacks get a time.monotonic() stamp
    and run on gpiozero's event thread: keep them short (hand over to the daemon's queue).
    """

    def __init__(
        self,
        door_contact_pin: int,
        closed_is_low: bool = True,
        exit_button_pin: int = 0,
        pin_factory: Any = None,
        bounce_s: float = 0.05,
        *,
        on_door_opened: EdgeCallback | None = None,
        on_door_closed: EdgeCallback | None = None,
        on_exit_request: EdgeCallback | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.on_door_opened = on_door_opened
        self.on_door_closed = on_door_closed
        self.on_exit_request = on_exit_request
        self._clock = clock
        self._open_when_active = not closed_is_low  # pull-up: "active" means the pin is low
        self._contact: DigitalInputDevice | None = None
        self._button: Button | None = None
        bounce = bounce_s if bounce_s and bounce_s > 0 else None
        which, pin = "door contact", door_contact_pin
        try:
            if door_contact_pin:
                self._contact = DigitalInputDevice(
                    door_contact_pin, pull_up=True, bounce_time=bounce, pin_factory=pin_factory
                )
                self._contact.when_activated = self._contact_active
                self._contact.when_deactivated = self._contact_inactive
            which, pin = "exit button", exit_button_pin
            if exit_button_pin:
                self._button = Button(
                    exit_button_pin, pull_up=True, bounce_time=bounce, pin_factory=pin_factory
                )
                self._button.when_pressed = self._exit_pressed
        except Exception as exc:  # backend boundary
            self.close()
            raise HardwareError(f"{which} on BCM{pin}: {exc}") from exc

    @property
    def door_open(self) -> bool | None:
        """True when the contact reads open; None without a door contact."""
        if self._contact is None:
            return None
        return bool(self._contact.is_active) == self._open_when_active

    @property
    def has_exit_button(self) -> bool:
        return self._button is not None

    @property
    def exit_pressed(self) -> bool | None:
        """True while the exit button reads pressed (stuck or shorted, if it stays so);
        None without an exit button."""
        return None if self._button is None else bool(self._button.is_pressed)

    def close(self) -> None:
        for device in (self._contact, self._button):
            if device is not None:
                try:
                    device.close()
                except Exception:
                    log.exception("could not close %r", device)

    def __enter__(self) -> DoorInputs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _contact_active(self) -> None:
        self._edge(self.on_door_opened if self._open_when_active else self.on_door_closed)

    def _contact_inactive(self) -> None:
        self._edge(self.on_door_closed if self._open_when_active else self.on_door_opened)

    def _exit_pressed(self) -> None:
        self._edge(self.on_exit_request)

    def _edge(self, callback: EdgeCallback | None) -> None:
        if callback is None:
            return
        try:
            callback(self._clock())
        except Exception:  # gpiozero's event thread must survive a faulty handler
            log.exception("door input callback %r failed", callback)
