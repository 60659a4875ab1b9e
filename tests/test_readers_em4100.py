"""EM4100 frame parsing: examples and the property that only correctly framed frames count."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accessd.readers.em4100 import FrameParser, checksum, encode_frame

CARD = "0A1B2C3D4E"
FRAME = encode_frame(CARD)
VALID_FRAME = re.compile(rb"\x02([0-9A-Fa-f]{12})\x03")


def expected_uids(data: bytes) -> list[str]:
    """The oracle: every `02 + 10 hex + 2 hex XOR + 03` substring, in order. A valid frame
    contains no 0x02 after its start, so such substrings can never overlap."""
    out = []
    for m in VALID_FRAME.finditer(data):
        body = m.group(1).decode()
        if checksum(bytes.fromhex(body[:10])) == int(body[10:], 16):
            out.append(body[:10].upper())
    return out


def feed_in_chunks(data: bytes, cuts: list[int]) -> list[str]:
    parser = FrameParser()
    out: list[str] = []
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for a, b in itertools.pairwise(bounds):
        out += parser.feed(data[a:b])
    return out


def test_encode_frame_layout() -> None:
    assert FRAME[0] == 0x02 and FRAME[-1] == 0x03 and len(FRAME) == 14
    assert FRAME[1:11] == CARD.encode()
    assert int(FRAME[11:13], 16) == 0x0A ^ 0x1B ^ 0x2C ^ 0x3D ^ 0x4E


def test_encode_frame_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        encode_frame("0A1B2C3D")


def test_valid_frame() -> None:
    parser = FrameParser()
    assert parser.feed(FRAME) == [CARD]
    assert parser.frames_ok == 1 and parser.rejected_frames == 0


def test_repeated_frames_are_all_reported_hold_off_is_elsewhere() -> None:
    assert FrameParser().feed(FRAME * 3) == [CARD] * 3


def test_lower_case_hex_is_accepted_and_upper_cased() -> None:
    assert FrameParser().feed(FRAME.lower()) == [CARD]


def test_checksum_error_is_counted_not_reported() -> None:
    bad = FRAME[:11] + b"00" + FRAME[13:]
    parser = FrameParser()
    assert parser.feed(bad) == []
    assert parser.checksum_errors == 1
    assert parser.feed(FRAME) == [CARD]


@pytest.mark.parametrize("split", range(1, len(FRAME)))
def test_split_at_every_byte_boundary(split: int) -> None:
    parser = FrameParser()
    assert parser.feed(FRAME[:split]) == []
    assert parser.feed(FRAME[split:]) == [CARD]


def test_one_byte_at_a_time() -> None:
    parser = FrameParser()
    out = [uid for b in FRAME for uid in parser.feed(bytes([b]))]
    assert out == [CARD]


def test_stx_inside_a_frame_restarts_it() -> None:
    parser = FrameParser()
    assert parser.feed(FRAME[:7] + FRAME) == [CARD]
    assert parser.framing_errors == 1


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x02" + b"0A1B2C3D4E" + b"\x03",  # no checksum
        b"\x02" + b"0A1B2C3D4E3" + b"\x03",  # one checksum digit
        FRAME[:13] + b"0" + b"\x03",  # 13 characters
        b"\x02" + b"0A1B2C3D4G" + FRAME[11:],  # non-hex
        b"\x02\x03",
        FRAME[:-1],  # truncated: no ETX ever
        b"\x03" * 20,
        bytes(range(256)),
    ],
)
def test_malformed_input_never_yields_a_card(garbage: bytes) -> None:
    parser = FrameParser()
    assert parser.feed(garbage) == []


def test_noise_between_frames_and_recovery() -> None:
    parser = FrameParser()
    other = encode_frame("FFEEDDCCBB")
    assert parser.feed(b"\xff\x00noise" + FRAME + b"\r\n\x03junk" + other) == [CARD, "FFEEDDCCBB"]
    assert parser.noise_bytes > 0


def test_truncated_frame_then_valid_frame() -> None:
    parser = FrameParser()
    assert parser.feed(FRAME[:9]) == []
    assert parser.feed(FRAME) == [CARD]


def test_memory_is_bounded() -> None:
    parser = FrameParser()
    parser.feed(b"\x02" + b"A" * 100_000)
    assert len(parser._payload) <= 12
    parser.feed(b"\x02" + b"A" * 11)
    assert len(parser._payload) <= 12


# -- properties ------------------------------------------------------------------------------

uids = st.binary(min_size=5, max_size=5).map(lambda b: b.hex().upper())
frame_like = st.one_of(
    uids.map(encode_frame),
    uids.map(lambda u: encode_frame(u).lower()),
    uids.map(lambda u: encode_frame(u)[: len(u) // 2]),  # truncated
    uids.map(lambda u: encode_frame(u)[:11] + b"ZZ" + b"\x03"),
    uids.map(lambda u: encode_frame(u)[:12] + b"\x02"),
    st.binary(max_size=20),
    st.sampled_from([b"\x02", b"\x03", b"0", b"F", b"a"]),
)


@given(st.lists(frame_like, max_size=12), st.lists(st.integers(min_value=0), max_size=8))
def test_yields_exactly_the_valid_frames_in_the_input(
    pieces: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(pieces)
    assert feed_in_chunks(data, cuts) == expected_uids(data)


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=8))
def test_random_bytes_yield_only_embedded_valid_frames(data: bytes, cuts: list[int]) -> None:
    assert feed_in_chunks(data, cuts) == expected_uids(data)


@given(st.lists(uids, min_size=1, max_size=5), st.binary(max_size=30).filter(
    lambda b: b"\x02" not in b))
def test_frames_separated_by_noise_without_stx_all_come_through(
    cards: list[str], noise: bytes
) -> None:
    data = noise.join(encode_frame(c) for c in cards)
    assert FrameParser().feed(data) == cards


@given(uids)
def test_encode_parse_round_trip(uid: str) -> None:
    assert FrameParser().feed(encode_frame(uid)) == [uid]
