"""Shared test doubles for the reader tests: a recorder of callbacks and a pseudo-terminal."""

from __future__ import annotations

import contextlib
import os
import queue
import tty
from pathlib import Path

from accessd.readers.base import CardRead, ReaderStatus

WAIT_S = 5.0  # generous upper bound; tests finish as soon as the event arrives


class Recorder:
    """Collects what a reader reports; waits on queues instead of sleeping."""

    def __init__(self) -> None:
        self.cards: list[CardRead] = []
        self.statuses: list[ReaderStatus] = []
        self._cards: queue.Queue[CardRead] = queue.Queue()
        self._statuses: queue.Queue[ReaderStatus] = queue.Queue()

    def on_card(self, read: CardRead) -> None:
        self.cards.append(read)
        self._cards.put(read)

    def on_status(self, status: ReaderStatus) -> None:
        self.statuses.append(status)
        self._statuses.put(status)

    def next_card(self, timeout: float = WAIT_S) -> CardRead:
        try:
            return self._cards.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no card read within {timeout} s") from None

    def next_status(self, timeout: float = WAIT_S) -> ReaderStatus:
        try:
            return self._statuses.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no status within {timeout} s") from None

    def wait_online(self, online: bool, timeout: float = WAIT_S) -> ReaderStatus:
        status = self.next_status(timeout)
        assert status.online is online, f"expected online={online}, got {status}"
        return status

    def uids(self) -> list[str]:
        return [c.uid for c in self.cards]


class Pty:
    """A pseudo-terminal standing in for a USB-serial adapter: write to `master`, the reader
    opens `path` (the slave's device name)."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no ^C handling of 0x03, even before pyserial opens
        self.path = os.ttyname(self._slave)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def unplug(self) -> None:
        """Close both ends: the reader's next read fails as on a pulled USB adapter."""
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def point_symlink(link: Path, target: str) -> None:
    """Atomically re-point `link` (like udev's /dev/serial/by-id links do on replug)."""
    tmp = link.with_name(link.name + ".new")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.replace(link)
