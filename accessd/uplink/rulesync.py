"""Applying the office's rule documents to the door's cache: all of it, or none of it.

Order of checks: size, JSON, depth, signature, schema, site, version, calendar. Only then one
transaction replaces the rules; the daemon keeps answering taps from the previous rules until
the commit (WAL readers see the old snapshot), and a failure anywhere rolls everything back.

What the host changed here and the office has not decided yet is kept (docs/protocol.md):
a change journalled after the last event the office had stored (`stored_seq`), or one the
office lists as still pending (`pending`); without a journal to ask, a change made after the
document was issued. The host's
own rows (`origin` site) stay as they are, and a restriction the host made to an office row
(a suspension) stays, but nothing the host did ever outranks an office restriction. Everything
else becomes what the document says, and its rows become the office's. A decided change is
settled by the document itself: approved, its rows are in it; rejected, they are not, and go.

Revocation is terminal (accessd.rights): a document that says `active` or `suspended` for a
member or card revoked here, even one it had removed since, leaves it revoked; the outcome
lists it (`refused_unrevoke`) and the uplink journals that with `rules.applied`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from accessd.errors import ProtocolError, ScheduleError
from accessd.events import EventType, format_ts, utcnow
from accessd.protocol.codec import SNAPSHOT_MAX_BYTES
from accessd.protocol.rules import read_rule_document
from accessd.protocol.signing import PublicKeys, reason_of
from accessd.rights import stricter
from accessd.schedule import check_calendar
from accessd.schema import BOOKINGS, CREDENTIALS, MEMBERS, RIGHTS, Table, columns_sql, upsert
from accessd.store.journal import Journal
from accessd.store.rules import RuleCache, tombstone

log = logging.getLogger(__name__)

HOST_CHANGES = (str(EventType.MEMBER_ENROLLED), str(EventType.MEMBER_UPDATED),
                str(EventType.CREDENTIAL_REVOKED))


@dataclass(frozen=True)
class Outcome:
    """What became of one document: applied, ignored (already had it) or rejected."""

    applied: bool = False
    ignored: bool = False
    reason: str | None = None  # rejection reason code (docs/protocol.md)
    detail: dict[str, Any] = field(default_factory=dict)
    request_snapshot: bool = False


class RuleApplier:
    def __init__(self, rules: RuleCache, keys: PublicKeys | None, *, site: str, door: str,
                 journal: Journal | None = None,
                 max_bytes: int = SNAPSHOT_MAX_BYTES,
                 others: dict[str, Journal] | None = None) -> None:
        """`journal` is this door's; `others` the journals of the other doors of this Pi,
        which share the rule cache: the host's changes journalled at any of them are kept
        the same way (each door's numbers against that door's `stored_seq` and `pending`)."""
        self.rules, self.keys, self.site, self.door = rules, keys, site, door
        self.journal, self.max_bytes = journal, max_bytes
        self.others = dict(others or {})

    def handle(self, raw: bytes, topic_kind: str) -> Outcome:
        """Check and apply a document that arrived on the `topic_kind` topic."""
        if self.keys is None:
            return Outcome(reason="no_key", detail={"error": "no office public key configured"
                                                    " (mqtt.rules_public_key_file)"})
        try:
            doc = read_rule_document(raw, self.keys, site=self.site, max_bytes=self.max_bytes)
        except ProtocolError as exc:
            return Outcome(reason=reason_of(exc), detail={"error": str(exc), "bytes": len(raw)})
        if doc["kind"] != topic_kind:
            return Outcome(reason="wrong_topic",
                           detail={"error": f"a {doc['kind']} on the {topic_kind} topic"})
        current = self.rules.version
        info = {"kind": doc["kind"], "version": doc["version"], "have_version": current,
                "issued_at": doc["issued_at"]}
        if doc["version"] == current:
            return Outcome(ignored=True, detail=info)
        if doc["version"] < current:
            return Outcome(reason="stale_version", detail=info)
        if doc["kind"] == "delta" and doc["base_version"] != current:
            return Outcome(reason="version_gap", request_snapshot=True,
                           detail={**info, "base_version": doc["base_version"]})
        try:
            check_calendar(doc)  # an unknown zone or an impossible date: refused whole
        except ScheduleError as exc:
            return Outcome(reason="bad_calendar", detail={**info, "error": str(exc)})
        try:
            with self.rules.transaction() as conn:
                merge = _Merge(conn, doc, self._unsettled(conn, doc))
                merge.write(conn)
                for key in ("schedule", "access"):
                    if key in doc:
                        self.rules.set_meta(conn, key, json.dumps(doc[key], sort_keys=True))
                    elif doc["kind"] == "snapshot":
                        conn.execute("DELETE FROM meta WHERE key = ?", (key,))
                self._meta(conn, doc)
        except (sqlite3.IntegrityError, ValueError) as exc:
            return Outcome(reason="inconsistent", request_snapshot=doc["kind"] == "delta",
                           detail={**info, "error": str(exc)})
        counts = self.rules.counts()
        detail = {**info, **counts, "kept_local": merge.kept}
        if merge.refused_members or merge.refused_credentials:
            detail["refused_unrevoke"] = {"members": sorted(merge.refused_members),
                                          "credentials": sorted(h[:12] for h in
                                                                merge.refused_credentials)}
            log.warning("rules version %s says active for what was revoked here; kept "
                        "revoked: %s", doc["version"], detail["refused_unrevoke"])
        return Outcome(applied=True, detail=detail)

    # -- what the host changed here that the office has not decided yet --------------------
    def _unsettled(self, conn: sqlite3.Connection, doc: dict[str, Any]) -> Unsettled:
        members: set[str] = set()
        statuses: set[str] = set()
        creds: set[str] = set()
        if self.journal is None:  # no journal to ask (tools, tests): the host's clock decides
            issued = doc["issued_at"]
            for mid, origin in conn.execute("SELECT id, origin FROM members WHERE "
                                            "updated_at > ?", (issued,)):
                (members if origin == "site" else statuses).add(mid)
            for h, mid, origin in conn.execute(
                    "SELECT hash, member_id, origin FROM credentials WHERE updated_at > ?",
                    (issued,)):
                creds.add(h)
                if origin == "site":
                    members.add(mid)
        else:
            rows = []
            for door, journal in {self.door: self.journal, **self.others}.items():
                rows += _host_changes(journal, doc, door)
            for etype, mid, detail in rows:
                if mid:
                    members.add(mid)
                    if etype == str(EventType.MEMBER_UPDATED):
                        statuses.add(mid)
                try:
                    h = json.loads(detail).get("credential_hash")
                except (ValueError, AttributeError):
                    h = None
                if isinstance(h, str):
                    creds.add(h)
        return Unsettled(frozenset(members), frozenset(statuses), frozenset(creds))

    def _meta(self, conn: sqlite3.Connection, doc: dict[str, Any]) -> None:
        self.rules.set_meta(conn, "rule_version", str(doc["version"]))
        self.rules.set_meta(conn, "rule_issued_at", doc["issued_at"])
        self.rules.set_meta(conn, "rule_kind", doc["kind"])


def _host_changes(journal: Journal, doc: dict[str, Any], door: str) -> list[Any]:
    """The host changes journalled at `door` that the document does not settle: after the
    office's mark for that door, or listed as pending for it."""
    stored = _count(doc.get("stored_seq", {}).get(door)) or 0
    pending = [s for s in doc.get("pending", {}).get(door, []) if _count(s)]
    marks = ",".join("?" * len(HOST_CHANGES))
    rows = journal.conn.execute(
        f"SELECT type, member_id, detail FROM events WHERE seq > ? AND type IN "
        f"({marks})", (stored, *HOST_CHANGES)).fetchall()
    for i in range(0, len(pending), 500):
        chunk = pending[i:i + 500]
        rows += journal.conn.execute(
            f"SELECT type, member_id, detail FROM events WHERE seq IN "
            f"({','.join('?' * len(chunk))}) AND type IN ({marks})",
            (*chunk, *HOST_CHANGES)).fetchall()
    return rows


