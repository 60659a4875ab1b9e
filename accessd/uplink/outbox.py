"""The door's outbox: journal entries sent in order until the central office has stored them.

The broker taking a message proves nothing (it may restart without persistence, the collector
may be down), so an entry leaves the outbox only on the office's own acknowledgement, which is
cumulative by sequence number. At most `window` entries are in flight; when acknowledgements
stop coming, the window is sent again from the first unacknowledged entry, with a growing
pause so that a long outage does not fill the broker's queue with copies. The office drops
the copies by (door, seq).

The office may also ask for any range again (a new or restored office store filling from
the doors' journals): the outbox sends what the journal still holds of it, a window at a
time, and says (`floor`, in the signed event) below which number it holds nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from accessd.events import Event, JournalEntry, format_ts
from accessd.protocol.codec import EVENT_VERSION
from accessd.store.journal import Journal

log = logging.getLogger(__name__)

#: publishes these entries in order, each with its `floor` (None: none), as few messages as
#: the wire form allows (docs/protocol.md, version 3: many in one signed message); returns how
#: many of them, from the first, the broker connection took (0 when offline)
Send = Callable[[list[tuple[JournalEntry, int | None]]], int]


_SCALARS = tuple(f.name for f in fields(Event) if f.name not in ("type", "ts", "detail"))


def event_message(entry: JournalEntry, journal: str,
                  floor: int | None = None) -> dict[str, Any]:
    """The payload of one entry (schemas/event.json), before the door signs it: what
    `entry.to_dict()` gives (tests/test_uplink_outbox.py holds them equal), built field by
    field (`to_dict` goes through `dataclasses.asdict`, which deep-copies: ~27 µs an event,
    most of a door's work when it catches up)."""
    e = entry.event
    msg = {"v": EVENT_VERSION, "seq": entry.seq, "id": entry.id, "site": entry.site,
           "door": entry.door, "type": str(e.type), "ts": format_ts(e.ts),
           "detail": e.detail, "journal": journal}
    for name in _SCALARS:
        msg[name] = getattr(e, name)
    if floor is not None:
        msg["floor"] = floor
    return msg


class Outbox:
    """Window and resend logic over a journal; `send` publishes entries (see `Send`).

    Used from one thread only (the uplink's worker).
    """

    def __init__(self, journal: Journal, send: Send, *, window: int = 100,
                 ack_timeout_s: float = 15.0, max_timeout_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.journal, self.send, self.window = journal, send, window
        self.base_timeout, self.max_timeout = ack_timeout_s, max_timeout_s
        self.clock = clock
        self.connected = False
        self.acked = journal.acked_seq
        self.sent_upto = self.acked
        self.timeout = ack_timeout_s
        self.last_progress = clock()
        self.floor: int | None = None
        self.waiting_since: float | None = None  # an outage of acknowledgements: said once

    def expect_no_acks(self) -> None:
        """No acknowledgement can come (the caller said why, once): resend quietly."""
        self.waiting_since = self.clock()

    def on_connected(self) -> None:
        """A new connection: nothing in flight is trusted any more, start from acked + 1."""
        self.connected = True
        self.acked = self.journal.acked_seq
        self.sent_upto = self.acked
        self.timeout = self.base_timeout
        self.last_progress = self.clock()

    def on_disconnected(self) -> None:
        self.connected = False

    @property
    def in_flight(self) -> int:
        return self.sent_upto - self.acked

    def pump(self) -> int:
        """Send what the window allows; returns how many entries went out."""
        if not self.connected:
            return 0
        room = self.window - self.in_flight
        if room <= 0:
            return 0
        entries = self.journal.pending(after=self.sent_upto, limit=room)
        if not entries:
            return 0
        if entries[0].seq > self.sent_upto + 1 and self.sent_upto == self.acked:
            # retention purged entries the office never stored: say they will never come
            self.floor = entries[0].seq
            log.warning("entries %d..%d were purged before delivery", self.acked + 1,
                        entries[0].seq - 1)
        if self.in_flight == 0:
            self.last_progress = self.clock()
        floor = self.floor if self.floor and self.floor > self.acked + 1 else None
        sent = self.send([(entry, floor) for entry in entries])
        if sent:
            self.sent_upto = entries[sent - 1].seq
        return sent

    def on_ack(self, seq: int) -> None:
        new = self.journal.acknowledge(seq)
        if new > self.acked:
            self.acked = new
            self.timeout = self.base_timeout
            self.last_progress = self.clock()
            if self.waiting_since is not None:
                log.info("the office acknowledges again (after %.0f s): events up to %d "
                         "stored", self.clock() - self.waiting_since, new)
                self.waiting_since = None
        self.sent_upto = max(self.sent_upto, self.acked)

    def on_resend(self, first: int, last: int) -> int:
        """The office misses [first, last]: send what the journal still holds of it, at most
        a window, acknowledged or not (a new office store fills this way). Numbers below the
        oldest entry held are gone (retention): the first entry sent says so (`floor`), and
        if the whole range is gone, the oldest entry goes alone to say it."""
        if not self.connected:
            return 0
        oldest = self.journal.first_seq()
        if oldest is None:
            return 0
        floor = oldest if first < oldest else None
        first = max(first, oldest)
        entries = self.journal.entries(first, min(last, first + self.window - 1),
                                       limit=self.window)
        if not entries and floor is not None:
            entries = self.journal.entries(oldest, oldest, limit=1)
        if not entries:
            return 0
        return self.send([(entries[0], floor)] + [(entry, None) for entry in entries[1:]])

    def on_rebased(self, after: int) -> None:
        """The journal was renumbered after `after` (acknowledged now): send from there."""
        self.acked = self.sent_upto = after
        self.floor = None
        self.timeout = self.base_timeout
        self.last_progress = self.clock()

    def restart(self) -> None:
        """Send everything unacknowledged again now (the journal's id changed)."""
        self.sent_upto = self.acked
        self.last_progress = self.clock()

    def tick(self) -> bool:
        """Called periodically: after an ack timeout, rewind to resend the window."""
        if not self.connected or self.in_flight == 0:
            return False
        if self.clock() - self.last_progress < self.timeout:
            return False
        if self.waiting_since is None:  # once per outage; the rest at DEBUG
            self.waiting_since = self.last_progress
            log.warning("no acknowledgement from the office for %.0f s: %d events wait in "
                        "the journal and are sent again, at growing intervals, until the "
                        "office stores them", self.timeout, self.journal.depth())
        else:
            log.debug("no acknowledgement for %.0f s; sending again from %d", self.timeout,
                      self.acked + 1)
        self.sent_upto = self.acked
        self.timeout = min(self.timeout * 2, self.max_timeout)
        self.last_progress = self.clock()
        return True
