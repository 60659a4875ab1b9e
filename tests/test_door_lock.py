"""LockRelay on gpiozero's MockFactory: real gpiozero devices, levels read off the mock pins."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from door_helpers import PinBench, levels, pin_bench, wait_for

from accessd.door.lock import LockRelay, locked_level
from accessd.errors import HardwareError

ROOT = Path(__file__).resolve().parents[1]
RELAY = 17

# (lock type, relay active_high) -> the level that keeps the door locked
LOCKED_LEVELS = [
    ("fail-secure", True, False),  # strike, active-high relay: low = de-energised = locked
    ("fail-secure", False, True),
    ("fail-safe", True, True),  # magnetic lock: energised (high) = holding
    ("fail-safe", False, False),
]


@pytest.fixture
def bench() -> Iterator[PinBench]:
    with pin_bench() as b:
        yield b


def make_relay(bench: PinBench, lock_type: str = "fail-secure", active_high: bool = True,
               release_s: float = 3.0) -> LockRelay:
    return bench.add(LockRelay(RELAY, lock_type=lock_type, active_high=active_high,
                               release_s=release_s, pin_factory=bench.factory))


@pytest.mark.parametrize(("lock_type", "active_high", "locked"), LOCKED_LEVELS)
def test_starts_locked_from_the_first_write(bench, lock_type, active_high, locked):
    pin = bench.pin(RELAY)
    pin.drive_high() if not locked else pin.drive_low()  # the input floats at the other level
    before = len(pin.states)
    relay = make_relay(bench, lock_type, active_high)
    assert pin.function == "output"
    assert pin.state is locked
    assert relay.locked_level is locked == locked_level(lock_type, active_high)
    assert levels(pin)[before:] == [locked]  # one write, straight to locked: no glitch
    assert not relay.released
    assert relay.released_until is None


@pytest.mark.parametrize(("lock_type", "active_high", "locked"),
                         [LOCKED_LEVELS[0], LOCKED_LEVELS[2]])
def test_release_pulses_the_pin_for_release_s(bench, lock_type, active_high, locked):
    """Real timing: the relock after 3 s comes from the relay's own thread."""
    relay = make_relay(bench, lock_type, active_high, release_s=3.0)
    changes: list[bool] = []
    relay.on_change(changes.append)
    pin = bench.pin(RELAY)
    pin.clear_states()
    started = time.monotonic()
    deadline = relay.release()
    assert time.monotonic() - started < 0.1  # never blocks the caller
    assert relay.released
    assert deadline == pytest.approx(started + 3.0, abs=0.05)
    assert pin.state is not locked
    assert wait_for(lambda: not relay.released, timeout=4.0)
    pin.assert_states_and_times([(0.0, locked), (0.0, not locked), (3.0, locked)])
    assert len(pin.states) == 3
    assert wait_for(lambda: changes == [True, False], timeout=1.0)
    assert relay.released_until is None


def test_release_while_released_extends(bench):
    relay = make_relay(bench, release_s=3.0)
    pin = bench.pin(RELAY)
    pin.clear_states()
    first = relay.release()
    time.sleep(1.0)
    second = relay.release()
    assert second == pytest.approx(first + 1.0, abs=0.05)
    assert relay.released_until == second
    assert wait_for(lambda: not relay.released, timeout=5.0)
    # High without a dip across the second release, low 4 s after the first.
    pin.assert_states_and_times([(0.0, False), (0.0, True), (4.0, False)])
    assert len(pin.states) == 3


def test_a_shorter_release_never_shortens_a_longer_one(bench):
    relay = make_relay(bench, release_s=3.0)
    long_deadline = relay.release(600)
    assert relay.release() == long_deadline
    assert relay.released_until == long_deadline
    relay.lock()


