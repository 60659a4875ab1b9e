"""The central office's database: SQLite by default, PostgreSQL by URL, one set of SQL for both.

Events are keyed by (site, door, seq) and inserted with ON CONFLICT DO NOTHING, so a copy
(a door resending after a lost acknowledgement, a message redelivered by the broker, two
collectors) is dropped by the database itself; a *different* event for a number already
stored is never dropped silently: the first stays, the conflict is recorded with both and an
alarm is raised (accessd.central.doors). What a door is told has been stored is the highest
*contiguous* number, recomputed from the table after the insert is committed, so no
collector can acknowledge past a hole another one has not filled yet; it moves past numbers
the office lacks only when the door declared, signed, that it no longer holds them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accessd.central.doors import DOORS_SCHEMA, DoorRecords, Rebase
from accessd.central.doors import where_clause as _where
from accessd.errors import StoreError
from accessd.events import EventType, format_ts, parse_ts, utcnow
from accessd.store.db import prepare_file

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    site TEXT NOT NULL, door TEXT NOT NULL, seq BIGINT NOT NULL,
    id TEXT NOT NULL, ts TEXT NOT NULL, type TEXT NOT NULL, reader TEXT,
    member_id TEXT, member_name TEXT, plan TEXT, result TEXT, reason TEXT, credential TEXT,
    clock_trusted INTEGER NOT NULL, detail TEXT NOT NULL, received_at TEXT NOT NULL,
    PRIMARY KEY (site, door, seq)
);
CREATE INDEX IF NOT EXISTS events_site_ts ON events (site, ts);
CREATE INDEX IF NOT EXISTS events_site_member ON events (site, member_id, ts);
CREATE TABLE IF NOT EXISTS doors (
    site TEXT NOT NULL, door TEXT NOT NULL, stored_seq BIGINT NOT NULL DEFAULT 0,
    last_seen TEXT, PRIMARY KEY (site, door)
);
CREATE TABLE IF NOT EXISTS sites (
    site TEXT PRIMARY KEY, name TEXT, timezone TEXT, credential_key TEXT, schedule TEXT
);
CREATE TABLE IF NOT EXISTS members (
    site TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, plan TEXT NOT NULL,
    status TEXT NOT NULL, valid_from TEXT, valid_until TEXT, origin TEXT NOT NULL,
    updated_at TEXT NOT NULL, PRIMARY KEY (site, id)
);
CREATE TABLE IF NOT EXISTS credentials (
    site TEXT NOT NULL, hash TEXT NOT NULL, member_id TEXT NOT NULL, status TEXT NOT NULL,
    technology TEXT, origin TEXT NOT NULL, enrolled_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (site, hash)
);
CREATE TABLE IF NOT EXISTS rule_versions (
    site TEXT NOT NULL, version BIGINT NOT NULL, issued_at TEXT NOT NULL,
    snapshot TEXT NOT NULL, delta TEXT, published_at TEXT NOT NULL,
    PRIMARY KEY (site, version)
);
"""

EVENT_COLUMNS = ("site", "door", "seq", "id", "ts", "type", "reader", "member_id",
                 "member_name", "plan", "result", "reason", "credential", "clock_trusted",
                 "detail", "received_at")
MEMBER_COLUMNS = ("id", "name", "plan", "status", "valid_from", "valid_until", "origin",
                  "updated_at")
CREDENTIAL_COLUMNS = ("hash", "member_id", "status", "technology", "origin", "enrolled_at",
                      "updated_at")

_UPSERT_MEMBER = (
    "INSERT INTO members (site, id, name, plan, status, valid_from, valid_until, origin, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, id) DO UPDATE SET "
    "name = excluded.name, plan = excluded.plan, status = excluded.status, "
    "valid_from = excluded.valid_from, valid_until = excluded.valid_until, "
    "origin = excluded.origin, updated_at = excluded.updated_at")
_UPSERT_CREDENTIAL = (
    "INSERT INTO credentials (site, hash, member_id, status, technology, origin, enrolled_at, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, hash) DO UPDATE SET "
    "member_id = excluded.member_id, status = excluded.status, "
    "technology = excluded.technology, origin = excluded.origin, "
    "updated_at = excluded.updated_at")
# a host's change reaches the office after the fact: it never undoes an office revocation
_SITE_GUARD = " WHERE {t}.status <> 'revoked' AND {t}.updated_at <= excluded.updated_at"


