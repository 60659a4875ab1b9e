"""SerialReader against a real pseudo-terminal: real pyserial, real thread, no hardware.

"Nothing else was read" is proven without sleeping: a sentinel card is written after the bytes
under test, and the serial line preserves order, so once the sentinel arrives everything before
it has been parsed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from readers_helpers import Pty, Recorder, point_symlink

from accessd.config import ReaderConfig
from accessd.readers.em4100 import encode_frame
from accessd.readers.serial_reader import SerialReader

CARD = "0A1B2C3D4E"
OTHER = "1122334455"
SENTINEL = "FFFFFFFF00"


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    yield p
    p.unplug()


def make_reader(port: str, hold_off_s: float = 0.5, direction: str = "entry") -> SerialReader:
    cfg = ReaderConfig(name="front", type="serial", port=port, hold_off_s=hold_off_s,
                       direction=direction)
    return SerialReader(cfg, reconnect_min_s=0.02, reconnect_max_s=0.1)


@pytest.fixture
def running(pty: Pty) -> Iterator[tuple[SerialReader, Recorder, Pty]]:
    reader, rec = make_reader(pty.path), Recorder()
    reader.start(rec.on_card, rec.on_status)
    rec.wait_online(True)
    yield reader, rec, pty
    reader.stop()


def test_one_card_gives_one_read(running: tuple[SerialReader, Recorder, Pty]) -> None:
    reader, rec, pty = running
    pty.write(encode_frame(CARD))
    read = rec.next_card()
    assert (read.uid, read.reader, read.technology, read.direction) == (
        CARD, "front", "em4100", "entry")
    assert reader.online


def test_direction_comes_from_config(pty: Pty) -> None:
    reader, rec = make_reader(pty.path, direction="exit"), Recorder()
    reader.start(rec.on_card, rec.on_status)
    try:
        rec.wait_online(True)
        pty.write(encode_frame(CARD))
        assert rec.next_card().direction == "exit"
    finally:
        reader.stop()


def test_held_card_gives_one_read(running: tuple[SerialReader, Recorder, Pty]) -> None:
    _, rec, pty = running
    for _ in range(10):  # an RDM6300 repeats the frame every ~100 ms while the card rests
        pty.write(encode_frame(CARD))
        time.sleep(0.1)
    pty.write(encode_frame(SENTINEL))
    assert rec.next_card().uid == CARD
    assert rec.next_card().uid == SENTINEL
    assert rec.uids() == [CARD, SENTINEL]


def test_two_cards_give_two_reads(running: tuple[SerialReader, Recorder, Pty]) -> None:
    _, rec, pty = running
    pty.write(encode_frame(CARD) + encode_frame(OTHER))
    assert [rec.next_card().uid, rec.next_card().uid] == [CARD, OTHER]


def test_same_card_again_after_hold_off(pty: Pty) -> None:
    reader, rec = make_reader(pty.path, hold_off_s=0.1), Recorder()
    reader.start(rec.on_card, rec.on_status)
    try:
        rec.wait_online(True)
        pty.write(encode_frame(CARD))
        first = rec.next_card()
        time.sleep(0.25)  # the card was taken away and presented again
        pty.write(encode_frame(CARD))
        second = rec.next_card()
        assert second.monotonic - first.monotonic > 0.1
    finally:
        reader.stop()


def test_noise_and_bad_frames_give_nothing(running: tuple[SerialReader, Recorder, Pty]) -> None:
    reader, rec, pty = running
    frame = encode_frame(CARD)
    pty.write(b"\x00\xff garbage \x03\x02\x02ZZ" + frame[:11] + b"00\x03" + frame[:8])
    pty.write(encode_frame(SENTINEL))
    assert rec.next_card().uid == SENTINEL
    assert rec.uids() == [SENTINEL]
    assert reader.parser.checksum_errors == 1
    assert reader.parser.framing_errors >= 2


def test_frame_split_across_writes(running: tuple[SerialReader, Recorder, Pty]) -> None:
    _, rec, pty = running
    frame = encode_frame(CARD)
    for b in frame:
        pty.write(bytes([b]))
    assert rec.next_card().uid == CARD


def test_missing_port_is_offline_once_then_online_when_it_appears(tmp_path: Path,
                                                                  pty: Pty) -> None:
    link = tmp_path / "ttyRDM6300"
    reader, rec = make_reader(str(link)), Recorder()
    reader.start(rec.on_card, rec.on_status)
    try:
        offline = rec.wait_online(False)
        assert str(link) in offline.detail
        assert not reader.online
        time.sleep(0.3)  # several failed retries happen here; none may be reported
        point_symlink(link, pty.path)
        rec.wait_online(True)
        pty.write(encode_frame(CARD))
        assert rec.next_card().uid == CARD
        assert [s.online for s in rec.statuses] == [False, True]
    finally:
        reader.stop()


def test_unplug_and_replug_at_the_same_path(tmp_path: Path) -> None:
    link = tmp_path / "ttyRDM6300"
    first = Pty()
    point_symlink(link, first.path)
    reader, rec = make_reader(str(link)), Recorder()
    reader.start(rec.on_card, rec.on_status)
    try:
        rec.wait_online(True)
        first.write(encode_frame(CARD))
        assert rec.next_card().uid == CARD

        first.unplug()
        rec.wait_online(False)
        time.sleep(0.3)  # retries against a vanished device stay silent

        second = Pty()
        try:
            point_symlink(link, second.path)
            rec.wait_online(True)
            second.write(encode_frame(OTHER))
            assert rec.next_card().uid == OTHER
            assert [s.online for s in rec.statuses] == [True, False, True]
        finally:
            second.unplug()
    finally:
        reader.stop()


def open_fds_on(path: str) -> int:
    """How many of this process's file descriptors are open on `path`."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == path:
                count += 1
        except OSError:
            pass
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_stop_is_prompt_and_closes_the_port(pty: Pty) -> None:
    before = open_fds_on(pty.path)
    reader, rec = make_reader(pty.path), Recorder()
    reader.start(rec.on_card, rec.on_status)
    rec.wait_online(True)
    assert open_fds_on(pty.path) == before + 1
    started = time.monotonic()
    reader.stop()
    assert time.monotonic() - started < 0.2
    assert not any(t.name == "reader-front" for t in threading.enumerate())
    assert open_fds_on(pty.path) == before


