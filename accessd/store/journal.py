"""The durable event journal of one door, and its outbox towards the central office.

`append` returns only once the event is committed to disk (WAL, synchronous=FULL), with the
door's next sequence number: numbers have no gaps, even across processes (the CLI journals
enrolments while the daemon journals taps) because the number is taken inside the writing
transaction. The last number lives in `meta`, so retention may delete old rows without the
sequence ever going back.

The uplink delivers entries in sequence order and calls `acknowledge(seq)` when the central
office has *stored* them; unacknowledged entries are the outbox.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from accessd.errors import JournalFullError, StoreError
from accessd.events import Event, JournalEntry, event_type, format_ts, parse_ts, utcnow
from accessd.store.db import connect, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts TEXT NOT NULL,
    site TEXT NOT NULL,
    door TEXT NOT NULL,
    reader TEXT,
    type TEXT NOT NULL,
    member_id TEXT,
    member_name TEXT,
    plan TEXT,
    result TEXT,
    reason TEXT,
    credential TEXT,
    clock_trusted INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_member ON events(member_id, ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLUMNS = ("seq, id, ts, site, door, reader, type, member_id, member_name, plan, result, "
            "reason, credential, clock_trusted, detail")
_DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO, errno.EACCES}


@dataclass(frozen=True, slots=True)
class LogFilter:
    member: str | None = None
    door: str | None = None
    result: str | None = None
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


def _is_disk_error(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return any(k in text for k in ("disk is full", "readonly", "read-only", "disk i/o",
                                   "unable to open", "database or disk is full"))


def _row_to_entry(row: tuple[Any, ...]) -> JournalEntry:
    (seq, eid, ts, site, door, reader, etype, mid, mname, plan, result, reason, cred,
     trusted, detail) = row
    event = Event(type=event_type(etype), ts=parse_ts(ts), reader=reader, member_id=mid,
                  member_name=mname, plan=plan, result=result, reason=reason, credential=cred,
                  clock_trusted=bool(trusted), detail=json.loads(detail))
    return JournalEntry(seq, eid, site, door, event)


class Journal:
    def __init__(self, path: Path | str, site: str, door: str, *,
                 readonly: bool = False) -> None:
        self.path, self.site, self.door = path, site, door
        self.db = connect(path, readonly=readonly)
        self.conn = self.db.conn
        if not readonly:
            self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # -- writing ------------------------------------------------------------------------
    def append(self, event: Event) -> JournalEntry:
        """Commit one event durably and return it with its sequence number."""
        return self.append_many([event])[0]

    def append_many(self, events: list[Event]) -> list[JournalEntry]:
        """Commit several events in one transaction (one fsync), in order."""
        try:
            with transaction(self.conn) as conn:
                row = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
                seq = int(row[0]) if row else 0
                entries = []
                for event in events:
                    seq += 1
                    entry = JournalEntry(seq, uuid.uuid4().hex, self.site, self.door, event)
                    conn.execute(
                        f"INSERT INTO events ({_COLUMNS}) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (seq, entry.id, format_ts(event.ts), self.site, self.door,
                         event.reader, str(event.type), event.member_id, event.member_name,
                         event.plan, event.result, event.reason, event.credential,
                         int(event.clock_trusted),
                         json.dumps(event.detail, separators=(",", ":"), sort_keys=True)))
                    entries.append(entry)
                conn.execute("INSERT INTO meta(key, value) VALUES ('last_seq', ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (seq,))
        except sqlite3.Error as exc:
            if _is_disk_error(exc):
                raise JournalFullError(f"{self.path}: cannot write the journal: {exc}") from exc
            raise StoreError(f"{self.path}: journal write failed: {exc}") from exc
        except OSError as exc:
            if exc.errno in _DISK_ERRNOS:
                raise JournalFullError(f"{self.path}: cannot write the journal: {exc}") from exc
            raise
        return entries

    # -- the outbox ---------------------------------------------------------------------
    def _meta_int(self, key: str) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    @property
    def last_seq(self) -> int:
        return self._meta_int("last_seq")

    @property
    def acked_seq(self) -> int:
        return self._meta_int("acked_seq")

    def acknowledge(self, seq: int) -> int:
        """The central office has stored everything up to `seq`; returns the new mark."""
        with transaction(self.conn) as conn:
            current = self._meta_int("acked_seq")
            new = max(current, min(seq, self._meta_int("last_seq")))
            conn.execute("INSERT INTO meta(key, value) VALUES ('acked_seq', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (new,))
        return new

    def pending(self, after: int | None = None, limit: int = 500) -> list[JournalEntry]:
        """Entries not yet acknowledged, oldest first, starting after `after`."""
        start = self.acked_seq if after is None else after
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM events WHERE seq > ? "
                                 "ORDER BY seq LIMIT ?", (start, limit)).fetchall()
        return [_row_to_entry(r) for r in rows]

    def get(self, seqs: list[int]) -> list[JournalEntry]:
        marks = ",".join("?" * len(seqs))
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM events WHERE seq IN ({marks}) "
                                 "ORDER BY seq", seqs).fetchall()
        return [_row_to_entry(r) for r in rows]

    def depth(self) -> int:
        return max(0, self.last_seq - self.acked_seq)

    # -- reading ------------------------------------------------------------------------
    def query(self, f: LogFilter) -> list[JournalEntry]:
        where, args = [], []
        if f.member:
            where.append("(member_id = ? OR member_name LIKE ?)")
            args += [f.member, f"%{f.member}%"]
        if f.door:
            where.append("door = ?")
            args.append(f.door)
        if f.result:
            where.append("result = ?")
            args.append(f.result)
        if f.type:
            where.append("type LIKE ?")
            args.append(f.type.replace("*", "%"))
        if f.since:
            where.append("ts >= ?")
            args.append(format_ts(f.since))
        if f.until:
            where.append("ts < ?")
            args.append(format_ts(f.until))
        sql = (f"SELECT {_COLUMNS} FROM events"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY seq DESC LIMIT ?")
        rows = self.conn.execute(sql, [*args, f.limit]).fetchall()
        return [_row_to_entry(r) for r in reversed(rows)]

    def iter_all(self) -> Iterator[JournalEntry]:
        for row in self.conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq"):
            yield _row_to_entry(row)

    def latest_trusted_ts(self) -> datetime | None:
        """The newest instant known to have passed: stamped while the clock was trusted."""
        row = self.conn.execute("SELECT ts FROM events WHERE clock_trusted = 1 "
                                "ORDER BY seq DESC LIMIT 1").fetchone()
        return parse_ts(row[0]) if row else None

    # -- retention ----------------------------------------------------------------------
    def purge(self, retention_days: int, now: datetime | None = None,
              batch: int = 5000) -> int:
        """Delete entries older than the retention period, oldest first, in small batches.

        Movement logs may not be kept longer (CNIL: three months), acknowledged or not. Only
        a prefix of the sequence is removed (up to the newest old entry stamped by a trusted
        clock), so an entry stamped in 1970 by a clock that had not synced yet is not purged
        ahead of its neighbours and the journal stays one contiguous run of numbers.
        """
        cutoff = format_ts((now or utcnow()) - timedelta(days=retention_days))
        row = self.conn.execute("SELECT max(seq) FROM events WHERE ts < ? AND clock_trusted = 1",
                                (cutoff,)).fetchone()
        upto = row[0] or 0
        total = 0
        while True:
            with transaction(self.conn) as conn:
                cur = conn.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq <= ? "
                    "ORDER BY seq LIMIT ?)", (upto, batch))
            total += cur.rowcount
            if cur.rowcount < batch:
                return total
