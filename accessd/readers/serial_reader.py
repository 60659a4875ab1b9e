"""RDM6300 (EM4100, 125 kHz) reader on a serial port, through pyserial.

The worker opens the port, reads whatever has arrived (blocking at most `READ_TIMEOUT_S` so that
`stop()` is noticed), feeds `FrameParser` and reports each presentation once. If the port cannot
be opened or disappears (USB adapter unplugged, pty closed, cable cut on a USB-serial bridge) it
reports offline once, retries with capped exponential back-off and reports online when the port
opens again; the `SerialReader` object itself is never recreated.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from accessd.config import ReaderConfig
from accessd.readers.em4100 import FrameParser
from accessd.readers.threaded import Backoff, ThreadedReader

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.05  # bounds how long stop() waits; frames still arrive as fast as select()


class SerialReader(ThreadedReader):
    """A `Reader` for EM4100 frames on `config.port` (a device path or a pyserial URL)."""

    def __init__(self, config: ReaderConfig, *, reconnect_min_s: float = 0.5,
                 reconnect_max_s: float = 30.0) -> None:
        super().__init__(config.name, direction=config.direction, hold_off_s=config.hold_off_s)
        self.port = config.port
        self.baudrate = config.baudrate
        self.parser = FrameParser()
        self._backoff = Backoff(reconnect_min_s, reconnect_max_s)

    def _open(self) -> Any:
        import serial  # lazily, like every hardware backend

        return serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=READ_TIMEOUT_S)

    def _run(self) -> None:
        while not self._stopping:
            try:
                port = self._open()
            except (OSError, ValueError) as exc:  # SerialException is an OSError
                self._went_offline(f"cannot open {self.port}: {exc}")
                if self._sleep(self._backoff.next_delay()):
                    return
                continue
            self._backoff.reset()
            self.parser.reset()
            self._went_online(f"{self.port} open at {self.baudrate} baud")
            try:
                self._read_until_lost(port)
            except OSError as exc:
                self._went_offline(f"lost {self.port}: {exc}")
            finally:
                with contextlib.suppress(OSError):
                    port.close()
            if not self._stopping and self._sleep(self._backoff.next_delay()):
                return

    def _read_until_lost(self, port: Any) -> None:
        """Read until stopped; raise OSError when the device goes away."""
        feed, card = self.parser.feed, self._card
        while not self._stopping:
            # read(1) returns as soon as a byte is there; in_waiting takes the rest of a frame
            # in the same call, so the last byte of a frame reaches the parser without delay.
            data = port.read(port.in_waiting or 1)
            if data:
                for uid in feed(data):
                    card(uid, "em4100")
