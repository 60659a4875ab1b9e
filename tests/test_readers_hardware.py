"""Opt-in checks against real readers: `ACCESSD_HARDWARE=1` and a port, then present a card.

    ACCESSD_HARDWARE=1 ACCESSD_SERIAL_PORT=/dev/serial0 pytest -m hardware -s
    ACCESSD_HARDWARE=1 ACCESSD_NFC_PATH=usb:072f:2200 pytest -m hardware -s
"""

from __future__ import annotations

import os

import pytest
from readers_helpers import Recorder

from accessd.config import ReaderConfig
from accessd.readers.nfc_reader import NfcReader
from accessd.readers.serial_reader import SerialReader

pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(os.environ.get("ACCESSD_HARDWARE") != "1",
                       reason="set ACCESSD_HARDWARE=1 to run real-reader tests"),
]
PRESENT_S = 30.0


def _present_card(reader: SerialReader | NfcReader, technologies: set[str]) -> None:
    rec = Recorder()
    reader.start(rec.on_card, rec.on_status)
    try:
        rec.wait_online(True, timeout=10)
        print(f"\npresent a card to {reader.name} within {PRESENT_S:.0f} s and keep it there")
        read = rec.next_card(timeout=PRESENT_S)
        assert read.technology in technologies
        assert len(read.uid) in (8, 10, 14, 16, 20)
    finally:
        reader.stop()


def test_serial_reader_reads_a_card() -> None:
    port = os.environ.get("ACCESSD_SERIAL_PORT")
    if not port:
        pytest.skip("set ACCESSD_SERIAL_PORT (e.g. /dev/serial0)")
    _present_card(SerialReader(ReaderConfig(name="hw-serial", type="serial", port=port)),
                  {"em4100"})


def test_nfc_reader_reads_a_card() -> None:
    path = os.environ.get("ACCESSD_NFC_PATH")
    if not path:
        pytest.skip("set ACCESSD_NFC_PATH (e.g. usb, usb:072f:2200, tty:AMA0:pn532)")
    _present_card(NfcReader(ReaderConfig(name="hw-nfc", type="nfc", port=path)),
                  {"iso14443a", "felica"})
