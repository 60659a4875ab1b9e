"""What the serial, NFC and simulated readers share: a worker thread, prompt stop, hold-off,
online/offline reporting that fires once per change, and capped exponential back-off.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

from accessd.errors import ReaderError
from accessd.readers.base import (
    CardCallback,
    CardProof,
    CardRead,
    HoldOff,
    ReaderStatus,
    StatusCallback,
    Technology,
)


class Backoff:
    """Delays between reconnection attempts: `minimum`, doubling, capped at `maximum`."""

    def __init__(self, minimum: float, maximum: float) -> None:
        if minimum <= 0 or maximum < minimum:
            raise ValueError("back-off needs 0 < minimum <= maximum")
        self.minimum, self.maximum = minimum, maximum
        self._next = minimum

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.minimum


class ThreadedReader:
    """Base of the readers: subclasses implement `_run()`, which loops until `_stopping`.

    `_run` calls `_card(uid, technology)` for every sighting (hold-off is applied here) and
    `_went_online` / `_went_offline` whenever it (re)opens or loses the device; only changes are
    reported and logged, so a reader unplugged for a night gives one WARNING, not thousands.
    """

    join_timeout_s = 1.0

    def __init__(self, name: str, *, direction: str = "entry", hold_off_s: float = 2.0) -> None:
        self.name = name
        self.direction: Literal["entry", "exit"] = "exit" if direction == "exit" else "entry"
        self._hold_off = HoldOff(hold_off_s)
        self._hold_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_card: CardCallback | None = None
        self._on_status: StatusCallback | None = None
        self._online: bool | None = None  # None: not known yet
        self._detail = ""  # what the last status change said
        self._last_read: float | None = None  # monotonic instant of the last card seen
        self._log = logging.getLogger(type(self).__module__)  # records name the backend

    # -- Reader protocol ---------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return bool(self._online)

    def health(self) -> dict[str, object]:
        """For `status` and `accessd doctor`: the last status detail, seconds since a card
        was last seen (None: none since start), and a serial reader's frame counters."""
        out: dict[str, object] = {"detail": self._detail, "last_read_s": None if
                                  self._last_read is None else
                                  round(time.monotonic() - self._last_read, 1)}
        parser = getattr(self, "parser", None)
        if parser is not None:
            out["frames"] = parser.stats()
        return out

    def start(self, on_card: CardCallback, on_status: StatusCallback) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise ReaderError(f"reader {self.name!r} is already running")
        self._on_card, self._on_status = on_card, on_status
        self._online = None
        self._stop_event.clear()
        self._thread = threading.Thread(
            target=self._thread_main, name=f"reader-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ask the worker to finish and wait for it (it checks at least every ~0.1 s)."""
        self._stop_event.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.join_timeout_s)
            if thread.is_alive():
                self._log.warning("reader %s: worker did not stop within %.1f s",
                                  self.name, self.join_timeout_s)

    # -- for subclasses ----------------------------------------------------------------------

    @property
    def _stopping(self) -> bool:
        return self._stop_event.is_set()

    def _sleep(self, seconds: float) -> bool:
        """Wait up to `seconds`; True if the reader is being stopped."""
        return self._stop_event.wait(seconds)

    def _run(self) -> None:
        raise NotImplementedError

    def _card(self, uid: str, technology: Technology, proof: CardProof | None = None,
              hold_key: str | None = None) -> bool:
        """Report one sighting of `uid`; repeats within the hold-off window (of `hold_key`,
        default the UID) are dropped. True when it was reported."""
        with self._hold_lock:
            self._last_read = now = time.monotonic()
            admitted = self._hold_off.admit(hold_key or uid, now)
        if not admitted or self._on_card is None:
            return False
        read = CardRead(reader=self.name, uid=uid, technology=technology,
                        direction=self.direction, proof=proof)
        try:
            self._on_card(read)
        except Exception:  # a consumer bug must not kill the reader thread
            self._log.exception("reader %s: card callback failed", self.name)
        return True

    def _went_online(self, detail: str) -> None:
        if self._online is True:
            return
        again = "back online" if self._online is False else "online"
        self._log.info("reader %s: %s (%s)", self.name, again, detail)
        self._online = True
        self._status(detail)

    def _went_offline(self, detail: str) -> None:
        if self._online is False:
            self._log.debug("reader %s: still offline (%s)", self.name, detail)
            return
        self._log.warning("reader %s: offline: %s; retrying in the background", self.name, detail)
        self._online = False
        self._status(detail)

    def _status(self, detail: str) -> None:
        self._detail = detail
        if self._on_status is None:
            return
        try:
            self._on_status(ReaderStatus(self.name, bool(self._online), detail))
        except Exception:
            self._log.exception("reader %s: status callback failed", self.name)

    def _thread_main(self) -> None:
        backoff = Backoff(1.0, 60.0)
        while not self._stopping:
            try:
                self._run()
                return
            except Exception:  # task boundary: keep the traceback, report, restart later
                self._log.exception("reader %s: worker crashed; restarting", self.name)
                self._went_offline("reader worker crashed (see log)")
                if self._sleep(backoff.next_delay()):
                    return
