"""One place that turns a `[[readers]]` table into a running reader object."""

from __future__ import annotations

from typing import TYPE_CHECKING

from accessd.config import ReaderConfig
from accessd.errors import ConfigError
from accessd.readers.base import Reader

if TYPE_CHECKING:
    from accessd.cards.reader import SecureCards


def build_reader(config: ReaderConfig, *, secure: SecureCards | None = None) -> Reader:
    """The reader for `config.type`; backends are imported only when chosen. NFC readers
    authenticate accessd's cards with `secure` ([cards] enabled)."""
    if config.type == "serial":
        from accessd.readers.serial_reader import SerialReader

        return SerialReader(config)
    if config.type == "nfc":
        from accessd.readers.nfc_reader import NfcReader

        return NfcReader(config, secure=secure)
    if config.type == "simulated":
        from accessd.readers.simulated import SimulatedReader

        return SimulatedReader(config)
    raise ConfigError(
        f"reader {config.name!r}: unknown type {config.type!r}; use serial, nfc or simulated"
    )
