"""What the office knows about each door beyond its events: its keys, its journals, its alarms.

A part of `CentralStore` (a mixin over its SQL plumbing), kept apart from the members and
rules it also holds:

- `door_keys`: the public keys registered for each door (`accessd central door add`); an
  event is stored only if one of its door's keys signed it. Several keys per door let a key
  be rolled.
- `door_journals`: the journals each door has used. A door's events are numbered within its
  journal; a new journal (an SD card replaced) would number from 1 again and collide with
  the numbers the office holds, so the office has it renumbered after them (`rebase`).
- `alarms`: what an operator must look at, one open row per (site, door, kind), counted.
- `conflicts`: a second, different event for a number already stored: the first is kept,
  both are recorded here.
- `purged`: numbers the office will never receive (the door said, signed, that it no longer
  holds them), so its mark could move past them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from accessd.errors import StoreError
from accessd.events import format_ts, utcnow
from accessd.protocol.signing import key_id, parse_public_line, public_line

DOORS_SCHEMA = """
CREATE TABLE IF NOT EXISTS door_keys (
    key_id TEXT PRIMARY KEY, site TEXT NOT NULL, door TEXT NOT NULL,
    public_key TEXT NOT NULL, added_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS door_keys_door ON door_keys (site, door);
CREATE TABLE IF NOT EXISTS door_journals (
    site TEXT NOT NULL, door TEXT NOT NULL, journal TEXT NOT NULL, status TEXT NOT NULL,
    after BIGINT, next TEXT, first_seen TEXT NOT NULL, PRIMARY KEY (site, door, journal)
);
CREATE UNIQUE INDEX IF NOT EXISTS door_journals_current ON door_journals (site, door)
    WHERE status = 'current';
CREATE TABLE IF NOT EXISTS alarms (
    id TEXT PRIMARY KEY, site TEXT NOT NULL, door TEXT NOT NULL, kind TEXT NOT NULL,
    detail TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
    count BIGINT NOT NULL, cleared TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS alarms_open ON alarms (site, door, kind)
    WHERE cleared IS NULL;
CREATE TABLE IF NOT EXISTS conflicts (
    site TEXT NOT NULL, door TEXT NOT NULL, seq BIGINT NOT NULL, digest TEXT NOT NULL,
    kept TEXT NOT NULL, refused TEXT NOT NULL, first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL, count BIGINT NOT NULL, PRIMARY KEY (site, door, seq, digest)
);
CREATE TABLE IF NOT EXISTS purged (
    site TEXT NOT NULL, door TEXT NOT NULL, first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL, reason TEXT NOT NULL, declared_at TEXT NOT NULL,
    PRIMARY KEY (site, door, first_seq)
);
"""

ALARM_KINDS = {
    "event_unsigned": "an event without a signature on the door's topic",
    "event_unknown_key": "an event signed by a key not registered for any door",
    "event_wrong_door": "an event signed by another door's key, or for another door",
    "event_bad_signature": "an event whose signature does not match its content",
    "event_invalid": "an event that is not JSON, too large, or fails the schema",
    "event_conflict": "a second, different event for a number already stored",
    "events_purged": "numbers the door deleted (retention) before the office stored them",
    "journal_replaced": "the door started a new journal: renumbered after the office's",
    "old_journal": "events of a journal the door replaced, past its numbers",
}
_ALARM_COLUMNS = ("id", "site", "door", "kind", "detail", "first_seen", "last_seen", "count",
                  "cleared")
_CONFLICT_COLUMNS = ("site", "door", "seq", "digest", "kept", "refused", "first_seen",
                     "last_seen", "count")


@dataclass(frozen=True)
class Rebase:
    """What the office tells a door whose journal it does not know: number the unacknowledged
    entries of `journal` after `after`, and call the journal `next` from then on."""

    journal: str
    after: int
    next: str


@dataclass
class JournalSort:
    """A batch sorted by journal: what may be stored, and what to tell each door."""

    accepted: list[dict[str, Any]]
    current: dict[tuple[str, str], str]
    rebases: dict[tuple[str, str], Rebase]
    refused: dict[tuple[str, str, str], int]


class DoorRecords:
    """Door keys, journals, alarms, conflicts and purged ranges (mixed into CentralStore)."""

    if TYPE_CHECKING:  # the SQL plumbing of CentralStore
        def execute(self, sql: str, args: Iterable[Any] = ()) -> Any: ...
        def rows(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]: ...
        def transaction(self) -> AbstractContextManager[None]: ...

    # -- door keys ----------------------------------------------------------------------
    def add_door_key(self, site: str, door: str, line: str) -> str:
        """Register a door's public key (its `accessd door-key` line); returns the key id.

        A key belongs to one door: registering it for another is refused (a door's key is
        its identity). A label on the line naming another site/door is refused too.
        """
        try:
            public, label = parse_public_line(line)
        except ValueError as exc:
            raise StoreError(f"--public-key: {exc}") from None
        if label and label != f"{site}/{door}":
            raise StoreError(f"the key line is labelled {label!r}, not {site}/{door}: "
                             "is it the right door's key?")
        kid = key_id(public)
        with self.transaction():
            found = self.rows("SELECT site, door FROM door_keys WHERE key_id = ?", (kid,))
            if found and found[0] != (site, door):
                raise StoreError(f"key {kid} is already registered for "
                                 f"{found[0][0]}/{found[0][1]}")
            if not found:
                self.execute("INSERT INTO door_keys (key_id, site, door, public_key, added_at) "
                             "VALUES (?, ?, ?, ?, ?)",
                             (kid, site, door, public_line(public), format_ts(utcnow())))
        return kid

    def remove_door_key(self, site: str, door: str, kid: str) -> bool:
        with self.transaction():
            n = self.execute("DELETE FROM door_keys WHERE site = ? AND door = ? AND key_id = ?",
                             (site, door, kid)).rowcount
        return bool(n)

    def door_keys_version(self) -> tuple[object, ...]:
        """Changes whenever a key is added or removed (cheap: for collectors to poll)."""
        return self.rows("SELECT count(*), max(added_at), min(key_id), max(key_id) "
                         "FROM door_keys")[0]

    def door_keys(self, site: str | None = None,
                  door: str | None = None) -> list[dict[str, Any]]:
        where, args = where_clause(site=site, door=door)
        return [dict(zip(("site", "door", "key_id", "public_key", "added_at"), r, strict=True))
                for r in self.rows("SELECT site, door, key_id, public_key, added_at FROM "
                                   f"door_keys{where} ORDER BY site, door, added_at", args)]

    # -- alarms -------------------------------------------------------------------------
    def raise_alarm(self, site: str, door: str, kind: str, detail: str, count: int = 1,
                    at: str | None = None) -> None:
        """Open an alarm, or count one more occurrence of the open one (one open row per
        site, door and kind; the latest detail kept). `at`: when it happened, if not now
        (a door's alarm event, stamped by the door)."""
        now = at or format_ts(utcnow())
        with self.transaction():
            self.execute(
                "INSERT INTO alarms (id, site, door, kind, detail, first_seen, last_seen, count) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, door, kind) WHERE cleared "
                "IS NULL DO UPDATE SET detail = excluded.detail, last_seen = "
                "excluded.last_seen, count = alarms.count + excluded.count",
                (uuid.uuid4().hex[:16], site, door, kind, detail[:1000], now, now, count))

    def alarms(self, open_only: bool = True, site: str | None = None,
               door: str | None = None) -> list[dict[str, Any]]:
        """Alarms, newest first: the open ones by default, or all of them."""
        where, args = where_clause(site=site, door=door)
        if open_only:
            where = (where + " AND" if where else " WHERE") + " cleared IS NULL"
        return [dict(zip(_ALARM_COLUMNS, r, strict=True)) for r in self.rows(
            f"SELECT {', '.join(_ALARM_COLUMNS)} FROM alarms{where} "
            "ORDER BY last_seen DESC, id", args)]

    def clear_alarm(self, alarm_id: str) -> bool:
        """An operator has dealt with it; the next occurrence opens a new alarm."""
        with self.transaction():
            n = self.execute("UPDATE alarms SET cleared = ? WHERE id = ? AND cleared IS NULL",
                             (format_ts(utcnow()), alarm_id)).rowcount
        return bool(n)

    # -- conflicts and purged numbers ---------------------------------------------------
    def record_conflict(self, site: str, door: str, seq: int, kept: dict[str, Any],
                        refused: dict[str, Any]) -> None:
        body = json.dumps(refused, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        now = format_ts(utcnow())
        self.execute(
            f"INSERT INTO conflicts ({', '.join(_CONFLICT_COLUMNS)}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (site, door, seq, digest) DO UPDATE SET "
            "last_seen = excluded.last_seen, count = conflicts.count + 1",
            (site, door, seq, hashlib.sha256(body.encode()).hexdigest()[:32],
             json.dumps(kept, sort_keys=True, ensure_ascii=False), body, now, now))

    def conflicts(self, site: str | None = None,
                  door: str | None = None) -> list[dict[str, Any]]:
        where, args = where_clause(site=site, door=door)
        out = []
        for r in self.rows(f"SELECT {', '.join(_CONFLICT_COLUMNS)} FROM conflicts{where} "
                           "ORDER BY site, door, seq, first_seen", args):
            row = dict(zip(_CONFLICT_COLUMNS, r, strict=True))
            row["kept"], row["refused"] = json.loads(row["kept"]), json.loads(row["refused"])
            out.append(row)
        return out

    def record_purged(self, site: str, door: str, first: int, last: int, reason: str) -> None:
        self.execute("INSERT INTO purged (site, door, first_seq, last_seq, reason, declared_at) "
                     "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site, door, first_seq) DO UPDATE "
                     "SET last_seq = CASE WHEN excluded.last_seq > purged.last_seq THEN "
                     "excluded.last_seq ELSE purged.last_seq END",
                     (site, door, first, last, reason, format_ts(utcnow())))

    def purged(self, site: str | None = None, door: str | None = None) -> list[dict[str, Any]]:
        """Ranges of numbers the office will never receive, as the doors declared them."""
        where, args = where_clause(site=site, door=door)
        cols = ("site", "door", "first_seq", "last_seq", "reason", "declared_at")
        return [dict(zip(cols, r, strict=True)) for r in self.rows(
            f"SELECT {', '.join(cols)} FROM purged{where} ORDER BY site, door, first_seq",
            args)]

    # -- journals -----------------------------------------------------------------------
    def door_journals(self, site: str, door: str) -> list[dict[str, Any]]:
        cols = ("journal", "status", "after", "next", "first_seen")
        return [dict(zip(cols, r, strict=True)) for r in self.rows(
            f"SELECT {', '.join(cols)} FROM door_journals WHERE site = ? AND door = ? "
            "ORDER BY first_seen, journal", (site, door))]

    def current_journal(self, site: str, door: str) -> str | None:
        rows = self.rows("SELECT journal FROM door_journals WHERE site = ? AND door = ? AND "
                         "status = 'current'", (site, door))
        return rows[0][0] if rows else None

    def _journal_rows(self, sites: list[str]) -> dict[tuple[str, str, str], tuple[Any, ...]]:
        return {(s, d, j): (status, after, nxt) for s, d, j, status, after, nxt in self.rows(
            "SELECT site, door, journal, status, after, next FROM door_journals WHERE site IN "
            f"({', '.join('?' * len(sites))})", sites)}

    def sort_by_journal(self, messages: list[dict[str, Any]]) -> JournalSort:
        """Which events of a batch belong to the journal the office knows for their door
        (run inside the batch's transaction). A door's first journal is adopted; a new one
        for a door that has history is told to renumber after the office's numbers, and its
        events wait until it has; a replaced journal's events are kept only within the
        numbers it had. Messages without `journal` (tests of the store) go through."""
        out = JournalSort([], {}, {}, {})
        sites = sorted({m["site"] for m in messages if m.get("journal")})
        if not sites:
            out.accepted = list(messages)
            return out
        known = self._journal_rows(sites)
        current = {(s, d): j for (s, d, j), v in known.items() if v[0] == "current"}
        for m in messages:
            journal = m.get("journal")
            if journal is None:
                out.accepted.append(m)
                continue
            site, door = m["site"], m["door"]
            state = known.get((site, door, journal))
            if state is None:
                self._new_journal(site, door, journal, current.get((site, door)))
                known.update(self._journal_rows([site]))
                current = {(s, d): j for (s, d, j), v in known.items() if v[0] == "current"}
                state = known[(site, door, journal)]
            status, after, nxt = state
            if status == "current":
                out.accepted.append(m)
                out.current[(site, door)] = journal
            elif status == "renumbering":
                out.rebases[(site, door)] = Rebase(journal, after, nxt)
                key = (site, door, "renumbering")
                out.refused[key] = out.refused.get(key, 0) + 1
            elif after is not None and m["seq"] <= after:  # a replaced journal, its numbers
                out.accepted.append(m)
            else:
                key = (site, door, "old_journal")
                out.refused[key] = out.refused.get(key, 0) + 1
        for (site, door, reason), n in out.refused.items():
            if reason == "old_journal":
                self.raise_alarm(site, door, "old_journal",
                                 f"{n} event(s) of a journal this door replaced, numbered past "
                                 "it: refused (two doors configured with the same id?)", n)
        return out

    def _new_journal(self, site: str, door: str, journal: str, current: str | None) -> None:
        now = format_ts(utcnow())
        if current is None:  # the door's first journal (or a store older than journals)
            self.execute("INSERT INTO door_journals (site, door, journal, status, first_seen) "
                         "VALUES (?, ?, ?, 'current', ?) ON CONFLICT DO NOTHING",
                         (site, door, journal, now))
            if (site, door, journal) in self._journal_rows([site]):
                return
            current = self.current_journal(site, door)  # another collector adopted one
        highest = self.rows(
            "SELECT max(n) FROM (SELECT max(seq) AS n FROM events WHERE site = ? AND door = ? "
            "UNION ALL SELECT stored_seq FROM doors WHERE site = ? AND door = ?) AS highest",
            (site, door, site, door))[0][0] or 0
        nxt = uuid.uuid4().hex
        inserted = self.execute(
            "INSERT INTO door_journals (site, door, journal, status, after, next, first_seen) "
            "VALUES (?, ?, ?, 'renumbering', ?, ?, ?) ON CONFLICT DO NOTHING",
            (site, door, journal, highest, nxt, now)).rowcount
        if inserted != 1:
            return  # another collector decided for this journal
        self.execute("UPDATE door_journals SET status = 'retired', after = ? WHERE site = ? "
                     "AND door = ? AND status = 'current'", (highest, site, door))
        self.execute("INSERT INTO door_journals (site, door, journal, status, first_seen) "
                     "VALUES (?, ?, ?, 'current', ?)", (site, door, nxt, now))
        self.raise_alarm(site, door, "journal_replaced",
                         f"the door started a new journal ({journal[:8]}…, the previous one "
                         f"was {(current or '?')[:8]}…): an SD card replaced or the journal "
                         f"deleted? It is renumbered after {highest}; check the door and "
                         "its key (docs/central.md)")


def where_clause(**filters: Any) -> tuple[str, list[Any]]:
    """` WHERE a = ? AND b = ?` for the filters that are not None, and their values."""
    parts, args = [], []
    for key, value in filters.items():
        if value is not None:
            parts.append(f"{key} = ?")
            args.append(value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), args
