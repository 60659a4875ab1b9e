"""Shared helpers for the door tests: a MockFactory bench that always cleans up."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from gpiozero.pins.mock import MockFactory, MockPin

T = TypeVar("T")


class PinBench:
    """A private MockFactory plus everything a test built on it, closed at the end."""

    def __init__(self) -> None:
        self.factory = MockFactory(pin_class=MockPin)
        self._owned: list[Any] = []

    def pin(self, number: int) -> MockPin:
        return self.factory.pin(number)

    def add(self, thing: T) -> T:
        """Close `thing` (a LockRelay, DoorInputs, Feedback, ...) at teardown."""
        self._owned.append(thing)
        return thing

    def close(self) -> None:
        try:
            for thing in reversed(self._owned):
                with contextlib.suppress(Exception):
                    thing.close()
            with self.factory._res_lock:  # any gpiozero device the test forgot
                leftovers = {dev for refs in self.factory._reservations.values()
                             for ref in refs if (dev := ref()) is not None}
            for dev in leftovers:
                with contextlib.suppress(Exception):
                    dev.close()
        finally:
            try:
                self.factory.close()
            finally:
                self.factory.reset()


@contextlib.contextmanager
def pin_bench() -> Iterator[PinBench]:
    bench = PinBench()
    try:
        yield bench
    finally:
        bench.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `predicate` until true or `timeout` s pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def levels(pin: MockPin) -> list[bool]:
    return [s.state for s in pin.states]


def reserved_pins(factory: MockFactory) -> set[str]:
    """Names of the pins some open gpiozero device still holds on `factory`."""
    with factory._res_lock:
        return {info.name for info, refs in factory._reservations.items()
                if any(ref() is not None for ref in refs)}