def test_lock_locks_at_once_and_cancels_the_timer(bench):
    relay = make_relay(bench)
    changes: list[bool] = []
    relay.on_change(changes.append)
    pin = bench.pin(RELAY)
    relay.release(60)
    assert pin.state is True
    relay.lock()
    assert pin.state is False
    assert not relay.released
    assert relay.released_until is None
    assert wait_for(lambda: changes == [True, False], timeout=1.0)
    relay.lock()  # locking a locked door changes nothing
    time.sleep(0.05)
    assert changes == [True, False]
    assert pin.state is False


@pytest.mark.parametrize("seconds", [2.999, 0, -5, float("nan"), float("inf")])
def test_release_under_3_s_is_refused(bench, seconds):
    relay = make_relay(bench)
    pin = bench.pin(RELAY)
    with pytest.raises(ValueError, match="at least 3 s"):
        relay.release(seconds)
    assert not relay.released
    assert True not in levels(pin)


def test_release_s_under_3_s_is_refused_at_construction(bench):
    with pytest.raises(ValueError, match="at least 3 s"):
        LockRelay(RELAY, release_s=1.0, pin_factory=bench.factory)
    with pytest.raises(ValueError, match="lock type"):
        LockRelay(RELAY, lock_type="fail-open", pin_factory=bench.factory)


def test_a_pin_in_use_is_a_hardware_error(bench):
    make_relay(bench)
    with pytest.raises(HardwareError, match="BCM17"):
        LockRelay(RELAY, pin_factory=bench.factory)


@pytest.mark.parametrize(("lock_type", "active_high", "locked"), LOCKED_LEVELS)
def test_close_while_released_leaves_the_pin_locked(bench, lock_type, active_high, locked):
    relay = make_relay(bench, lock_type, active_high)
    changes: list[bool] = []
    relay.on_change(changes.append)
    pin = bench.pin(RELAY)
    relay.release(30)
    assert pin.state is not locked
    relay.close()
    assert pin.state is locked
    assert pin.function == "input"  # the GPIO was let go
    assert relay.closed and relay.pin_level is None
    assert changes == [True, False]  # close() waits for the listeners to hear it
    relay.close()  # idempotent
    relay.lock()  # a no-op once closed
    with pytest.raises(HardwareError, match="closed"):
        relay.release()
    assert pin.state is locked


def test_with_block_locks_on_exception(bench):
    pin = bench.pin(RELAY)
    with pytest.raises(RuntimeError), LockRelay(RELAY, pin_factory=bench.factory) as relay:
        relay.release(30)
        assert pin.state is True
        raise RuntimeError("boom")
    assert pin.state is False
    assert relay.closed


def test_a_failing_listener_does_not_stop_the_others(bench, caplog):
    relay = make_relay(bench)
    heard: list[bool] = []

    def broken(released: bool) -> None:
        raise RuntimeError("display unplugged")

    relay.on_change(broken)
    unsubscribe = relay.on_change(heard.append)
    relay.release(30)
    relay.lock()
    assert wait_for(lambda: heard == [True, False], timeout=1.0)
    unsubscribe()
    relay.release(30)
    relay.lock()
    time.sleep(0.05)
    assert heard == [True, False]
    assert "display unplugged" in caplog.text


def test_concurrent_releases_and_locks_end_consistent(bench):
    import threading

    relay = make_relay(bench)
    pin = bench.pin(RELAY)

    def hammer(i: int) -> None:
        for n in range(200):
            relay.release(30) if (i + n) % 2 else relay.lock()

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    relay.lock()
    assert pin.state is False and not relay.released and relay.released_until is None


