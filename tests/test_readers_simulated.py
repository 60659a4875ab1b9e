"""SimulatedReader: lines from a stream, a pipe and a FIFO; bad lines skipped, never logged."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from readers_helpers import Recorder

from accessd.config import ReaderConfig
from accessd.errors import CardNumberError, ReaderError
from accessd.readers.simulated import SimulatedReader


def config(source: str = "stdin", hold_off_s: float = 2.0) -> ReaderConfig:
    return ReaderConfig(name="sim", type="simulated", source=source, hold_off_s=hold_off_s)


def test_lines_from_a_text_stream(caplog: pytest.LogCaptureFixture) -> None:
    text = "04A22B1C\n\n  04:a2:2b:1c:5d:6e:80 \n# a comment\nnot-a-card\n0A1B2C3D4E"
    reader, rec = SimulatedReader(config(), io.StringIO(text)), Recorder()
    reader.start(rec.on_card, rec.on_status)
    first, second, third = rec.next_card(), rec.next_card(), rec.next_card()
    rec.wait_online(True)
    rec.wait_online(False)  # the stream ended
    reader.stop()
    assert [first.uid, second.uid, third.uid] == ["04A22B1C", "04A22B1C5D6E80", "0A1B2C3D4E"]
    assert {c.technology for c in rec.cards} == {"simulated"}
    assert reader.lines_rejected == 1
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "skipped" in r.message]
    assert len(warnings) == 1
    assert "not-a-card" not in caplog.text


def test_hold_off_applies_to_repeated_lines() -> None:
    reader, rec = SimulatedReader(config(), io.StringIO("04A22B1C\n04a22b1c\n5A3C9E21\n")), \
        Recorder()
    reader.start(rec.on_card, rec.on_status)
    assert rec.next_card().uid == "04A22B1C"
    assert rec.next_card().uid == "5A3C9E21"
    reader.stop()
    assert rec.uids() == ["04A22B1C", "5A3C9E21"]


@pytest.mark.parametrize("line", ["04A22B", "04A22B1", "zz", "04A22B1C5D6E801122", "\x00\x01"])
def test_invalid_lines_are_skipped(line: str, caplog: pytest.LogCaptureFixture) -> None:
    reader = SimulatedReader(config(), io.StringIO(f"{line}\n5A3C9E21\n"))
    rec = Recorder()
    reader.start(rec.on_card, rec.on_status)
    assert rec.next_card().uid == "5A3C9E21"
    reader.stop()
    assert rec.uids() == ["5A3C9E21"]
    assert reader.lines_rejected == 1
    assert line.strip() not in caplog.text.replace("5A3C9E21", "")


def test_lines_from_a_pipe_and_prompt_stop() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "r") as stream:
        reader, rec = SimulatedReader(config(), stream), Recorder()
        reader.start(rec.on_card, rec.on_status)
        rec.wait_online(True)
        os.write(write_fd, b"04A22B")
        os.write(write_fd, b"1C\n")  # a line split across writes
        assert rec.next_card().uid == "04A22B1C"
        started = time.monotonic()  # the writer is still open: the reader is blocked on it
        reader.stop()
        assert time.monotonic() - started < 0.2
    os.close(write_fd)


@pytest.fixture
def fifo_reader(tmp_path: Path) -> Iterator[tuple[SimulatedReader, Recorder, Path]]:
    path = tmp_path / "cards.fifo"
    reader, rec = SimulatedReader(config(str(path), hold_off_s=0.01)), Recorder()
    reader.start(rec.on_card, rec.on_status)
    rec.wait_online(True)
    yield reader, rec, path
    reader.stop()


def test_fifo_is_created_and_survives_writers_coming_and_going(
    fifo_reader: tuple[SimulatedReader, Recorder, Path]
) -> None:
    _, rec, path = fifo_reader
    assert path.is_fifo()
    path.write_text("04A22B1C\n")  # like: echo 04A22B1C > cards.fifo
    assert rec.next_card().uid == "04A22B1C"
    path.write_text("bad line\n5A3C9E21")  # a second writer, last line without newline
    assert rec.next_card().uid == "5A3C9E21"
    path.write_text("0A1B2C3D4E\n")
    assert rec.next_card().uid == "0A1B2C3D4E"
    assert [s.online for s in rec.statuses] == [True]


def test_fifo_stop_is_prompt_with_no_writer(
    fifo_reader: tuple[SimulatedReader, Recorder, Path]
) -> None:
    reader, _, _ = fifo_reader
    started = time.monotonic()
    reader.stop()
    assert time.monotonic() - started < 0.2
    assert not any(t.name == "reader-sim" for t in threading.enumerate())


def test_fifo_path_that_is_a_regular_file_is_offline(tmp_path: Path) -> None:
    path = tmp_path / "cards.txt"
    path.write_text("")
    reader = SimulatedReader(config(str(path)), reconnect_min_s=0.02, reconnect_max_s=0.05)
    rec = Recorder()
    reader.start(rec.on_card, rec.on_status)
    try:
        status = rec.wait_online(False)
        assert "not a FIFO" in status.detail
        path.unlink()  # fixed: the reader creates the FIFO on its next attempt
        rec.wait_online(True)
        assert path.is_fifo()
    finally:
        reader.stop()


def test_tap() -> None:
    reader, rec = SimulatedReader(config(), io.StringIO("")), Recorder()
    with pytest.raises(ReaderError):
        reader.tap("04A22B1C")
    reader.start(rec.on_card, rec.on_status)
    try:
        reader.tap("04 a2 2b 1c")
        assert rec.next_card().uid == "04A22B1C"
        with pytest.raises(CardNumberError):
            reader.tap("nope")
    finally:
        reader.stop()
