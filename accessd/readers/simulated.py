"""A reader without hardware: card numbers typed on stdin, written to a FIFO, or fed as lines.

For demos, development and the host's rehearsals; it is only ever chosen by configuration
(`type = "simulated"`). Each non-empty line is one tap of a card number in hex ("04A22B1C",
"04:a2:2b:1c"); lines starting with '#' are comments. Invalid lines are skipped with a WARNING
that never repeats the line (it might be a real card number).
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import select
import stat
import sys
from pathlib import Path
from typing import TextIO

from accessd.config import ReaderConfig
from accessd.errors import CardNumberError, ReaderError
from accessd.readers.threaded import Backoff, ThreadedReader
from accessd.readers.uid import normalise_uid

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often a blocked read looks at stop()
MAX_LINE = 256  # longer lines are garbage, not card numbers; bounds memory


class SimulatedReader(ThreadedReader):
    """Reads taps from `stream`, or from `config.source` ("stdin" or a FIFO path)."""

    def __init__(self, config: ReaderConfig, stream: TextIO | None = None, *,
                 reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0) -> None:
        super().__init__(config.name, direction=config.direction, hold_off_s=config.hold_off_s)
        self.source = config.source or "stdin"
        self._stream = stream
        self._backoff = Backoff(reconnect_min_s, reconnect_max_s)
        self.lines_rejected = 0

    def tap(self, uid: str) -> None:
        """Present a card programmatically (hold-off applies). Raises `CardNumberError`."""
        if self._on_card is None:
            raise ReaderError(f"reader {self.name!r} is not started")
        self._card(normalise_uid(uid), "simulated")

    # -- input handling ----------------------------------------------------------------------

    def _line(self, line: str, where: str) -> None:
        text = line.strip()
        if not text or text.startswith("#"):
            return
        try:
            uid = normalise_uid(text)
        except CardNumberError as exc:
            self.lines_rejected += 1
            log.warning("reader %s: skipped a line from %s: %s", self.name, where, exc)
            return
        self._card(uid, "simulated")

    def _run(self) -> None:
        if self._stream is not None:
            fd = _fileno(self._stream)
            if fd is None:
                self._read_text_stream(self._stream)
            else:
                self._went_online("reading the given stream")
                self._read_fd(fd, "the given stream")
                self._went_offline("input stream ended")
        elif self.source == "stdin":
            self._went_online("reading card numbers from stdin")
            self._read_fd(sys.stdin.fileno(), "stdin")
            self._went_offline("stdin ended")
        else:
            self._read_fifo(Path(self.source))

    def _read_text_stream(self, stream: TextIO) -> None:
        """Streams without a file descriptor (StringIO, test doubles): line by line."""
        self._went_online("reading the given stream")
        while not self._stopping:
            line = stream.readline(MAX_LINE + 1)
            if not line:
                break
            self._line(line, "the given stream")
        self._went_offline("input stream ended")

    def _read_fd(self, fd: int, where: str) -> bool:
        """Read lines from `fd` until EOF (True) or stop (False); select() keeps stop prompt."""
        pending = bytearray()
        while not self._stopping:
            ready, _, _ = select.select([fd], [], [], POLL_S)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                if pending.strip():
                    self._line(pending.decode("utf-8", "replace"), where)
                return True
            pending += chunk
            *lines, rest = pending.split(b"\n")
            for raw in lines:
                self._line(raw.decode("utf-8", "replace"), where)
            if len(rest) > MAX_LINE:
                self._line("?" * (MAX_LINE + 1), where)  # reported as invalid, then dropped
                rest = b""
            pending = bytearray(rest)
        return False

    def _read_fifo(self, path: Path) -> None:
        """Serve a FIFO: create it if missing, reopen it each time its writers all close.

        The new descriptor is opened before the old one is closed: the pipe (and whatever a
        fast next writer already put in it) lives as long as one end is open.
        """
        fd: int | None = None
        try:
            while not self._stopping:
                try:
                    new_fd = _open_fifo(path)
                except OSError as exc:
                    self._went_offline(f"cannot open FIFO {path}: {exc.strerror or exc}")
                    if self._sleep(self._backoff.next_delay()):
                        return
                    continue
                finally:
                    if fd is not None:
                        os.close(fd)
                        fd = None
                fd = new_fd
                self._backoff.reset()
                self._went_online(f"reading card numbers from FIFO {path}")
                try:
                    if not self._read_fd(fd, str(path)):
                        return  # stopped
                except OSError as exc:
                    self._went_offline(f"lost FIFO {path}: {exc.strerror or exc}")
                    if self._sleep(self._backoff.next_delay()):
                        return
        finally:
            if fd is not None:
                os.close(fd)


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        return None


def _open_fifo(path: Path) -> int:
    """Open for reading without blocking on a writer. With no writer connected since the open,
    Linux does not report the FIFO readable, so select() waits instead of spinning on EOF."""
    with contextlib.suppress(FileExistsError):
        os.mkfifo(path, 0o600)
    if not stat.S_ISFIFO(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, f"{path} exists and is not a FIFO")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with contextlib.suppress(OSError):
        os.set_blocking(fd, True)  # select() gates reads; blocking reads return whole chunks
    return fd
