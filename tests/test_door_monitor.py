"""The door state machine (pure, injected time) and the door inputs on mock pins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from door_helpers import PinBench, pin_bench, reserved_pins
from hypothesis import given, settings
from hypothesis import strategies as st

from accessd.door.monitor import (
    EVENT_TYPES,
    DoorClosed,
    DoorEvent,
    DoorForced,
    DoorHeldOpen,
    DoorHeldOpenPrealarm,
    DoorInputs,
    DoorOpened,
    DoorStateMachine,
)

PRE, ALARM, WINDOW = 20.0, 30.0, 5.0
CONTACT, EXIT = 27, 22


def kinds(events: list[DoorEvent]) -> list[str]:
    return [e.kind for e in events]


# -- the pure machine ----------------------------------------------------------------------


def test_event_type_names():
    assert [cls.kind for cls in EVENT_TYPES] == [
        "door.opened", "door.forced", "door.held_open_prealarm", "door.held_open",
        "door.closed",
    ]
    assert DoorOpened(1.0, "grant").to_dict() == {"type": "door.opened", "at": 1.0,
                                                  "by": "grant"}
    with pytest.raises(AttributeError):
        DoorForced(1.0).at = 2.0  # type: ignore[misc]


def test_granted_opening_is_authorised_and_closing_reports_the_time_open():
    m = DoorStateMachine(PRE, ALARM)
    m.access_granted(100.0, WINDOW)
    assert m.door_opened(102.0) == [DoorOpened(102.0, "grant")]
    assert m.is_open and m.alarms == ()
    assert m.door_closed(106.5) == [DoorClosed(106.5, 4.5, ())]
    assert not m.is_open


def test_opening_without_authorisation_is_forced():
    m = DoorStateMachine(PRE, ALARM)
    assert m.door_opened(10.0) == [DoorForced(10.0)]
    assert m.alarms == ("door.forced",)
    assert m.door_closed(12.0) == [DoorClosed(12.0, 2.0, ("door.forced",))]
    assert m.alarms == ()


def test_a_grant_authorises_one_opening_only():
    m = DoorStateMachine(PRE, ALARM)
    m.access_granted(0.0, WINDOW)
    assert kinds(m.door_opened(1.0)) == ["door.opened"]
    m.door_closed(2.0)
    assert kinds(m.door_opened(3.0)) == ["door.forced"]


def test_two_grants_authorise_two_openings():
    m = DoorStateMachine(PRE, ALARM)
    m.access_granted(0.0, WINDOW)
    m.access_granted(0.5, WINDOW)
    assert m.pending_authorisations(0.5) == 2
    for t in (1.0, 3.0):
        assert kinds(m.door_opened(t)) == ["door.opened"]
        m.door_closed(t + 1)


def test_a_grant_expires_with_its_window():
    m = DoorStateMachine(PRE, ALARM)
    m.access_granted(0.0, WINDOW)
    assert m.door_opened(WINDOW + 0.001) == [DoorForced(WINDOW + 0.001)]
    m2 = DoorStateMachine(PRE, ALARM)
    m2.access_granted(0.0, WINDOW)
    assert m2.door_opened(WINDOW) == [DoorOpened(WINDOW, "grant")]  # the window is inclusive


def test_exit_request_authorises_an_opening():
    m = DoorStateMachine(PRE, ALARM)
    m.exit_requested(50.0, WINDOW)
    assert m.door_opened(51.0) == [DoorOpened(51.0, "exit")]


def test_manual_release_authorises_every_opening_while_it_lasts():
    m = DoorStateMachine(PRE, ALARM)
    m.manual_release(0.0, 60.0)
    for t in (1.0, 10.0, 59.0):
        assert m.door_opened(t) == [DoorOpened(t, "manual")]
        m.door_closed(t + 0.5)
    assert kinds(m.door_opened(61.0)) == ["door.forced"]


def test_locking_early_ends_every_authorisation():
    m = DoorStateMachine(PRE, ALARM)
    m.access_granted(0.0, WINDOW)
    m.manual_release(0.0, 60.0)
    m.locked(1.0)
    assert kinds(m.door_opened(2.0)) == ["door.forced"]


def test_held_open_prealarm_then_alarm_once_each():
    m = DoorStateMachine(PRE, ALARM)
    m.access_granted(0.0, WINDOW)
    m.door_opened(1.0)
    assert m.next_deadline() == 1.0 + PRE
    assert m.tick(20.9) == []
    assert m.tick(21.0) == [DoorHeldOpenPrealarm(21.0, 20.0)]
    assert m.tick(25.0) == []
    assert m.next_deadline() == 1.0 + ALARM
    assert m.tick(31.0) == [DoorHeldOpen(31.0, 30.0)]
    assert m.tick(100.0) == []
    assert m.next_deadline() is None
    assert m.alarms == ("door.held_open_prealarm", "door.held_open")
    assert m.door_closed(101.0) == [
        DoorClosed(101.0, 100.0, ("door.held_open_prealarm", "door.held_open"))
    ]
    assert m.alarms == () and m.next_deadline() is None


def test_closing_late_without_ticks_still_reports_the_alarms_first():
    m = DoorStateMachine(PRE, ALARM)
    m.door_opened(0.0)
    assert kinds(m.door_closed(45.0)) == [
        "door.held_open_prealarm", "door.held_open", "door.closed"
    ]


def test_a_new_opening_rearms_the_held_open_timers():
    m = DoorStateMachine(PRE, ALARM)
    m.manual_release(0.0, 1000.0)
    m.door_opened(0.0)
    m.tick(40.0)
    m.door_closed(41.0)
    m.door_opened(50.0)
    assert m.tick(60.0) == []
    assert kinds(m.tick(80.0)) == ["door.held_open_prealarm", "door.held_open"]


def test_repeated_edges_are_ignored():
    m = DoorStateMachine(PRE, ALARM)
    assert m.door_closed(0.0) == []
    m.door_opened(1.0)
    assert m.door_opened(2.0) == []
    assert m.opened_at == 1.0


def test_a_door_open_at_start_is_timed_but_not_forced():
    m = DoorStateMachine(PRE, ALARM, open_since=5.0)
    assert m.is_open and m.alarms == ()
    assert kinds(m.tick(5.0 + ALARM)) == ["door.held_open_prealarm", "door.held_open"]


@pytest.mark.parametrize(("pre", "alarm"), [(0, 10), (10, 10), (20, 10), (-1, 5)])
def test_timings_are_validated(pre, alarm):
    with pytest.raises(ValueError):
        DoorStateMachine(pre, alarm)


def test_windows_are_validated():
    with pytest.raises(ValueError):
        DoorStateMachine(PRE, ALARM).access_granted(0.0, 0)


# -- properties ------------------------------------------------------------------------------

times = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
sources = st.sampled_from(["grant", "exit", "manual"])


@st.composite
def authorised_cycles(draw):
    """(authorisation, delay to opening within the window, time open, pause) cycles."""
    window = draw(st.floats(min_value=3.0, max_value=60.0))
    cycles = draw(st.lists(
        st.tuples(sources, st.floats(min_value=0.0, max_value=1.0), times, times,
                  st.lists(times, max_size=3)),
        min_size=1, max_size=12,
    ))
    return window, cycles


@settings(max_examples=300, deadline=None)
@given(authorised_cycles())
def test_property_never_forced_when_every_opening_is_authorised(case):
    window, cycles = case
    m = DoorStateMachine(PRE, ALARM)
    now = 0.0
    events: list[DoorEvent] = []
    for source, fraction, open_for, pause, ticks in cycles:
        getattr(m, {"grant": "access_granted", "exit": "exit_requested",
                    "manual": "manual_release"}[source])(now, window)
        now += min(window, fraction * window)
        events += m.door_opened(now)
        for t in sorted(ticks):
            events += m.tick(now + min(t, open_for))
        now += open_for
        events += m.door_closed(now)
        now += pause
    assert "door.forced" not in kinds(events)
    assert kinds(events).count("door.opened") == len(cycles)


ops = st.lists(
    st.tuples(st.sampled_from(["open", "close", "grant", "exit", "manual", "lock", "tick"]),
              st.floats(min_value=0.0, max_value=40.0)),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_property_held_open_at_most_once_per_opening_and_only_after_alarm_s(script):
    m = DoorStateMachine(PRE, ALARM)
    now = 0.0
    opened_at: float | None = None
    per_opening: list[str] = []
    for op, dt in script:
        now += dt
        if op == "open":
            events = m.door_opened(now)
        elif op == "close":
            events = m.door_closed(now)
        elif op in ("grant", "exit", "manual"):
            getattr(m, {"grant": "access_granted", "exit": "exit_requested",
                        "manual": "manual_release"}[op])(now, WINDOW)
            events = []
        elif op == "lock":
            m.locked(now)
            events = []
        else:
            events = m.tick(now)
        for e in events:
            if e.kind in ("door.opened", "door.forced"):
                assert opened_at is None
                opened_at, per_opening = e.at, []
            per_opening.append(e.kind)
            if isinstance(e, DoorHeldOpen):
                assert opened_at is not None
                assert e.at - opened_at >= ALARM and e.open_for >= ALARM
                assert per_opening.count("door.held_open") == 1
                assert "door.held_open_prealarm" in per_opening  # the warning came first
            if isinstance(e, DoorHeldOpenPrealarm):
                assert per_opening.count("door.held_open_prealarm") == 1
                assert e.open_for >= PRE
            if isinstance(e, DoorClosed):
                assert opened_at is not None
                assert e.open_for == pytest.approx(e.at - opened_at)
                opened_at = None
        assert m.is_open == (opened_at is not None)


@settings(max_examples=100, deadline=None)
@given(st.lists(times, min_size=1, max_size=10))
def test_property_every_unauthorised_opening_is_forced(gaps):
    m = DoorStateMachine(PRE, ALARM)
    now = 0.0
    for gap in gaps:
        now += gap
        assert kinds(m.door_opened(now)) == ["door.forced"]
        now += 1.0
        m.door_closed(now)


# -- the pins --------------------------------------------------------------------------------


@pytest.fixture
def bench() -> Iterator[PinBench]:
    with pin_bench() as b:
        yield b


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def callbacks(self) -> dict:
        return {name: (lambda now, name=name: self.calls.append((name, now)))
                for name in ("on_door_opened", "on_door_closed", "on_exit_request")}

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def test_contact_closed_is_low(bench):
    rec = Recorder()
    contact = bench.pin(CONTACT)
    inputs = bench.add(DoorInputs(CONTACT, True, EXIT, bench.factory, **rec.callbacks()))
    assert contact.pull == "up"
    contact.drive_low()  # the door is closed: the contact pulls the input to ground
    rec.calls.clear()
    assert inputs.door_open is False
    contact.drive_high()
    assert inputs.door_open is True
    contact.drive_low()
    assert inputs.door_open is False
    assert rec.names == ["on_door_opened", "on_door_closed"]
    assert rec.calls[0][1] <= rec.calls[1][1]


def test_a_cut_contact_wire_reads_as_open(bench):
    inputs = bench.add(DoorInputs(CONTACT, True, 0, bench.factory))
    assert inputs.door_open is True  # nothing pulls the input down: the pull-up wins


def test_contact_closed_is_high(bench):
    rec = Recorder()
    contact = bench.pin(CONTACT)
    inputs = bench.add(DoorInputs(CONTACT, False, 0, bench.factory, **rec.callbacks()))
    assert inputs.door_open is False  # pulled up = closed for a normally-open contact
    contact.drive_low()
    assert inputs.door_open is True
    contact.drive_high()
    assert rec.names == ["on_door_opened", "on_door_closed"]


def test_exit_button_calls_the_exit_request(bench):
    rec = Recorder()
    button = bench.pin(EXIT)
    inputs = bench.add(DoorInputs(0, True, EXIT, bench.factory, **rec.callbacks()))
    assert inputs.door_open is None and inputs.has_exit_button
    button.drive_low()
    button.drive_high()
    assert rec.names == ["on_exit_request"]


def test_pin_zero_disables_inputs(bench):
    inputs = bench.add(DoorInputs(0, True, 0, bench.factory))
    assert inputs.door_open is None and not inputs.has_exit_button
    assert reserved_pins(bench.factory) == set()


def test_a_failing_callback_is_logged_and_the_input_keeps_working(bench, caplog):
    seen: list[float] = []

    def broken(now: float) -> None:
        raise RuntimeError("journal full")

    contact = bench.pin(CONTACT)
    bench.add(DoorInputs(CONTACT, True, 0, bench.factory, on_door_opened=broken,
                         on_door_closed=seen.append))
    contact.drive_low()
    seen.clear()
    contact.drive_high()
    contact.drive_low()
    assert len(seen) == 1 and "journal full" in caplog.text


def test_pins_drive_the_state_machine(bench):
    """Door contact and exit button on mock pins, events from the machine."""
    m = DoorStateMachine(PRE, ALARM)
    events: list[DoorEvent] = []
    clock = iter(float(t) for t in range(1000))

    def exit_request(now: float) -> None:
        m.exit_requested(now, WINDOW)

    contact, button = bench.pin(CONTACT), bench.pin(EXIT)
    inputs = bench.add(DoorInputs(
        CONTACT, True, EXIT, bench.factory,
        on_door_opened=lambda now: events.extend(m.door_opened(now)),
        on_door_closed=lambda now: events.extend(m.door_closed(now)),
        on_exit_request=exit_request,
        clock=lambda: next(clock),
    ))
    contact.drive_low()  # the door is closed (no event: the machine starts closed)
    assert inputs.door_open is False and events == []
    m.access_granted(1.0, WINDOW)
    contact.drive_high()  # t=1: authorised by the grant
    contact.drive_low()  # t=2
    contact.drive_high()  # t=3: nobody badged: forced
    contact.drive_low()  # t=4
    button.drive_low()  # t=5: exit request
    button.drive_high()
    contact.drive_high()  # t=6: authorised by the exit request
    contact.drive_low()  # t=7
    assert events == [
        DoorOpened(1.0, "grant"), DoorClosed(2.0, 1.0, ()),
        DoorForced(3.0), DoorClosed(4.0, 1.0, ("door.forced",)),
        DoorOpened(6.0, "exit"), DoorClosed(7.0, 1.0, ()),
    ]
