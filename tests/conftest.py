"""Shared fixtures: real SQLite files in tmp_path, a gpiozero MockFactory, configs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=200, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests of the fault suite import it; it is not in the package
    sys.path.insert(0, str(ROOT))


def write_config(tmp_path: Path, extra: str = "", *, readers: str | None = None) -> Path:
    """A daemon config for tests: mock pins, trusted clock, storage in tmp_path."""
    if readers is None:
        readers = (f'[[readers]]\nname = "door"\ntype = "simulated"\n'
                   f'source = "{tmp_path}/taps"\nhold_off_s = 0.5\n')
    text = f"""
[site]
id = "test-site"
door = "front"
timezone = "Europe/Paris"

{readers}

[pins]
factory = "mock"

[clock]
trust = "always"

[storage]
dir = "{tmp_path}/state"
{extra}
"""
    path = tmp_path / "accessd.toml"
    path.write_text(text)
    return path


@pytest.fixture
def mock_factory() -> Iterator[object]:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    previous = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = previous