def test_stop_is_prompt_while_backing_off(tmp_path: Path) -> None:
    cfg = ReaderConfig(name="front", type="serial", port=str(tmp_path / "absent"))
    reader, rec = SerialReader(cfg, reconnect_min_s=30, reconnect_max_s=30), Recorder()
    reader.start(rec.on_card, rec.on_status)
    rec.wait_online(False)
    started = time.monotonic()
    reader.stop()
    assert time.monotonic() - started < 0.2


def test_a_failing_callback_does_not_kill_the_reader(pty: Pty) -> None:
    reader, rec = make_reader(pty.path), Recorder()
    calls = []

    def explode(read: object) -> None:
        calls.append(read)
        if len(calls) == 1:
            raise RuntimeError("consumer bug")
        rec.on_card(read)  # type: ignore[arg-type]

    reader.start(explode, rec.on_status)
    try:
        rec.wait_online(True)
        pty.write(encode_frame(CARD) + encode_frame(OTHER))
        assert rec.next_card().uid == OTHER
    finally:
        reader.stop()


def test_card_numbers_never_reach_the_log(running: tuple[SerialReader, Recorder, Pty],
                                          caplog: pytest.LogCaptureFixture) -> None:
    _, rec, pty = running
    caplog.set_level("DEBUG")
    pty.write(encode_frame(CARD))
    read = rec.next_card()
    assert CARD not in repr(read)
    assert CARD not in caplog.text
