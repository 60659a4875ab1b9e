"""Card numbers typed by people; and the reader factory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accessd.config import ReaderConfig
from accessd.errors import CardNumberError, ConfigError
from accessd.readers.factory import build_reader
from accessd.readers.nfc_reader import NfcReader
from accessd.readers.serial_reader import SerialReader
from accessd.readers.simulated import SimulatedReader
from accessd.readers.uid import VALID_UID_BYTES, normalise_uid


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("04a22b1c", "04A22B1C"),
        ("04:A2:2B:1C:5D:6E:80", "04A22B1C5D6E80"),
        (" 0a 1b 2c 3d 4e ", "0A1B2C3D4E"),
        ("01-2E-4C-D5-F2-A3-1B-7C", "012E4CD5F2A31B7C"),
        ("0102030405060708090a", "0102030405060708090A"),
    ],
)
def test_accepted_forms(typed: str, expected: str) -> None:
    assert normalise_uid(typed) == expected


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("", "empty"),
        (" : ", "empty"),
        ("04A22B1G", "hexadecimal"),
        ("04A22B1", "odd"),
        ("04A22B", "3 bytes"),
        ("04A22B1C5D6E", "6 bytes"),
        ("04A22B1C5D6E801122", "9 bytes"),
        ("0x04A22B1C", "hexadecimal"),
    ],
)
def test_rejected_forms_say_why_without_repeating_the_number(typed: str, reason: str) -> None:
    with pytest.raises(CardNumberError, match=reason) as info:
        normalise_uid(typed)
    digits = typed.replace(" ", "").replace(":", "")
    if len(digits) >= 4:
        assert digits not in str(info.value)


@given(st.sampled_from(VALID_UID_BYTES).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
       st.sampled_from(["", ":", " ", "-"]), st.booleans())
def test_round_trip_with_any_separator_and_case(raw: bytes, sep: str, lower: bool) -> None:
    text = sep.join(f"{b:02x}" if lower else f"{b:02X}" for b in raw)
    assert normalise_uid(text) == raw.hex().upper()


@given(st.text(max_size=40))
def test_anything_else_raises_card_number_error_only(text: str) -> None:
    try:
        uid = normalise_uid(text)
    except CardNumberError:
        return
    assert len(uid) // 2 in VALID_UID_BYTES
    assert uid == uid.upper() and int(uid, 16) >= 0


@pytest.mark.parametrize(
    ("rtype", "cls"),
    [("serial", SerialReader), ("nfc", NfcReader), ("simulated", SimulatedReader)],
)
def test_build_reader_chooses_by_type(rtype: str, cls: type) -> None:
    reader = build_reader(ReaderConfig(name="door", type=rtype, port="/dev/ttyAMA0"))
    assert isinstance(reader, cls)
    assert reader.name == "door" and not reader.online


def test_build_reader_rejects_unknown_type() -> None:
    with pytest.raises(ConfigError, match="wiegand"):
        build_reader(ReaderConfig(name="door", type="wiegand"))
