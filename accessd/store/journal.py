"""The durable event journal of one door, and its outbox towards the central office.

`append` returns only once the event is committed to disk (WAL, synchronous=FULL), with the
door's next sequence number: numbers have no gaps, even across processes (the CLI journals
enrolments while the daemon journals taps) because the number is taken inside the writing
transaction. The last number lives in `meta`, so retention may delete old rows without the
sequence ever going back.

The uplink delivers entries in sequence order and calls `acknowledge(seq)` when the central
office has *stored* them; unacknowledged entries are the outbox. The journal has an id
(`journal_id`, random, made with it) that its events carry, so that the office can tell a
new journal (an SD card replaced) from the one it knows, and have it renumbered (`rebase`).

One `Journal` may be shared between threads (the door's writer thread commits while the
control socket reads the status): each method holds the journal's lock, so a reader never sees
a transaction half done through the same connection.

A value in `meta` that is not a whole number (a hand edit, a bug of an older version) never
stops the door: it is read as the number it means, or recomputed from the rows, and
rewritten when the journal is opened for writing, with a WARNING.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import math
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from accessd.errors import JournalFullError, StoreError
from accessd.events import (
    Event,
    EventType,
    JournalEntry,
    event_type,
    format_ts,
    parse_ts,
    utcnow,
)
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
_JOURNAL_ID = re.compile(r"[0-9a-f]{32}")
log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a method of `Journal` under the journal's lock."""
    @functools.wraps(method)
    def locked(*args: _P.args, **kw: _P.kwargs) -> _R:
        with args[0]._lock:  # type: ignore[attr-defined]
            return method(*args, **kw)
    return locked


