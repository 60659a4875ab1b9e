"""Pin factory choice, feedback LEDs/buzzer, DoorHardware built from the configuration."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from door_helpers import PinBench, pin_bench, reserved_pins, wait_for
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from accessd.config import DoorConfig, LockConfig, PinsConfig
from accessd.door.feedback import Feedback
from accessd.door.hardware import DoorHardware
from accessd.door.lockdown import build_parser
from accessd.door.pins import make_pin_factory
from accessd.errors import HardwareError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "hardware.md"
BUZZER, GREEN, RED = 5, 6, 13


@pytest.fixture
def bench() -> Iterator[PinBench]:
    with pin_bench() as b:
        yield b


@pytest.fixture
def no_global_factory(monkeypatch):
    """gpiozero's shared factory untouched by the test, whatever it sets."""
    saved = Device.pin_factory
    Device.pin_factory = None
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    try:
        yield
    finally:
        if Device.pin_factory is not None and Device.pin_factory is not saved:
            Device.pin_factory.close()
        Device.pin_factory = saved


# -- pin factories -------------------------------------------------------------------------


def test_mock_only_when_named():
    factory = make_pin_factory("mock")
    try:
        assert isinstance(factory, MockFactory)
    finally:
        factory.close()


def test_unknown_factory_is_a_hardware_error():
    with pytest.raises(HardwareError, match="unknown pin factory 'gpio'; use one of default"):
        make_pin_factory("gpio")


@pytest.mark.skipif(importlib.util.find_spec("lgpio") is not None, reason="lgpio installed")
def test_missing_backend_names_the_package():
    with pytest.raises(HardwareError, match="pin factory 'lgpio' needs lgpio"):
        make_pin_factory("lgpio")


@pytest.mark.skipif(Path("/proc/device-tree/model").exists(), reason="running on a Pi")
def test_default_never_falls_back_to_the_mock(no_global_factory):
    with pytest.raises(HardwareError, match="no GPIO pin factory could start"):
        make_pin_factory("default")
    assert Device.pin_factory is None


