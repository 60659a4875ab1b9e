"""New entries for the live page, from the collector's commits, fanned out to each worker's
Server-Sent Events streams.

The doors' marks (`doors.stored_seq`, one row per door, moved by the collector right after
each batch commits) say what is new: when a mark moved, the rows between the old and the new
mark are read by primary key. What makes a worker look:

- PostgreSQL: the collector's `NOTIFY accessd_events` after each batch (a thread of the
  worker LISTENs on its own connection), and a look every 2 s in case a notification was
  missed while reconnecting;
- SQLite: a look at the marks every `poll_s` (0.1 s): a read of a table of one row per door.

Each worker does this once for all its streams, and only while a stream is open; each stream
filters the rows for its user's sites and the page's filters. Nothing is shared between
workers: each reads the store itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from accessd.central.health import NOTIFY_CHANNEL

if TYPE_CHECKING:
    from accessd.central.web.app import Office

log = logging.getLogger(__name__)

ACCESS_TYPES = ("access.granted", "access.denied")
CATCH_UP = 200  # at most this many new rows per door and look (the page shows the latest)
LIVE_COLUMNS = ("site", "door", "seq", "ts", "reader", "member_id", "member_name", "plan",
                "result", "reason", "credential", "clock_trusted")


class Feed:
    def __init__(self, office: Office) -> None:
        self.office = office
        self.subscribers: set[asyncio.Queue[list[dict[str, Any]]]] = set()
        self.marks: dict[tuple[str, str], int] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = threading.Event()
        self.looks = 0  # how many times the marks were read (tests, benchmarks)
        self.listening = threading.Event()  # PostgreSQL: the LISTEN connection is up

    def subscribe(self) -> asyncio.Queue[list[dict[str, Any]]]:
        q: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(maxsize=200)
        self.subscribers.add(q)
        if self._wake:
            self._wake.set()
        return q

    def unsubscribe(self, q: asyncio.Queue[list[dict[str, Any]]]) -> None:
        self.subscribers.discard(q)

    def close(self) -> None:
        self._closed.set()

    def wake(self) -> None:
        """From any thread: look now."""
        if self._loop and self._wake:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self.subscribers:  # someone subscribed before the loop ran: look at once
            self._wake.set()
        postgres = self.office.config.store.startswith(("postgresql://", "postgres://"))
        if postgres:
            threading.Thread(target=self._listen, name="feed-listen", daemon=True).start()
        interval = (self.office.config.notified_poll_s if postgres
                    else self.office.config.poll_s)
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            if not self.subscribers:
                self.marks = None  # look again from scratch when someone watches
                continue
            try:
                rows = await run_in_threadpool(self._look)
            except Exception:
                log.exception("live feed: cannot read the store; trying again")
                await asyncio.sleep(1.0)
                continue
            if rows:
                for q in list(self.subscribers):
                    if q.full():  # a stream that does not read: drop its oldest batch
                        q.get_nowait()
                    q.put_nowait(rows)

    def _look(self) -> list[dict[str, Any]]:
        self.looks += 1
        with self.office.pool.store() as store:
            current = {(s, d): int(m) for s, d, m in store.rows(
                "SELECT site, door, stored_seq FROM doors")}
            if self.marks is None:
                self.marks = current
                return []
            out = []
            for (site, door), mark in current.items():
                old = self.marks.get((site, door), 0)
                if mark <= old:
                    continue
                for r in store.rows(
                        f"SELECT {', '.join(LIVE_COLUMNS)} FROM events WHERE site = ? AND "
                        f"door = ? AND seq > ? AND seq <= ? AND type IN (?, ?) ORDER BY seq "
                        f"DESC LIMIT {CATCH_UP}",
                        (site, door, max(old, mark - 10 * CATCH_UP), mark, *ACCESS_TYPES)):
                    row = dict(zip(LIVE_COLUMNS, r, strict=True))
                    row["clock_trusted"] = bool(row["clock_trusted"])
                    out.append(row)
            self.marks = current
        return sorted(out, key=lambda e: (e["ts"], e["site"], e["door"], e["seq"]))

    def _listen(self) -> None:
        """PostgreSQL: wake the loop on each NOTIFY from a collector."""
        import psycopg

        while not self._closed.is_set():
            try:
                with psycopg.connect(self.office.config.store, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.listening.set()
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.wake()
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("live feed: LISTEN connection lost (%s); polling meanwhile", exc)
                self._closed.wait(2.0)

