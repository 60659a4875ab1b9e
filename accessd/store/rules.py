"""The local rule cache: members, their credentials, the schedule and the rule version.

The daemon answers every tap from this file and nothing else, so the door works with no
network. Writers (the host's CLI, the rule sync) change it in single transactions; the daemon
reads each tap afresh through an indexed lookup, so an enrolment takes effect at once without
a restart, and a rule snapshot is seen entirely or not at all.

`origin` says whose a row is: `central` rows came in an office document and belong to the
office; `site` rows are the host's, made here and not (yet) accepted by the office. The host
may restrict an office member here (suspend or revoke it) and add a card to one, but
never raise one (docs/security.md). Every revocation also leaves a row in `revocations`, which
outlives the member or card, so that nothing brings either back (accessd.rights).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from accessd.decision import Booking, Grant, Plan, Status, Window
from accessd.errors import (
    CorruptRecord,
    DuplicateCredential,
    MemberNotFound,
    OfficeOwnedError,
    RevokedError,
    StoreError,
)
from accessd.events import format_ts, utcnow
from accessd.rights import Change, Verdict, restricts, transition
from accessd.schedule import Schedule, parse_booking, parse_window
from accessd.schema import door_ddl, migrate_door
from accessd.store.db import connect, transaction

log = logging.getLogger(__name__)

# members, credentials, rights and bookings come from the one member schema (accessd.schema)
SCHEMA = door_ddl() + """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revocations (
    kind TEXT NOT NULL CHECK (kind IN ('member', 'credential')),
    key TEXT NOT NULL,
    revoked_at TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
"""

_LOOKUP = """
SELECT c.status, m.id, m.name, m.plan, m.status, m.valid_from, m.valid_until
FROM credentials c JOIN members m ON m.id = c.member_id WHERE c.hash = ?
"""
# a member's rights and restrictions at a door (or every door), and bookings not yet over of
# that door (of any door at an entrance): one indexed query after the card's
_WINDOWS = """
SELECT effect, door, days, "start", "end", valid_from, valid_until, NULL FROM rights
WHERE member_id = ?1 AND door IN (?2, '*')
UNION ALL
SELECT NULL, door, NULL, "start", "end", NULL, NULL, id FROM bookings
WHERE member_id = ?1 AND "end" > ?3 AND (door = ?2 OR ?4)
"""
_ALL_WINDOWS = """
SELECT effect, door, days, "start", "end", valid_from, valid_until, NULL FROM rights
WHERE member_id = ?1
UNION ALL
SELECT NULL, door, NULL, "start", "end", NULL, NULL, id FROM bookings
WHERE member_id = ?1 AND "end" > ?2
"""


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str
    plan: Plan
    status: Status
    valid_from: date | None
    valid_until: date | None
    origin: str
    updated_at: str
    credentials: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "plan": str(self.plan), "status": str(self.status),
            "valid_from": self.valid_from.isoformat() if self.valid_from else None,
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
            "origin": self.origin, "updated_at": self.updated_at,
            "credentials": list(self.credentials),
        }


def _date(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def new_member_id() -> str:
    return "m-" + secrets.token_hex(5)


class RuleCache:
    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = path
        self.db = connect(path, readonly=readonly)
        if not readonly:
            try:
                done = migrate_door(self.db.conn)  # an older cache is upgraded in place
            except sqlite3.Error as exc:
                raise StoreError(f"{path}: cannot upgrade the rule cache: {exc}") from exc
            if done:
                log.warning("%s: rule cache upgraded: %s", path, "; ".join(done))
            self.db.conn.executescript(SCHEMA)
        self._lookup_conn = self.db.conn

    def close(self) -> None:
        self.db.conn.close()

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One atomic change: all of it reaches the disk or none of it does."""
        return transaction(self.db.conn)

    # -- the hot path -------------------------------------------------------------------
    def lookup(self, credential_hash: str, door: str | None = None, *,
               entrance: bool = False, since: str | None = None) -> Grant | None:
        """The card's member, with (given a `door`) the member's rights and restrictions at
        that door and the bookings of that door (of every door at an `entrance`) that end
        after `since` (a wire instant; default: a day ago). CorruptRecord when a row cannot
        be used."""
        row = self._lookup_conn.execute(_LOOKUP, (credential_hash,)).fetchone()
        if row is None:
            return None
        cstatus, mid, name, plan, mstatus, vfrom, vuntil = row
        try:
            windows, bookings = self.windows(mid, door, entrance=entrance, since=since) \
                if door is not None else ((), ())
            return Grant(Status(cstatus), mid, name, Plan(plan), Status(mstatus),
                         _date(vfrom), _date(vuntil), windows, bookings)
        except (ValueError, TypeError) as exc:  # a row written by hand or an older version
            raise CorruptRecord(f"member {mid!r}: unusable row ({exc}): plan {plan!r}, status "
                                f"{mstatus!r}, card {cstatus!r}, valid {vfrom!r} to {vuntil!r}",
                                member_id=mid,
                                member_name=name, credential_status=cstatus,
                                member_status=mstatus) from exc

    def windows(self, member_id: str, door: str | None, *, entrance: bool = False,
                since: str | None = None) -> tuple[tuple[Window, ...], tuple[Booking, ...]]:
        """A member's rights and restrictions at `door` (or every door), and bookings of
        `door` (any door at an `entrance`) ending after `since`; every door's when `door`
        is None. ScheduleError (a ValueError) for a row that means nothing."""
        since = since or (utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        windows: list[Window] = []
        bookings: list[Booking] = []
        sql, args = (_WINDOWS, (member_id, door, since, entrance)) if door is not None else \
            (_ALL_WINDOWS, (member_id, since))
        for effect, wdoor, days, start, end, wfrom, wuntil, booking in \
                self._lookup_conn.execute(sql, args):
            if booking is None:
                windows.append(parse_window({
                    "effect": effect, "door": wdoor, "days": days, "start": start, "end": end,
                    "valid_from": wfrom, "valid_until": wuntil}))
            else:
                bookings.append(parse_booking({"door": wdoor, "start": start, "end": end},
                                              f"booking {booking!r}"))
        return tuple(windows), tuple(bookings)

    def windowed_members(self) -> set[str]:
        """The members that have rights, restrictions or bookings (office rows: they change
        only with a rule document)."""
        return {r[0] for r in self._lookup_conn.execute(
            "SELECT member_id FROM rights UNION SELECT member_id FROM bookings")}

    def changed_marker(self) -> tuple[int, int]:
        """Changes as cheap as a pragma: another connection's commit (data_version) or this
        connection's own (total_changes). Equal markers: nothing was written."""
        return (self._lookup_conn.execute("PRAGMA data_version").fetchone()[0],
                self._lookup_conn.total_changes)

    # -- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def version(self) -> int:
        return int(self.get_meta("rule_version", "0") or 0)

    def schedule(self) -> Schedule | None:
        """The schedule published by the central office, if any (else the config's)."""
        raw = self.get_meta("schedule")
        return Schedule.from_dict(json.loads(raw)) if raw else None

    # -- the host's changes -------------------------------------------------------------
    def enroll(self, *, name: str, plan: Plan, credential_hash: str | None,
               valid_from: date | None = None, valid_until: date | None = None,
               member_id: str | None = None, technology: str | None = None,
               origin: str = "site") -> Member:
        """Create a member (or add a card to an existing one) in one transaction.

        A card that was ever revoked here is refused (a new card is needed), and so is a
        revoked member. An office member keeps the office's name, plan and dates: the host
        may add a card to it (the office decides whether other doors take it), not change it.
        """
        if valid_from and valid_until and valid_until < valid_from:
            raise ValueError("the validity ends before it starts")
        now = format_ts(utcnow())
        with self.transaction() as conn:
            if credential_hash is not None:
                taken = conn.execute("SELECT member_id, status FROM credentials WHERE hash = ?",
                                     (credential_hash,)).fetchone()
                if (taken and taken[1] == "revoked") or _tombstoned(conn, "credential",
                                                                    credential_hash):
                    raise RevokedError("this card was revoked: a revoked card is never "
                                       "enrolled again (enrol a new card)")
                if taken:
                    raise DuplicateCredential(f"this card is already enrolled to {taken[0]}")
            row = conn.execute("SELECT status, origin, plan, valid_from, valid_until FROM "
                               "members WHERE id = ?", (member_id,)).fetchone() \
                if member_id else None
            if member_id and (_tombstoned(conn, "member", member_id)
                              or (row and row[0] == "revoked")):
                raise RevokedError(f"member {member_id} is revoked for good: a revoked member "
                                   "gets no card and no change")
            if row is not None and row[1] == "central":
                given = (str(plan), _iso(valid_from), _iso(valid_until))
                if any(g is not None and g != o for g, o in zip(given, row[2:], strict=True)):
                    raise OfficeOwnedError(
                        f"member {member_id} is the office's (plan {row[2]}, valid "
                        f"{row[3] or '…'} → {row[4] or '…'}): its plan and dates change at "
                        "the office; enrol the card without changing them")
                if credential_hash is None:
                    raise OfficeOwnedError(f"member {member_id} is the office's: its name, "
                                           "plan and dates change at the office")
            elif row is not None:
                conn.execute("UPDATE members SET name = ?, plan = ?, valid_from = ?, "
                             "valid_until = ?, updated_at = ? WHERE id = ?",
                             (name, str(plan), _iso(valid_from), _iso(valid_until), now,
                              member_id))
            else:
                member_id = member_id or new_member_id()
                conn.execute(
                    "INSERT INTO members (id, name, plan, status, valid_from, valid_until, "
                    "origin, updated_at) VALUES (?, ?, ?, 'active', ?, ?, ?, ?)",
                    (member_id, name, str(plan), _iso(valid_from), _iso(valid_until), origin,
                     now))
            if credential_hash is not None:
                conn.execute(
                    "INSERT INTO credentials (hash, member_id, status, technology, origin, "
                    "enrolled_at, updated_at) VALUES (?, ?, 'active', ?, ?, ?, ?)",
                    (credential_hash, member_id, technology, origin, now, now))
        assert member_id is not None
        return self.member(member_id)

    def set_member_status(self, member_id: str, status: Status) -> tuple[Member, Verdict]:
        """Suspend, resume or revoke a member, as far as `accessd.rights` allows.

        Already so: nothing is written (UNCHANGED). Out of `revoked`: RevokedError. Making
        an office member less restricted (a resume) is not the host's to do: nothing is
        written here and the verdict is PROPOSED (the caller journals the request).
        """
        with self.transaction() as conn:
            row = conn.execute("SELECT status, origin FROM members WHERE id = ?",
                               (member_id,)).fetchone()
            if row is None:
                raise MemberNotFound(f"no member {member_id!r}")
            verdict = transition(row[0], status)
            if verdict.change is Change.REFUSED:
                raise RevokedError(f"member {member_id}: {verdict.why}")
            if verdict.allowed and row[1] == "central" and not restricts(row[0], status):
                verdict = Verdict(Change.PROPOSED, f"member {member_id} is the office's "
                                                   f"({row[0]}): only the office can make it "
                                                   f"{status}")
            elif verdict.allowed:
                now = format_ts(utcnow())
                conn.execute("UPDATE members SET status = ?, updated_at = ? WHERE id = ?",
                             (str(status), now, member_id))
                if status is Status.REVOKED:
                    tombstone(conn, "member", member_id, now)
        return self.member(member_id), verdict

    def revoke_credential(self, credential_hash_prefix: str) -> tuple[Member, Verdict, str]:
        """Revoke one card, named by its (short) keyed hash: (member, verdict, full hash)."""
        with self.transaction() as conn:
            rows = conn.execute("SELECT hash, member_id, status FROM credentials "
                                "WHERE hash LIKE ?",
                                (credential_hash_prefix.lower() + "%",)).fetchall()
            if not rows:
                raise MemberNotFound(f"no credential {credential_hash_prefix!r}")
            if len(rows) > 1:
                raise MemberNotFound(f"{credential_hash_prefix!r} matches several credentials")
            full, member_id, current = rows[0]
            verdict = transition(current, Status.REVOKED, "card")
            if verdict.allowed:
                now = format_ts(utcnow())
                conn.execute("UPDATE credentials SET status = 'revoked', updated_at = ? "
                             "WHERE hash = ?", (now, full))
                tombstone(conn, "credential", full, now)
        return self.member(member_id), verdict, full

    def revoked(self) -> tuple[set[str], set[str]]:
        """Every member id and card hash ever revoked here (kept after the rows go)."""
        return _revoked(self.db.conn)

    # -- reading ------------------------------------------------------------------------
    def member(self, member_id: str) -> Member:
        row = self.db.conn.execute(
            "SELECT id, name, plan, status, valid_from, valid_until, origin, updated_at "
            "FROM members WHERE id = ?", (member_id,)).fetchone()
        if row is None:
            raise MemberNotFound(f"no member {member_id!r}")
        creds = tuple(
            {"credential": h[:12], "status": s, "technology": t, "origin": o,
             "enrolled_at": e}
            for h, s, t, o, e in self.db.conn.execute(
                "SELECT hash, status, technology, origin, enrolled_at FROM credentials "
                "WHERE member_id = ? ORDER BY enrolled_at", (member_id,)))
        return _member(row, creds)

    def find_by_credential(self, credential_hash: str) -> Member | None:
        row = self.db.conn.execute("SELECT member_id FROM credentials WHERE hash = ?",
                                   (credential_hash,)).fetchone()
        return self.member(row[0]) if row else None

    def members(self, *, plan: str | None = None, status: str | None = None,
                search: str | None = None) -> list[Member]:
        where, args = [], []
        if plan:
            where.append("plan = ?")
            args.append(plan)
        if status:
            where.append("status = ?")
            args.append(status)
        if search:
            where.append("(name LIKE ? OR id LIKE ?)")
            args += [f"%{search}%", f"%{search}%"]
        sql = ("SELECT id, name, plan, status, valid_from, valid_until, origin, updated_at "
               "FROM members" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY name COLLATE NOCASE")
        return [_member(r, ()) for r in self.db.conn.execute(sql, args)]

    def counts(self) -> dict[str, int]:
        c = self.db.conn
        return {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("members", "credentials", "rights", "bookings")}

    # -- bulk (rule sync, benchmarks) ---------------------------------------------------
    def bulk_load(self, conn: sqlite3.Connection, members: Iterable[dict[str, Any]],
                  credentials: Iterable[dict[str, Any]]) -> None:
        """Insert or replace many rows inside a caller's transaction."""
        now = format_ts(utcnow())
        conn.executemany(
            "INSERT OR REPLACE INTO members (id, name, plan, status, valid_from, valid_until, "
            "origin, updated_at) VALUES (:id, :name, :plan, :status, :valid_from, "
            ":valid_until, :origin, :updated_at)",
            ({"valid_from": None, "valid_until": None, "origin": "central",
              "updated_at": now, "status": "active", **m} for m in members))
        conn.executemany(
            "INSERT OR REPLACE INTO credentials (hash, member_id, status, technology, origin, "
            "enrolled_at, updated_at) VALUES (:hash, :member_id, :status, :technology, "
            ":origin, :enrolled_at, :updated_at)",
            ({"technology": None, "origin": "central", "enrolled_at": now,
              "updated_at": now, "status": "active", **c} for c in credentials))


def tombstone(conn: sqlite3.Connection, kind: str, key: str, when: str) -> None:
    """Remember a revocation for good, inside the caller's transaction."""
    conn.execute("INSERT INTO revocations (kind, key, revoked_at) VALUES (?, ?, ?) "
                 "ON CONFLICT (kind, key) DO NOTHING", (kind, key, when))


def _tombstoned(conn: sqlite3.Connection, kind: str, key: str) -> bool:
    return conn.execute("SELECT 1 FROM revocations WHERE kind = ? AND key = ?",
                        (kind, key)).fetchone() is not None


def _revoked(conn: sqlite3.Connection) -> tuple[set[str], set[str]]:
    members, creds = set(), set()
    for kind, key in conn.execute("SELECT kind, key FROM revocations"):
        (members if kind == "member" else creds).add(key)
    members |= {r[0] for r in conn.execute("SELECT id FROM members WHERE status = 'revoked'")}
    creds |= {r[0] for r in conn.execute(
        "SELECT hash FROM credentials WHERE status = 'revoked'")}
    return members, creds


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


def _member(row: tuple[Any, ...], creds: tuple[dict[str, Any], ...]) -> Member:
    mid, name, plan, status, vfrom, vuntil, origin, updated = row
    try:
        return Member(mid, name, Plan(plan), Status(status), _date(vfrom), _date(vuntil),
                      origin, updated, creds)
    except ValueError as exc:
        raise StoreError(f"member {mid!r}: corrupt row: {exc}") from exc


def open_rules(path: Path | str, *, readonly: bool = False) -> RuleCache:
    return RuleCache(path, readonly=readonly)