def test_default_follows_gpiozero_environment(no_global_factory, monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    factory = make_pin_factory("default")
    assert isinstance(factory, MockFactory)
    assert Device.pin_factory is factory  # gpiozero's own shared choice
    assert make_pin_factory("default") is factory


# -- feedback ----------------------------------------------------------------------------------


@pytest.fixture
def feedback(bench) -> Feedback:
    return bench.add(Feedback(BUZZER, GREEN, RED, bench.factory))


def test_granted_lights_green_for_a_second_and_beeps_once(bench, feedback):
    green, buzzer, red = bench.pin(GREEN), bench.pin(BUZZER), bench.pin(RED)
    for pin in (green, buzzer, red):
        pin.clear_states()
    started = time.monotonic()
    feedback.granted()
    assert time.monotonic() - started < 0.05  # non-blocking
    assert wait_for(lambda: len(green.states) == 3, timeout=2.0)
    green.assert_states_and_times([(0.0, False), (0.0, True), (1.0, False)])
    buzzer.assert_states_and_times([(0.0, False), (0.0, True), (0.1, False)])
    assert len(buzzer.states) == 3 and len(red.states) == 1


def test_denied_lights_red_and_beeps_twice(bench, feedback):
    red, buzzer = bench.pin(RED), bench.pin(BUZZER)
    red.clear_states()
    buzzer.clear_states()
    feedback.denied()
    assert wait_for(lambda: len(red.states) == 3, timeout=2.0)
    red.assert_states_and_times([(0.0, False), (0.0, True), (1.0, False)])
    buzzer.assert_states_and_times(
        [(0.0, False), (0.0, True), (0.1, False), (0.1, True), (0.1, False)]
    )
    assert len(buzzer.states) == 5


def test_alarm_blinks_until_stopped_and_a_badge_cannot_silence_it(bench, feedback):
    buzzer, red = bench.pin(BUZZER), bench.pin(RED)
    buzzer.clear_states()
    feedback.alarm(True)
    assert feedback.alarm_on
    time.sleep(1.2)
    feedback.denied()
    feedback.granted()
    time.sleep(0.4)
    assert [s.state for s in buzzer.states[:5]] == [False, True, False, True, False]
    for state in buzzer.states[2:5]:
        assert state.timestamp == pytest.approx(0.5, abs=0.05)  # the alarm's rhythm, kept
    feedback.alarm(False)
    assert buzzer.state is False and red.state is False
    settled = len(buzzer.states)
    time.sleep(0.6)
    assert len(buzzer.states) == settled


def test_absent_feedback_devices_are_no_ops(bench):
    feedback = bench.add(Feedback(0, 0, 0, bench.factory))
    feedback.granted()
    feedback.denied()
    feedback.alarm(True)
    feedback.alarm(False)
    assert reserved_pins(bench.factory) == set()


# -- DoorHardware --------------------------------------------------------------------------------

PINS = PinsConfig(factory="mock", buzzer=BUZZER, led_granted=GREEN, led_denied=RED)
LOCK = LockConfig(type="fail-secure", release_s=3.0)
DOOR = DoorConfig(held_open_prealarm_s=20.0, held_open_alarm_s=30.0)


@pytest.fixture
def built() -> Iterator[list[DoorHardware]]:
    made: list[DoorHardware] = []
    try:
        yield made
    finally:
        for hw in made:
            hw.close()
            hw.factory.reset()


def test_from_config_builds_everything_locked(built):
    hw = DoorHardware.from_config(PINS, LOCK, DOOR)
    built.append(hw)
    relay_pin = hw.factory.pin(17)
    assert isinstance(hw.factory, MockFactory)
    assert relay_pin.function == "output" and relay_pin.state is False
    assert hw.factory.pin(27).pull == "up" and hw.factory.pin(22).pull == "up"
    hw.factory.pin(27).drive_low()
    assert hw.inputs.door_open is False
    assert not hw.new_state_machine(0.0).is_open
    hw.factory.pin(27).drive_high()
    assert hw.new_state_machine(0.0).opened_at == 0.0


@pytest.mark.parametrize(("lock_type", "active_high", "locked"), [
    ("fail-secure", True, False), ("fail-safe", True, True), ("fail-safe", False, False),
])
def test_exception_inside_with_block_leaves_it_locked(built, lock_type, active_high, locked):
    pins = dataclasses.replace(PINS, relay_active_high=active_high)
    with pytest.raises(RuntimeError, match="reader thread died"), \
            DoorHardware.from_config(pins, LockConfig(lock_type, 3.0), DOOR) as hw:
        built.append(hw)
        relay_pin = hw.factory.pin(17)
        hw.relay.release(30)
        assert relay_pin.state is not locked
        raise RuntimeError("reader thread died")
    assert relay_pin.state is locked
    assert hw.closed and hw.relay.closed
    assert reserved_pins(hw.factory) == set()
    hw.close()  # idempotent


def test_a_failure_while_building_leaves_the_relay_locked_and_released(monkeypatch):
    made: list[MockFactory] = []
    real = make_pin_factory

    def recording(name: str):
        factory = real(name)
        made.append(factory)
        return factory

    monkeypatch.setattr("accessd.door.hardware.make_pin_factory", recording)
    clash = dataclasses.replace(PINS, exit_button=17)  # the relay's pin, on purpose
    try:
        with pytest.raises(HardwareError, match="exit button on BCM17"):
            DoorHardware.from_config(clash, LOCK, DOOR)
        (factory,) = made
        relay_pin = factory.pin(17)
        assert relay_pin.state is False
        assert reserved_pins(factory) == set()
    finally:
        for factory in made:
            factory.reset()


def test_close_locks_even_if_another_device_fails_to_close(built):
    hw = DoorHardware.from_config(PINS, LOCK, DOOR)
    built.append(hw)
    relay_pin = hw.factory.pin(17)
    hw.relay.release(30)

    def broken_close() -> None:
        raise OSError("gpiochip gone")

    hw.inputs.close = broken_close  # type: ignore[method-assign]
    with pytest.raises(OSError, match="gpiochip gone"):
        hw.close()
    assert relay_pin.state is False and hw.relay.closed
    assert hw.feedback._buzzer.closed  # the rest was still let go


# -- docs in step with the code ------------------------------------------------------------------


def test_every_door_config_key_is_documented():
    text = DOCS.read_text(encoding="utf-8")
    for section, cls in (("lock", LockConfig), ("pins", PinsConfig), ("door", DoorConfig)):
        assert f"[{section}]" in text
        for field in dataclasses.fields(cls):
            assert re.search(rf"`{field.name}`", text), f"[{section}] {field.name} undocumented"


def test_lockdown_options_and_event_types_are_documented():
    from accessd.door.monitor import EVENT_TYPES

    text = DOCS.read_text(encoding="utf-8")
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert option in text, f"lockdown {option} undocumented"
        if action.help and action.dest != "help":
            assert action.help.strip()
    for cls in EVENT_TYPES:
        assert f"`{cls.kind}`" in text