@dataclass(frozen=True)
class StoreResult:
    new: int
    duplicates: int
    doors: frozenset[tuple[str, str]]
    conflicts: int = 0
    journals: dict[tuple[str, str], str] = field(default_factory=dict)  # the current ones
    rebases: dict[tuple[str, str], Rebase] = field(default_factory=dict)
    refused: dict[tuple[str, str, str], int] = field(default_factory=dict)


class CentralStore(DoorRecords):
    """Open with `open_store(url)`: a path or sqlite:///path, or postgresql://..."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgres"
            try:
                import psycopg
            except ImportError:
                raise StoreError("PostgreSQL needs psycopg: pip install 'accessd[postgres]'"
                                 ) from None
            try:
                self.conn: Any = psycopg.connect(url, autocommit=True)
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
            self._errors: tuple[type[Exception], ...] = (psycopg.Error,)
        else:
            self.dialect = "sqlite"
            path = url.removeprefix("sqlite://")  # sqlite:///abs/path or a plain path
            try:
                if path != ":memory:":
                    prepare_file(Path(path))  # 0600: it holds each site's card key
                self.conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                                            check_same_thread=False)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
                self.conn.execute("PRAGMA busy_timeout=30000")
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"{path}: cannot open the store: {exc}") from exc
            self._errors = (sqlite3.Error,)
        with self.transaction():
            for statement in (SCHEMA + DOORS_SCHEMA).split(";"):
                if statement.strip():
                    self.execute(statement)

    def __repr__(self) -> str:
        return f"CentralStore({self.dialect})"

    def close(self) -> None:
        self.conn.close()

    # -- SQL plumbing -------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgres" else sql

    def execute(self, sql: str, args: Iterable[Any] = ()) -> Any:
        try:
            return self.conn.execute(self._sql(sql), tuple(args))
        except self._errors as exc:
            raise StoreError(f"central store: {exc}") from exc

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if not rows:
            return
        try:
            if self.dialect == "postgres":
                with self.conn.cursor() as cur:
                    cur.executemany(self._sql(sql), rows)
            else:
                self.conn.executemany(sql, rows)
        except self._errors as exc:
            raise StoreError(f"central store: {exc}") from exc

    def rows(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.execute(sql, args).fetchall()]

    def stream(self, sql: str, args: Iterable[Any] = (),
               size: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of a query in lists of `size`, without holding them all in memory."""
        try:
            if self.dialect == "postgres":
                with self.conn.cursor() as cur:
                    chunk: list[tuple[Any, ...]] = []
                    for r in cur.stream(self._sql(sql), tuple(args)):
                        chunk.append(tuple(r))
                        if len(chunk) >= size:
                            yield chunk
                            chunk = []
                    if chunk:
                        yield chunk
                return
            cur = self.conn.execute(sql, tuple(args))
            while rows := cur.fetchmany(size):
                yield [tuple(r) for r in rows]
        except self._errors as exc:
            raise StoreError(f"central store: {exc}") from exc

    def tables(self) -> dict[str, list[str]]:
        """Every table of the store and its columns, in order."""
        if self.dialect == "postgres":
            out: dict[str, list[str]] = {}
            for table, column in self.rows(
                    "SELECT table_name, column_name FROM information_schema.columns WHERE "
                    "table_schema = current_schema() ORDER BY table_name, ordinal_position"):
                out.setdefault(table, []).append(column)
            return out
        names = [r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE type = 'table' "
                                         "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {t: [r[1] for r in self.rows(f'PRAGMA table_info("{t}")')] for t in names}

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All of it or none of it (BEGIN IMMEDIATE on SQLite: one writer at a time).
        Inside another transaction it is part of that one."""
        if self.dialect == "sqlite" and self.conn.in_transaction:
            yield
            return
        if self.dialect == "postgres":
            try:
                with self.conn.transaction():
                    yield
            except self._errors as exc:
                raise StoreError(f"central store: {exc}") from exc
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- events -------------------------------------------------------------------------
    def insert_many(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        """One `executemany` (a pipeline on PostgreSQL); how many rows it changed."""
        if not rows:
            return 0
        try:
            if self.dialect == "postgres":
                with self.conn.cursor() as cur:
                    cur.executemany(self._sql(sql), rows)
                    return max(cur.rowcount, 0)  # psycopg 3: the sum over the rows
            before = self.conn.total_changes
            self.conn.executemany(sql, rows)
            return self.conn.total_changes - before
        except self._errors as exc:
            raise StoreError(f"central store: {exc}") from exc

    def store_events(self, messages: list[dict[str, Any]]) -> StoreResult:
        """Insert a batch of verified event payloads in one transaction.

        Copies are dropped; a different event for a stored number is a conflict (kept out,
        recorded, alarmed). Events of a journal the office does not know for their door
        wait until the door has renumbered it (`sort_by_journal`). Ordinary events go in
        with one statement for the batch, and cost nothing more unless some were already
        there; a host change (which also updates members and credentials when it is new)
        and a message carrying a `floor` take the per-row path, in their order.
        """
        new = 0
        doors = {(m["site"], m["door"]) for m in messages}
        received = format_ts(utcnow())
        placeholders = ", ".join("?" * len(EVENT_COLUMNS))
        insert = (f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({placeholders}) "
                  "ON CONFLICT (site, door, seq) DO NOTHING")

        def row(m: dict[str, Any]) -> tuple[Any, ...]:
            return (m["site"], m["door"], m["seq"], m["id"], format_ts(parse_ts(m["ts"])),
                    m["type"], m.get("reader"), m.get("member_id"), m.get("member_name"),
                    m.get("plan"), m.get("result"), m.get("reason"), m.get("credential"),
                    int(bool(m["clock_trusted"])),
                    json.dumps(m.get("detail", {}), sort_keys=True), received)

        with self.transaction():
            sort = self.sort_by_journal(messages)
            special = [m for m in sort.accepted if m["type"] in HOST_CHANGES or m.get("floor")]
            plain = [m for m in sort.accepted if m["type"] not in HOST_CHANGES
                     and not m.get("floor")]
            inserted = self.insert_many(insert, [row(m) for m in plain])
            new += inserted
            unsure = list(plain) if inserted < len(plain) else []
            for m in special:
                if self.execute(insert, row(m)).rowcount == 1:
                    new += 1
                    if m["type"] in HOST_CHANGES:
                        self._host_change(m)
                else:
                    unsure.append(m)
                if m.get("floor"):
                    self._declare_floor(m["site"], m["door"], int(m["floor"]))
            conflicts = self._conflicts(unsure, row)
        dup = len(sort.accepted) - new - conflicts
        return StoreResult(new, dup, frozenset(doors), conflicts, sort.current, sort.rebases,
                           sort.refused)

    def _conflicts(self, messages: list[dict[str, Any]],
                   row: Any) -> int:
        """Compare events that may not have gone in with what the table holds for their
        numbers: the same content is a copy; anything else a conflict, recorded with both
        payloads, one alarm per door. Returns how many conflicts."""
        by_door: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for m in messages:
            by_door.setdefault((m["site"], m["door"]), []).append(m)
        total = 0
        for (site, door), batch in by_door.items():
            stored: dict[int, tuple[Any, ...]] = {}
            seqs = sorted({m["seq"] for m in batch})
            for i in range(0, len(seqs), 500):
                chunk = seqs[i:i + 500]
                for r in self.rows(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE "
                                   f"site = ? AND door = ? AND seq IN "
                                   f"({', '.join('?' * len(chunk))})", [site, door, *chunk]):
                    stored[r[2]] = tuple(r)
            clashes = [(m, stored[m["seq"]]) for m in batch
                       if m["seq"] in stored and row(m)[:-1] != stored[m["seq"]][:-1]]
            for m, kept in clashes:
                self.record_conflict(site, door, m["seq"], dict(zip(EVENT_COLUMNS, kept,
                                                                    strict=True)), m)
            if clashes:
                m, kept = clashes[0]
                self.raise_alarm(site, door, "event_conflict",
                                 f"{len(clashes)} event(s) differ from the stored ones with "
                                 f"their numbers (first: #{m['seq']}, kept id {kept[3]}, "
                                 f"refused id {m['id']}); both are in the conflicts table",
                                 len(clashes))
                total += len(clashes)
        return total

    def _declare_floor(self, site: str, door: str, floor: int) -> None:
        """The door signed that it holds nothing below `floor`: what the office lacks below
        it will never come. Record the range, move the mark past it, alarm what was lost."""
        marks = self._marks([(site, door)])
        mark = marks.get((site, door), 0)
        if floor - 1 <= mark:
            return
        held = self.rows("SELECT count(*) FROM events WHERE site = ? AND door = ? AND seq "
                         "BETWEEN ? AND ?", (site, door, mark + 1, floor - 1))[0][0]
        self.record_purged(site, door, mark + 1, floor - 1, "door_floor")
        self.raise_mark(site, door, floor - 1)
        missing = floor - 1 - mark - held
        if missing:
            self.raise_alarm(site, door, "events_purged",
                             f"events {mark + 1}..{floor - 1}: {missing} were deleted at the "
                             "door (retention) before the office stored them", missing)

    def raise_mark(self, site: str, door: str, seq: int, seen: str | None = None) -> None:
        """Move a door's stored mark up to `seq` (never down): only for numbers the store
        holds or that were declared gone."""
        self.execute(
            "INSERT INTO doors (site, door, stored_seq, last_seen) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (site, door) DO UPDATE SET stored_seq = CASE WHEN "
            "excluded.stored_seq > doors.stored_seq THEN excluded.stored_seq ELSE "
            "doors.stored_seq END, last_seen = COALESCE(excluded.last_seen, doors.last_seen)",
            (site, door, seq, seen))

    def advance(self, site: str, door: str) -> tuple[int, tuple[int, int] | None]:
        """Recompute the door's contiguous mark from the table; also the first hole after it.

        Run in its own transaction after the insert committed (see the module docstring).
        """
        return self.advance_many([(site, door)])[(site, door)]

    def advance_many(self, doors: Iterable[tuple[str, str]]
                     ) -> dict[tuple[str, str], tuple[int, tuple[int, int] | None]]:
        """`advance` for every door of a batch in ONE transaction (one commit, not one per
        door), and in few statements: the marks are read and raised for all the doors at
        once, and a door costs one query of its numbers past its mark (one round trip each
        to PostgreSQL, not five). Run after the batch's insert committed, as `advance`."""
        doors = sorted(set(doors))
        if not doors:
            return {}
        seen = format_ts(utcnow())
        with self.transaction():
            before = self._marks(doors)
            computed: dict[tuple[str, str], tuple[int, int | None]] = {}
            for site, door in doors:
                mark = before.get((site, door), 0)
                while True:
                    seqs = [r[0] for r in self.rows(
                        "SELECT seq FROM events WHERE site = ? AND door = ? AND seq > ? "
                        "ORDER BY seq LIMIT 5000", (site, door, mark))]
                    run = 0
                    for s in seqs:
                        if s != mark + run + 1:
                            break
                        run += 1
                    mark += run
                    if run < 5000:
                        break
                computed[(site, door)] = (mark, seqs[run] if run < len(seqs) else None)
            self.executemany(
                "INSERT INTO doors (site, door, stored_seq, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (site, door) DO UPDATE SET stored_seq = CASE WHEN "
                "excluded.stored_seq > doors.stored_seq THEN excluded.stored_seq ELSE "
                "doors.stored_seq END, last_seen = COALESCE(excluded.last_seen, "
                "doors.last_seen)", [(site, door, computed[(site, door)][0], seen)
                                     for site, door in doors])
            after = self._marks(doors)
            out = {}
            for site, door in doors:
                mark, nxt = computed[(site, door)]
                if after[(site, door)] != mark:  # another collector got further meanwhile
                    mark = after[(site, door)]
                    nxt = self.rows("SELECT min(seq) FROM events WHERE site = ? AND door = ? "
                                    "AND seq > ?", (site, door, mark))[0][0]
                out[(site, door)] = (mark, (mark + 1, nxt - 1) if nxt else None)
        return out

    def _marks(self, doors: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The stored marks of these doors (absent: never stored)."""
        sites = sorted({site for site, _ in doors})
        wanted = set(doors)
        return {(site, door): mark for site, door, mark in self.rows(
            f"SELECT site, door, stored_seq FROM doors WHERE site IN "
            f"({', '.join('?' * len(sites))})", sites) if (site, door) in wanted}

    def stored_seq(self, site: str) -> dict[str, int]:
        return {d: s for d, s in self.rows(
            "SELECT door, stored_seq FROM doors WHERE site = ? ORDER BY door", (site,))}

    def count_events(self, site: str | None = None, door: str | None = None) -> int:
        where, args = _where(site=site, door=door)
        return self.rows(f"SELECT count(*) FROM events{where}", args)[0][0]

    def events(self, site: str, *, since: str | None = None, until: str | None = None,
               types: Iterable[str] | None = None, door: str | None = None,
               limit: int | None = None, newest_first: bool = False) -> list[dict[str, Any]]:
        where, args = ["site = ?"], [site]
        if since:
            where.append("ts >= ?")
            args.append(since)
        if until:
            where.append("ts < ?")
            args.append(until)
        if door:
            where.append("door = ?")
            args.append(door)
        types = list(types or [])
        if types:
            where.append(f"type IN ({', '.join('?' * len(types))})")
            args += types
        sql = (f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE {' AND '.join(where)} "
               f"ORDER BY ts {'DESC' if newest_first else 'ASC'}, door, seq")
        if limit:
            sql += f" LIMIT {int(limit)}"
        out = []
        for r in self.rows(sql, args):
            e = dict(zip(EVENT_COLUMNS, r, strict=True))
            e["detail"] = json.loads(e["detail"])
            e["clock_trusted"] = bool(e["clock_trusted"])
            out.append(e)
        return out

    # -- host enrolments that came with the events ---------------------------------------
    def _host_change(self, m: dict[str, Any]) -> None:
        site, detail, ts = m["site"], m.get("detail") or {}, format_ts(parse_ts(m["ts"]))
        member = detail.get("member")
        if isinstance(member, dict) and member.get("id"):
            row = {"valid_from": None, "valid_until": None, "status": "active", **member}
            self.execute(_UPSERT_MEMBER + _SITE_GUARD.format(t="members"), (
                site, row["id"], row.get("name") or row["id"], row.get("plan", "subscriber"),
                row["status"], row["valid_from"], row["valid_until"], "site",
                row.get("updated_at") or ts))
        cred = detail.get("credential_hash")
        if isinstance(cred, str) and len(cred) == 64:
            if m["type"] == str(EventType.CREDENTIAL_REVOKED):
                self.execute("UPDATE credentials SET status = 'revoked', updated_at = ? "
                             "WHERE site = ? AND hash = ?", (ts, site, cred))
            elif m.get("member_id"):
                self.execute(_UPSERT_CREDENTIAL + _SITE_GUARD.format(t="credentials"), (
                    site, cred, m["member_id"], "active", detail.get("technology"), "site",
                    ts, ts))
        elif m["type"] != str(EventType.MEMBER_UPDATED) and not member:
            log.warning("%s/%s #%s: %s without member details", site, m["door"], m["seq"],
                        m["type"])

    # -- sites, members, credentials ------------------------------------------------------
    def set_site(self, site: str, *, name: str | None = None, timezone: str | None = None,
                 credential_key: str | None = None, schedule: dict[str, Any] | None = None,
                 ) -> None:
        with self.transaction():
            self.execute("INSERT INTO sites (site) VALUES (?) ON CONFLICT (site) DO NOTHING",
                         (site,))
            for column, value in (("name", name), ("timezone", timezone),
                                  ("credential_key", credential_key),
                                  ("schedule", json.dumps(schedule) if schedule else None)):
                if value is not None:
                    self.execute(f"UPDATE sites SET {column} = ? WHERE site = ?",
                                 (value, site))

    def site(self, site: str) -> dict[str, Any] | None:
        rows = self.rows("SELECT site, name, timezone, credential_key, schedule FROM sites "
                         "WHERE site = ?", (site,))
        if not rows:
            return None
        out = dict(zip(("site", "name", "timezone", "credential_key", "schedule"), rows[0],
                       strict=True))
        out["schedule"] = json.loads(out["schedule"]) if out["schedule"] else None
        return out

    def import_members(self, site: str, members: list[dict[str, Any]],
                       credentials: list[dict[str, Any]]) -> dict[str, int]:
        """Make the office's own list the truth for the site, keeping the host's enrolments.

        Office rows missing from the list are removed; host rows stay unless the list names
        them (then the list wins, a revocation included).
        """
        now = format_ts(utcnow())
        ids = {m["id"] for m in members}
        hashes = {c["hash"] for c in credentials}
        with self.transaction():
            gone_c = [h for (h,) in self.rows(
                "SELECT hash FROM credentials WHERE site = ? AND origin = 'central'", (site,))
                if h not in hashes]
            gone_m = [i for (i,) in self.rows(
                "SELECT id FROM members WHERE site = ? AND origin = 'central'", (site,))
                if i not in ids]
            self.executemany("DELETE FROM credentials WHERE site = ? AND hash = ?",
                             ((site, h) for h in gone_c))
            self.executemany("DELETE FROM credentials WHERE site = ? AND member_id = ? AND "
                             "origin = 'central'", ((site, i) for i in gone_m))
            self.executemany("DELETE FROM members WHERE site = ? AND id = ?",
                             ((site, i) for i in gone_m))
            current = {r[0]: r[1:] for r in self.rows(
                f"SELECT {', '.join(MEMBER_COLUMNS)} FROM members WHERE site = ?", (site,))}
            self.executemany(_UPSERT_MEMBER, (
                (site, m["id"], m["name"], m["plan"], m["status"], m.get("valid_from"),
                 m.get("valid_until"), "central",
                 _kept_stamp(current.get(m["id"]), m, MEMBER_COLUMNS, now))
                for m in members))
            current_c = {r[0]: r[1:] for r in self.rows(
                f"SELECT {', '.join(CREDENTIAL_COLUMNS)} FROM credentials WHERE site = ?",
                (site,))}
            self.executemany(_UPSERT_CREDENTIAL, (
                (site, c["hash"], c["member_id"], c.get("status", "active"),
                 c.get("technology"), "central",
                 current_c[c["hash"]][4] if c["hash"] in current_c else now,
                 _kept_stamp(current_c.get(c["hash"]), {"status": "active", **c},
                             CREDENTIAL_COLUMNS, now))
                for c in credentials))
        return {"members": len(members), "credentials": len(credentials),
                "removed_members": len(gone_m), "removed_credentials": len(gone_c)}

    def rules(self, site: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The site's members and credentials as they go into a snapshot."""
        members = [dict(zip(MEMBER_COLUMNS, r, strict=True)) for r in self.rows(
            f"SELECT {', '.join(MEMBER_COLUMNS)} FROM members WHERE site = ? ORDER BY id",
            (site,))]
        creds = [dict(zip(CREDENTIAL_COLUMNS, r, strict=True)) for r in self.rows(
            f"SELECT {', '.join(CREDENTIAL_COLUMNS)} FROM credentials WHERE site = ? "
            "ORDER BY hash", (site,))]
        return members, creds

    def revoke(self, site: str, *, member_id: str | None = None,
               credential_hash: str | None = None) -> int:
        """An office revocation: it wins over anything the host does later."""
        now = format_ts(utcnow())
        with self.transaction():
            if member_id:
                n = self.execute("UPDATE members SET status = 'revoked', origin = 'central', "
                                 "updated_at = ? WHERE site = ? AND id = ?",
                                 (now, site, member_id)).rowcount
            else:
                n = self.execute("UPDATE credentials SET status = 'revoked', origin = "
                                 "'central', updated_at = ? WHERE site = ? AND hash = ?",
                                 (now, site, credential_hash)).rowcount
        return n

    # -- rule versions --------------------------------------------------------------------
    def latest_version(self, site: str) -> int:
        return self.rows("SELECT COALESCE(max(version), 0) FROM rule_versions WHERE site = ?",
                         (site,))[0][0]

    def record_version(self, site: str, version: int, issued_at: str, snapshot: str,
                       delta: str | None) -> None:
        with self.transaction():
            self.execute("INSERT INTO rule_versions (site, version, issued_at, snapshot, delta, "
                         "published_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (site, version, issued_at, snapshot, delta, format_ts(utcnow())))

    def latest_snapshot(self, site: str) -> str | None:
        rows = self.rows("SELECT snapshot FROM rule_versions WHERE site = ? ORDER BY version "
                         "DESC LIMIT 1", (site,))
        return rows[0][0] if rows else None


HOST_CHANGES = frozenset({str(EventType.MEMBER_ENROLLED), str(EventType.MEMBER_UPDATED),
                          str(EventType.CREDENTIAL_REVOKED)})


def _kept_stamp(old: tuple[Any, ...] | None, new: dict[str, Any], columns: tuple[str, ...],
                now: str) -> str:
    """Keep a row's updated_at when nothing changed, so republishing is a no-op for doors."""
    if old is None:
        return now
    before = dict(zip(columns[1:], old, strict=True))
    fields = [c for c in columns[1:] if c not in ("origin", "updated_at", "enrolled_at",
                                                  "technology")]
    same = all(before.get(f) == new.get(f) for f in fields) and before.get("origin") == "central"
    return before["updated_at"] if same else now


def open_store(url: str | Path) -> CentralStore:
    return CentralStore(str(url))
