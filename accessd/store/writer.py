"""The journal's writer: the door's events committed in groups, in order, off the door's lock.

An SD card's fsync stalls for tens to hundreds of milliseconds under write load. If a tap
committed its own entry under the controller's lock, a member queued behind that tap would
wait for the card. So a tap only hands its events over (`submit`: memory, no I/O) and one
thread commits whatever has accumulated since its last commit in one transaction, one fsync:
a group commit. While a commit is on its way to the card the door goes on deciding, and the
events of those decisions form the next group.

What the writer keeps:
- **order**: groups are committed in the order they were submitted, and the events of one
  `submit` are never split between two transactions (an access and the alarm it raised, a
  spool file and its events);
- **the gapless sequence**: numbers are still taken inside each transaction
  (`Journal.append_many`), so the CLI, which appends from another process, interleaves
  without a gap or a duplicate;
- **durable before seen**: `on_durable` (the controller's listeners: uplink, counters,
  status) is called with the entries only after their commit returned, from this thread, in
  sequence order; nothing is acknowledged or published before;
- **a journal that cannot be written** (disk full, read-only, any error): the events stay
  queued in order (at most `limit`, the oldest dropped beyond, with an ERROR), `healthy` turns
  False (the controller's alarm), a write is tried again every `retry_s`, and the first group
  that succeeds starts with an `alarm.journal_unavailable` entry recording the outage;
- **stop**: `close` writes everything queued (one last try if the journal is down), then the
  thread ends; `take_held` hands over what could not be written, for the spool file.

What a power cut can lose is therefore the events submitted and not yet committed: each one
a release (or a denial, a door event) in the instant before its record, the instant being
the wait for the commit in flight plus its own group's commit (docs/journal.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime

from accessd.errors import StoreError
from accessd.events import Event, EventType, JournalEntry, format_ts, utcnow
from accessd.store.journal import Journal

log = logging.getLogger(__name__)

PENDING_LIMIT = 100_000  # events kept in memory while the journal cannot be written
GROUP_MAX = 1000  # events per transaction (whole submissions; one larger submission alone)
RETRY_S = 0.2  # a journal that refused a write is tried again this often
CLOSE_S = 8.0  # how long `close` waits for the last commits (the unit's TimeoutStopSec is 15)


class JournalWriter:
    """One thread that commits submitted events to `journal` in groups (see the module)."""

    def __init__(self, journal: Journal, *,
                 on_durable: Callable[[list[JournalEntry]], None],
                 wallclock: Callable[[], datetime] = utcnow,
                 limit: int = PENDING_LIMIT, retry_s: float = RETRY_S,
                 name: str = "journal-writer") -> None:
        self.journal = journal  # replaced by tests to simulate a failing disk
        self._on_durable, self._wallclock = on_durable, wallclock
        self._limit, self._retry_s = limit, retry_s
        self._cond = threading.Condition()
        self._queue: deque[list[Event]] = deque()
        self._queued = 0  # events in _queue
        self._inflight = 0  # events taken by the thread, committed but not yet announced
        self._submitted = 0  # events ever submitted
        self._settled = 0  # of them: committed and announced, or dropped
        self._failures = 0  # write attempts that failed
        self._dropped = 0
        self._drop_logged = False  # once per outage
        self._down_since: datetime | None = None
        self._retry_at = 0.0
        self._now = False  # a caller asked for a write now (flush, close)
        self._stopping = False
        self._last_try = False  # at stop with the journal down: the one last try was made
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- the door's side: memory only ---------------------------------------------------
    def submit(self, events: list[Event]) -> None:
        """Queue `events` for the journal, as one group (never split between commits)."""
        if not events:
            return
        with self._cond:
            self._queue.append(events)
            self._queued += len(events)
            self._submitted += len(events)
            while self._queued + self._inflight > self._limit and len(self._queue) > 1:
                self._drop_oldest()
            self._cond.notify_all()

    def _drop_oldest(self) -> None:
        dropped = self._queue.popleft()
        self._queued -= len(dropped)
        self._settled += len(dropped)
        if not self._drop_logged:
            self._drop_logged = True
            log.error("journal unavailable and %d events waiting: dropping the oldest",
                      self._queued + self._inflight)
        self._dropped += len(dropped)

    # -- what the status says -----------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """False from a failed write until a write succeeds again."""
        return self._down_since is None

    @property
    def held(self) -> int:
        """Events submitted and not yet durable and announced (queued or being committed)."""
        with self._cond:
            return self._queued + self._inflight

    @property
    def dropped(self) -> int:
        """Events dropped because more than `limit` waited for a journal that refused them."""
        return self._dropped

    # -- waiting for it ------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Write now what waits, and wait: True once every event submitted before the call is
        durable and announced; False if the journal refused a write meanwhile (the events
        stay queued) or `timeout` passed."""
        with self._cond:
            target, failures = self._submitted, self._failures
            self._now = True
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: self._settled >= target or self._failures > failures
                or not self._thread.is_alive(), timeout) and self._settled >= target

    def close(self, timeout: float = CLOSE_S) -> bool:
        """Write what is queued (one last try if the journal is down), then end the thread.
        True when nothing is left held; what is left is for `take_held`."""
        with self._cond:
            self._stopping = self._now = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the journal's last commit has not returned after %.0f s", timeout)
        return self.held == 0

    def take_held(self) -> list[Event]:
        """Remove and return the queued events, oldest first (after `close`: for the spool).
        A commit still in flight (a card that did not answer within `close`'s timeout) keeps
        its events: it may yet succeed."""
        with self._cond:
            events = [e for group in self._queue for e in group]
            self._settled += len(events)
            self._queue.clear()
            self._queued = 0
            return events

    # -- the thread -----------------------------------------------------------------------
    def _next_group(self) -> tuple[list[list[Event]], datetime | None] | None:
        """Wait for something to write; None when the thread should end."""
        with self._cond:
            while True:
                if self._stopping and (not self._queue or self._last_try):
                    return None
                if self._queue and (self._down_since is None or self._now
                                    or time.monotonic() >= self._retry_at):
                    break
                wait = None if not self._queue else max(0.0, self._retry_at - time.monotonic())
                self._cond.wait(wait)
            if self._stopping and self._down_since is not None:
                self._last_try = True
            self._now = False
            groups, n = [], 0
            while self._queue and (not groups or n + len(self._queue[0]) <= GROUP_MAX):
                group = self._queue.popleft()
                groups.append(group)
                n += len(group)
            self._queued -= n
            self._inflight = n
            return groups, self._down_since

    def _run(self) -> None:
        while True:
            taken = self._next_group()
            if taken is None:
                return
            groups, down_since = taken
            events = [e for group in groups for e in group]
            try:
                batch = list(events)
                if down_since is not None:
                    batch.insert(0, Event(
                        type=EventType.JOURNAL_UNAVAILABLE, ts=self._wallclock(),
                        reason="write_failed",
                        detail={"down_since": format_ts(down_since),
                                "events_held": len(events) + self._queued}))
                entries = self.journal.append_many(batch)
            except Exception as exc:  # task boundary: whatever it is, the events wait
                self._failed(groups, exc)
                continue
            if down_since is not None:
                log.warning("journal writable again; %d held events recorded", len(events))
            try:
                self._on_durable(entries)
            except Exception:  # the caller's listeners guard themselves; this is the last net
                log.exception("announcing journal entries failed")
            with self._cond:
                self._inflight = 0
                self._settled += len(events)
                self._down_since, self._last_try, self._drop_logged = None, False, False
                self._cond.notify_all()

    def _failed(self, groups: list[list[Event]], exc: Exception) -> None:
        with self._cond:
            self._queue.extendleft(reversed(groups))
            self._queued += self._inflight
            self._inflight = 0
            self._failures += 1
            self._retry_at = time.monotonic() + self._retry_s
            first = self._down_since is None
            if first:
                self._down_since = self._wallclock()
            while self._queued > self._limit and len(self._queue) > 1:
                self._drop_oldest()
            self._cond.notify_all()
        if first:
            if isinstance(exc, StoreError):
                log.warning("journal unavailable, holding events in memory: %s", exc)
            else:
                log.error("journal write failed; holding events in memory: %s: %s",
                          type(exc).__name__, exc, exc_info=exc)