def stored_int(value: Any) -> int | None:
    """A whole number >= 0 as stored (an int, or text or a float meaning one: "29", "29.0",
    29.0); None for anything else (garbage, negative, a fraction, a boolean)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii():
            return None
        if text.isdigit():
            return int(text)
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() \
            and 0 <= value < 2**63:
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class LogFilter:
    member: str | None = None
    door: str | None = None
    credential: str | None = None  # the short keyed hash events carry
    member_id: str | None = None  # exactly this member (`member` also matches names)
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
        self._lock = threading.RLock()
        self.db = connect(path, readonly=readonly)
        self.conn = self.db.conn
        self._warned: set[str] = set()
        if not readonly:
            self.conn.executescript(SCHEMA)
            self.repair_meta()

    @_locked
    def close(self) -> None:
        self.conn.close()

    # -- writing ------------------------------------------------------------------------
    def append(self, event: Event) -> JournalEntry:
        """Commit one event durably and return it with its sequence number."""
        return self.append_many([event])[0]

    @_locked
    def append_many(self, events: list[Event]) -> list[JournalEntry]:
        """Commit several events in one transaction (one fsync), in order."""
        try:
            with transaction(self.conn) as conn:
                seq = self._meta_int("last_seq")
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
                self._set_meta(conn, "last_seq", seq)
        except sqlite3.Error as exc:
            if _is_disk_error(exc):
                raise JournalFullError(f"{self.path}: cannot write the journal: {exc}") from exc
            raise StoreError(f"{self.path}: journal write failed: {exc}") from exc
        except OSError as exc:
            if exc.errno in _DISK_ERRNOS:
                raise JournalFullError(f"{self.path}: cannot write the journal: {exc}") from exc
            raise
        return entries

    # -- meta: numbers that must never wedge the door -------------------------------------
    def _meta_raw(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _max_seq(self) -> int:
        return self.conn.execute("SELECT COALESCE(max(seq), 0) FROM events").fetchone()[0]

    def _meta_int(self, key: str) -> int:
        """`last_seq` or `acked_seq`, read whatever is stored: a value that is not a whole
        number falls back to the rows (last_seq) or to 0 (acked_seq: everything is sent
        again, the office drops the copies)."""
        raw = self._meta_raw(key)
        if raw is None:
            return 0
        value = stored_int(raw)
        if value is not None:
            return value
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s: meta %s is %r, not a sequence number; using %s", self.path, key,
                        raw, "the last row" if key == "last_seq" else "0")
        if key == "last_seq":
            return max(self._max_seq(), stored_int(self._meta_raw("acked_seq")) or 0)
        return 0

    def _set_meta(self, conn: sqlite3.Connection, key: str, value: str | int) -> None:
        conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def _meta_fixes(self) -> dict[str, tuple[Any, int | str]]:
        """key -> (stored, wanted) for every meta value that is not what it should be."""
        raw_last, raw_acked = self._meta_raw("last_seq"), self._meta_raw("acked_seq")
        last = max(self._meta_int("last_seq"), self._max_seq())
        acked = min(self._meta_int("acked_seq"), last)
        fixes: dict[str, tuple[Any, int | str]] = {
            key: (raw, value)
            for key, raw, value in (("last_seq", raw_last, last), ("acked_seq", raw_acked, acked))
            if raw is not None and str(raw) != str(value)}  # stored as text: "40"
        jid = self._meta_raw("journal_id")
        if not (isinstance(jid, str) and _JOURNAL_ID.fullmatch(jid)):
            fixes["journal_id"] = (jid, uuid.uuid4().hex)
        return fixes

    @_locked
    def repair_meta(self) -> list[str]:
        """Rewrite what `meta` should say (at every writable open): the sequence numbers as
        whole numbers, never behind the rows, the acknowledged mark never past the last
        number, and a journal id. Returns what was repaired (each also logged); a journal
        that cannot be written now (read-only disk) is only read leniently."""
        if not self._meta_fixes():
            return []
        try:
            with transaction(self.conn) as conn:
                fixes = self._meta_fixes()  # again, under the write lock
                for key, (_raw, value) in fixes.items():
                    self._set_meta(conn, key, value)
        except sqlite3.Error as exc:
            log.warning("%s: cannot repair meta now (%s); reading it leniently", self.path, exc)
            return []
        fixed = [f"{key} {raw!r} -> {value if key != 'journal_id' else 'a new id'}"
                 for key, (raw, value) in fixes.items() if raw is not None]
        for what in fixed:
            log.warning("%s: repaired meta %s", self.path, what)
        return fixed

    # -- the outbox ---------------------------------------------------------------------
    @property
    @_locked
    def last_seq(self) -> int:
        return self._meta_int("last_seq")

    @property
    @_locked
    def acked_seq(self) -> int:
        return self._meta_int("acked_seq")

    @property
    @_locked
    def journal_id(self) -> str | None:
        """The journal's id, carried by its events (None only in a read-only journal that
        was never opened for writing)."""
        jid = self._meta_raw("journal_id")
        return jid if isinstance(jid, str) and _JOURNAL_ID.fullmatch(jid) else None

    @_locked
    def acknowledge(self, seq: int) -> int:
        """The central office has stored everything up to `seq`; returns the new mark."""
        if type(seq) is not int or seq < 0:
            raise ValueError(f"an acknowledged number is a whole number, not {seq!r}")
        with transaction(self.conn) as conn:
            current = self._meta_int("acked_seq")
            new = max(current, min(seq, self._meta_int("last_seq")))
            if new != current:
                self._set_meta(conn, "acked_seq", new)
        return new

    @_locked
    def new_identity(self) -> str:
        """Take a new journal id: the office holds numbers this journal never issued (it was
        restored from an old copy), so what it says about the old id is not about us."""
        jid = uuid.uuid4().hex
        with transaction(self.conn) as conn:
            self._set_meta(conn, "journal_id", jid)
        return jid

    @_locked
    def rebase(self, journal: str, after: int, new_journal: str) -> int | None:
        """On the office's signed instruction: number the unacknowledged entries after
        `after` (the numbers up to it belong to this door's previous journal) and take the id
        `new_journal`. Applies once, only to the journal `journal`: None if this is not it
        (a replayed or stale instruction); else how many entries were renumbered."""
        if type(after) is not int or after < 0 or not _JOURNAL_ID.fullmatch(new_journal):
            raise ValueError("a rebase needs a whole number and a journal id")
        with transaction(self.conn) as conn:
            if self._meta_raw("journal_id") != journal:
                return None
            acked, last = self._meta_int("acked_seq"), self._meta_int("last_seq")
            shift = max(0, after - acked)
            moved = 0
            if shift:  # through negative numbers: the primary key never collides midway
                moved = conn.execute("UPDATE events SET seq = -(seq + ?) WHERE seq > ?",
                                     (shift, acked)).rowcount
                conn.execute("UPDATE events SET seq = -seq WHERE seq < 0")
                self._set_meta(conn, "last_seq", last + shift)
                self._set_meta(conn, "acked_seq", after)
            self._set_meta(conn, "journal_id", new_journal)
        return moved

    @_locked
    def first_seq(self) -> int | None:
        """The oldest number still held (retention deletes a prefix), None if empty."""
        return self.conn.execute("SELECT min(seq) FROM events").fetchone()[0]

    @_locked
    def entries(self, first: int, last: int, limit: int = 500) -> list[JournalEntry]:
        """Entries numbered first..last (acknowledged or not), oldest first."""
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM events WHERE seq BETWEEN ? AND ? "
                                 "ORDER BY seq LIMIT ?", (first, last, limit)).fetchall()
        return [_row_to_entry(r) for r in rows]

    @_locked
    def pending(self, after: int | None = None, limit: int = 500) -> list[JournalEntry]:
        """Entries not yet acknowledged, oldest first, starting after `after`."""
        start = self.acked_seq if after is None else after
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM events WHERE seq > ? "
                                 "ORDER BY seq LIMIT ?", (start, limit)).fetchall()
        return [_row_to_entry(r) for r in rows]

    @_locked
    def depth(self) -> int:
        return max(0, self.last_seq - self.acked_seq)

    # -- reading ------------------------------------------------------------------------
    @_locked
    def query(self, f: LogFilter) -> list[JournalEntry]:
        where, args = [], []
        if f.member:
            where.append("(member_id = ? OR member_name LIKE ?)")
            args += [f.member, f"%{f.member}%"]
        if f.door:
            where.append("door = ?")
            args.append(f.door)
        if f.credential:
            where.append("credential = ?")
            args.append(f.credential)
        if f.member_id:
            where.append("member_id = ?")
            args.append(f.member_id)
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

    def iter_all(self, chunk: int = 1000) -> Iterator[JournalEntry]:
        """Every entry, oldest first (read in chunks, the lock held for each)."""
        after = -1
        while True:
            with self._lock:
                rows = self.conn.execute(f"SELECT {_COLUMNS} FROM events WHERE seq > ? "
                                         "ORDER BY seq LIMIT ?", (after, chunk)).fetchall()
            yield from (_row_to_entry(r) for r in rows)
            if len(rows) < chunk:
                return
            after = rows[-1][0]

    @_locked
    def state(self) -> dict[str, int]:
        """`last_seq`, `acked_seq` and `depth` read together, in one read transaction."""
        self.conn.execute("BEGIN")
        try:
            last, acked = self._meta_int("last_seq"), self._meta_int("acked_seq")
        finally:
            self.conn.execute("COMMIT")
        return {"last_seq": last, "acked_seq": acked, "depth": max(0, last - acked)}

    @_locked
    def holds_spool(self, name: str) -> bool:
        """Whether the journal already holds the events of spool file `name`: the import
        journals them in one transaction with an `alarm.journal_unavailable` entry naming the
        file (docs/journal.md), so a file whose deletion a power loss undid is recognised."""
        row = self.conn.execute(
            "SELECT 1 FROM events WHERE type = ? AND reason = 'spooled_at_stop' "
            "AND json_extract(detail, '$.spool') = ? LIMIT 1",
            (str(EventType.JOURNAL_UNAVAILABLE), name)).fetchone()
        return row is not None

    @_locked
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
        with self._lock:
            row = self.conn.execute("SELECT max(seq) FROM events WHERE ts < ? AND "
                                    "clock_trusted = 1", (cutoff,)).fetchone()
        upto = row[0] or 0
        total = 0
        while True:
            with self._lock, transaction(self.conn) as conn:
                cur = conn.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq <= ? "
                    "ORDER BY seq LIMIT ?)", (upto, batch))
            total += cur.rowcount
            if cur.rowcount < batch:
                return total