def _count(value: Any) -> int | None:
    """A sequence number from a document: an integer, never a boolean or a float."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


@dataclass(frozen=True)
class Unsettled:
    """The host's changes at this door that the office has not decided yet."""

    members: frozenset[str]  # members a change names: the host's own rows of them stay
    statuses: frozenset[str]  # members whose status the host changed: a restriction stays
    credentials: frozenset[str]  # cards a change names: the host's own rows of them stay


_MEMBER = MEMBERS.names("door")  # id, the content, then origin and updated_at
_CARD = CREDENTIALS.names("door")  # hash, the content, then origin, enrolled_at, updated_at
_M, _C = columns_sql(_MEMBER), columns_sql(_CARD)
_M_CONTENT = [n for n in MEMBERS.names("door", meta=False) if n != "id"]
_C_CONTENT = [n for n in CREDENTIALS.names("door", meta=False) if n != "hash"]
_M_STATUS, _M_ORIGIN = _M_CONTENT.index("status"), len(_M_CONTENT)
_C_MEMBER, _C_STATUS, _C_ORIGIN = (_C_CONTENT.index("member_id"), _C_CONTENT.index("status"),
                                   len(_C_CONTENT))
_UPSERT_M = upsert(MEMBERS, office=False)
_UPSERT_C = upsert(CREDENTIALS, office=False)