CRASH_SCRIPT = textwrap.dedent("""
    import atexit

    seen = {}

    def report():
        # Registered before anything else is imported: runs last, after accessd's and
        # gpiozero's own exit handlers, so it sees the pin as the process leaves it.
        pin = seen["pin"]
        print(f"AT-EXIT level={int(pin.state)} function={pin.function}", flush=True)

    atexit.register(report)

    from gpiozero.pins.mock import MockFactory

    from accessd.door.lock import LockRelay

    factory = MockFactory()
    relay = LockRelay(17, lock_type=LOCK_TYPE, active_high=True, release_s=30,
                      pin_factory=factory)
    seen["pin"] = factory.pin(17)
    relay.release()
    print(f"RELEASED level={int(seen['pin'].state)}", flush=True)
    raise RuntimeError("simulated crash while the door is released")
""")


@pytest.mark.parametrize(("lock_type", "locked"), [("fail-secure", 0), ("fail-safe", 1)])
def test_uncaught_exception_leaves_the_pin_locked(tmp_path, lock_type, locked):
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT.replace("LOCK_TYPE", repr(lock_type)))
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 1
    assert "simulated crash" in proc.stderr
    assert f"RELEASED level={1 - locked}" in proc.stdout
    assert f"AT-EXIT level={locked} function=input" in proc.stdout


def run_lockdown(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "accessd.door.lockdown", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def lockdown_pins(mock_factory: Any) -> Iterator[Any]:
    """gpiozero's default factory is a MockFactory: `--factory default` drives its pins."""
    from accessd.door import lockdown

    yield mock_factory
    while lockdown.HELD:  # what the process would keep until it exits
        lockdown.HELD.pop().close()


def driven_locked(pin: Any, level: bool) -> None:
    """The pin is an output at `level`, and was never driven to the other level."""
    assert pin.function == "output", f"BCM{pin.info.name}: {pin.function}, not driven"
    assert pin.state == level
    assert all(s.state == level for s in pin.states[1:]), pin.states


@pytest.mark.parametrize(("lock_type", "active_high", "level"), [
    ("fail-secure", "true", False), ("fail-secure", "false", True),
    ("fail-safe", "true", True), ("fail-safe", "false", False),
])
def test_lockdown_drives_the_locked_level(lockdown_pins: Any, lock_type: str,
                                          active_high: str, level: bool) -> None:
    from accessd.door.lockdown import main

    assert main(["--pin", "17", "--lock-type", lock_type, "--active-high", active_high,
                 "--factory", "default"]) == 0
    # still driven when main() returns: the process ends without closing the device
    driven_locked(lockdown_pins.pin(17), level)


def test_lockdown_as_systemd_runs_it() -> None:
    proc = run_lockdown("--pin", "17", "--lock-type", "fail-safe", "--factory", "mock")
    assert proc.returncode == 0, proc.stderr
    assert "BCM17 driven high (locked, fail-safe" in proc.stdout


def test_lockdown_reports_errors_in_one_line():
    proc = run_lockdown("--factory", "nonsense")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "lockdown: error: unknown pin factory 'nonsense'; use one of default, lgpio, "
        "rpigpio, pigpio, native, mock"
    ]
    assert run_lockdown("--pin", "40", "--factory", "mock").returncode == 2
    assert run_lockdown("--active-high", "maybe", "--factory", "mock").returncode == 2


def test_lockdown_reads_the_site_configuration(lockdown_pins: Any, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from accessd.door.lockdown import main

    cfg = tmp_path / "accessd.toml"
    cfg.write_text('[[readers]]\nname = "d"\ntype = "simulated"\n[lock]\ntype = "fail-safe"\n'
                   '[pins]\nfactory = "default"\nlock_relay = 23\n')
    assert main(["--config", str(cfg), "--pin", "17", "--factory", "nonsense"]) == 0
    driven_locked(lockdown_pins.pin(23), True)  # the file wins: its pin, type and factory
    assert lockdown_pins.pin(17).function == "input"  # the flag's pin is left alone
    # an unreadable file: the flags are the fallback
    assert main(["--config", str(tmp_path / "missing.toml"), "--factory", "default"]) == 0
    assert "using the command-line values" in capsys.readouterr().err
    driven_locked(lockdown_pins.pin(17), False)
