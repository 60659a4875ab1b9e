"""One place that turns a `[[readers]]` table into a running reader object."""

from __future__ import annotations

from accessd.config import ReaderConfig
from accessd.errors import ConfigError
from accessd.readers.base import Reader


def build_reader(config: ReaderConfig) -> Reader:
    """The reader for `config.type`; backends are imported only when chosen."""
    if config.type == "serial":
        from accessd.readers.serial_reader import SerialReader

        return SerialReader(config)
    if config.type == "nfc":
        from accessd.readers.nfc_reader import NfcReader

        return NfcReader(config)
    if config.type == "simulated":
        from accessd.readers.simulated import SimulatedReader

        return SimulatedReader(config)
    raise ConfigError(
        f"reader {config.name!r}: unknown type {config.type!r}; use serial, nfc or simulated"
    )