class _Merge:
    """The rows one document leaves in the cache, computed before anything is written.

    Only the rows that differ are written: a snapshot that changes 1 % of the members writes
    1 % of the rows (and of the WAL). A row the document brings is written with the
    document's `issued_at` when it is new or changed, and keeps its timestamp when it is not;
    the wire's own `origin` and timestamps are not used (every row in a document is the
    office's). A snapshot removes the office rows it does not name; a delta removes the ones
    it lists. Either removes the host's own rows that are settled and not in the document:
    the office decided on them, and did not take them. Rights and bookings are the office's
    alone: a snapshot's are all of them, a delta changes the ones it names.

    Rows are tuples in the schema's column order (accessd.schema): the content fields, then
    the bookkeeping ones.
    """

    def __init__(self, conn: sqlite3.Connection, doc: dict[str, Any],
                 unsettled: Unsettled) -> None:
        self.refused_members: list[str] = []
        self.refused_credentials: list[str] = []
        issued, snapshot = doc["issued_at"], doc["kind"] == "snapshot"
        revoked_m, revoked_c = set(), set()
        for kind, key in conn.execute("SELECT kind, key FROM revocations"):
            (revoked_m if kind == "member" else revoked_c).add(key)
        have_m = {r[0]: r[1:] for r in conn.execute(f"SELECT {_M} FROM members")}
        have_c = {r[0]: r[1:] for r in conn.execute(f"SELECT {_C} FROM credentials")}
        # the host's own members that stay the host's
        ours = {mid for mid, old in have_m.items() if old[_M_ORIGIN] == "site"
                and mid in unsettled.members}
        kept: set[str] = set(ours)  # members some of whose host rows stay

        self.members: list[tuple[Any, ...]] = []
        wanted_m = set()
        for m in doc.get("members", []):
            mid = m["id"]
            wanted_m.add(mid)
            old = have_m.get(mid)
            if mid in ours:
                row = [*old[:_M_ORIGIN], "site"]  # the host's own member, still undecided
                row[_M_STATUS] = stricter(old[_M_STATUS], m["status"])
            else:
                row = [*(m.get(n) for n in _M_CONTENT), "central"]
                if old is not None and mid in unsettled.statuses:
                    row[_M_STATUS] = stricter(row[_M_STATUS], old[_M_STATUS])
            if mid in revoked_m or (old is not None and old[_M_STATUS] == "revoked"):
                if m["status"] != "revoked":
                    self.refused_members.append(mid)
                row[_M_STATUS] = "revoked"
            if old is None or tuple(old[:_M_ORIGIN + 1]) != tuple(row):
                self.members.append((mid, *row, issued))
        removed_m = set(doc.get("removed_members", []))
        self.gone_m = []
        for mid, old in have_m.items():
            if mid in wanted_m or mid in ours:
                continue
            if snapshot or old[_M_ORIGIN] == "site" or mid in removed_m:
                self.gone_m.append((mid,))

        self.creds: list[tuple[Any, ...]] = []
        wanted_c = set()
        for c in doc.get("credentials", []):
            h = c["hash"]
            wanted_c.add(h)
            old = have_c.get(h)
            row = [*(c.get(n) for n in _C_CONTENT), "central"]
            if old is not None and h in unsettled.credentials:
                row[_C_STATUS] = stricter(row[_C_STATUS], old[_C_STATUS])
            if h in revoked_c or (old is not None and old[_C_STATUS] == "revoked"):
                if c["status"] != "revoked":
                    self.refused_credentials.append(h)
                row[_C_STATUS] = "revoked"
            if old is None:
                self.creds.append((h, *row, issued, issued))
            elif tuple(old[:_C_ORIGIN + 1]) != tuple(row):
                self.creds.append((h, *row, old[_C_ORIGIN + 1], issued))
        removed_c = set(doc.get("removed_credentials", []))
        self.gone_c = []
        for h, old in have_c.items():
            if h in wanted_c:
                continue
            if old[_C_ORIGIN] == "site" and h in unsettled.credentials:
                kept.add(old[_C_MEMBER])  # a card the host added, still undecided
            elif snapshot or old[_C_ORIGIN] == "site" or h in removed_c:
                self.gone_c.append((h,))
        self.kept = len(kept)
        self.revoked = ([("member", r[0]) for r in self.members
                         if r[1 + _M_STATUS] == "revoked"]
                        + [("credential", r[0]) for r in self.creds
                           if r[1 + _C_STATUS] == "revoked"])
        self.others = [_Rows(conn, doc, table) for table in (RIGHTS, BOOKINGS)]

    def write(self, conn: sqlite3.Connection) -> None:
        # cards first, then members (a departing member's remaining cards go by cascade);
        # members are written before the cards that refer to them
        conn.executemany("DELETE FROM credentials WHERE hash = ?", self.gone_c)
        conn.executemany("DELETE FROM members WHERE id = ?", self.gone_m)
        conn.executemany(_UPSERT_M, self.members)
        conn.executemany(_UPSERT_C, self.creds)
        for kind, key in self.revoked:
            tombstone(conn, kind, key, format_ts(utcnow()))
        for rows in self.others:  # after the members they name
            rows.write(conn)


class _Rows:
    """The office-only rows of one table (rights, bookings) a document leaves: a snapshot's
    are the whole table, a delta upserts its rows and deletes its `removed_<table>`; only
    rows that differ are written."""

    def __init__(self, conn: sqlite3.Connection, doc: dict[str, Any], table: Table) -> None:
        self.table = table
        names = table.names("door")
        have = {r[0]: r for r in conn.execute(
            f"SELECT {columns_sql(names)} FROM {table.name}")}
        wanted = {r[table.key]: tuple(r.get(n) for n in names)
                  for r in doc.get(table.name, ())}
        self.upserts = [row for key, row in wanted.items() if have.get(key) != row]
        if doc["kind"] == "snapshot":
            self.gone = [(k,) for k in have if k not in wanted]
        else:
            self.gone = [(k,) for k in doc.get(f"removed_{table.name}", ()) if k in have
                         and k not in wanted]

    def write(self, conn: sqlite3.Connection) -> None:
        conn.executemany(f"DELETE FROM {self.table.name} WHERE {self.table.key} = ?",
                         self.gone)
        conn.executemany(upsert(self.table, office=False), self.upserts)
