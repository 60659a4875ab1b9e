"""Applying the office's rule documents to the door's cache: all of it, or none of it.

Order of checks: size, JSON, depth, signature, schema, site, version, calendar. Only then one
transaction replaces the rules; the daemon keeps answering taps from the previous rules until
the commit (WAL readers see the old snapshot), and a failure anywhere rolls everything back.

Host enrolments the office may not know yet are kept: a member whose local change was made
after the document was issued, or journalled after the last event the office had stored
(`stored_seq`), keeps its local rows, except that an office revocation still applies.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from accessd.errors import ProtocolError, ScheduleError
from accessd.events import EventType
from accessd.protocol.codec import SNAPSHOT_MAX_BYTES
from accessd.protocol.rules import read_rule_document
from accessd.protocol.signing import PublicKeys, reason_of
from accessd.schedule import check_calendar
from accessd.store.journal import Journal
from accessd.store.rules import RuleCache

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
                 max_bytes: int = SNAPSHOT_MAX_BYTES) -> None:
        self.rules, self.keys, self.site, self.door = rules, keys, site, door
        self.journal, self.max_bytes = journal, max_bytes

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
                keep = self._unsynced(conn, doc)
                if doc["kind"] == "snapshot":
                    self._snapshot(conn, doc, keep)
                else:
                    self._delta(conn, doc, keep)
                self._meta(conn, doc)
        except (sqlite3.IntegrityError, ValueError) as exc:
            return Outcome(reason="inconsistent", request_snapshot=doc["kind"] == "delta",
                           detail={**info, "error": str(exc)})
        counts = self.rules.counts()
        return Outcome(applied=True, detail={**info, **counts, "kept_local": len(keep)})

    # -- host enrolments the office may not have yet ------------------------------------
    def _unsynced(self, conn: sqlite3.Connection, doc: dict[str, Any]) -> set[str]:
        issued = doc["issued_at"]
        keep = {r[0] for r in conn.execute(
            "SELECT id FROM members WHERE origin = 'site' AND updated_at > ? UNION "
            "SELECT member_id FROM credentials WHERE origin = 'site' AND updated_at > ?",
            (issued, issued))}
        stored = doc.get("stored_seq", {}).get(self.door)
        if stored is not None and self.journal is not None:
            marks = ",".join("?" * len(HOST_CHANGES))
            keep |= {r[0] for r in self.journal.conn.execute(
                f"SELECT DISTINCT member_id FROM events WHERE seq > ? AND type IN ({marks}) "
                "AND member_id IS NOT NULL", (stored, *HOST_CHANGES))}
        local = {r[0] for r in conn.execute("SELECT id FROM members")}
        keep &= local
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS sync_keep (id TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM sync_keep")
        conn.executemany("INSERT INTO sync_keep VALUES (?)", ((k,) for k in keep))
        return keep

    # -- writing ------------------------------------------------------------------------
    def _snapshot(self, conn: sqlite3.Connection, doc: dict[str, Any], keep: set[str]) -> None:
        """Make the cache what the snapshot says, writing only the rows that differ.

        The same end state as deleting every row the host does not keep and inserting the
        document's: a member or card absent from the document goes (with the cards of a member
        that goes), a kept member's rows stay (an office revocation still applies), every
        other row becomes the document's. Rows that are already so are not touched: a
        snapshot that changes 1 % of the members writes 1 % of the rows (and of the WAL).
        An office row without timestamps (the wire form leaves them out) keeps the ones it
        has when its content is unchanged, and takes `issued_at` when it is new or changed.
        """
        issued = doc["issued_at"]
        have_m = {r[0]: r[1:] for r in conn.execute(
            "SELECT id, name, plan, status, valid_from, valid_until, origin, updated_at "
            "FROM members")}
        have_c = {r[0]: r[1:] for r in conn.execute(
            "SELECT hash, member_id, status, technology, origin, enrolled_at, updated_at "
            "FROM credentials")}

        members, revoke_members, wanted_m = [], [], set()
        for m in doc["members"]:
            mid = m["id"]
            wanted_m.add(mid)
            if mid in keep:
                if m["status"] == "revoked":  # an office revocation wins over local changes
                    old = have_m.get(mid)
                    if old is not None and old[2] != "revoked":
                        revoke_members.append((mid,))
                continue
            row = (m["name"], m["plan"], m["status"], m.get("valid_from"),
                   m.get("valid_until"), m.get("origin", "central"))
            old = have_m.get(mid)
            if "updated_at" in m:
                stamp = m["updated_at"]
            elif old is not None and old[:6] == row:
                continue  # unchanged office row: keep it and its timestamp
            else:
                stamp = issued
            if old is None or old != (*row, stamp):
                members.append((mid, *row, stamp))
        gone_m = [(i,) for i in have_m if i not in wanted_m and i not in keep]

        creds, revoke_creds, wanted_c = [], [], set()
        for c in doc["credentials"]:
            h = c["hash"]
            wanted_c.add(h)
            old = have_c.get(h)
            if old is not None and old[0] in keep:  # the host's card stays the host's
                if c["status"] == "revoked" and old[1] != "revoked":
                    revoke_creds.append((h,))
                continue
            row = (c["member_id"], c["status"], c.get("technology"), c.get("origin", "central"))
            if "updated_at" in c or "enrolled_at" in c:
                stamps = (c.get("enrolled_at", issued), c.get("updated_at", issued))
            elif old is not None and old[:4] == row:
                continue
            else:
                stamps = (old[4] if old is not None else issued, issued)
            if old is None or old != (*row, *stamps):
                creds.append((h, *row, *stamps))
        gone_c = [(h,) for h, old in have_c.items() if h not in wanted_c and old[0] not in keep]

        # cards first, then members (a departing member's remaining cards go by cascade);
        # members are written before the cards that refer to them
        conn.executemany("DELETE FROM credentials WHERE hash = ?", gone_c)
        conn.executemany("DELETE FROM members WHERE id = ?", gone_m)
        conn.executemany(
            "INSERT INTO members (id, name, plan, status, valid_from, valid_until, origin, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "name = excluded.name, plan = excluded.plan, status = excluded.status, "
            "valid_from = excluded.valid_from, valid_until = excluded.valid_until, "
            "origin = excluded.origin, updated_at = excluded.updated_at", members)
        conn.executemany("UPDATE members SET status = 'revoked' WHERE id = ?", revoke_members)
        conn.executemany(
            "INSERT INTO credentials (hash, member_id, status, technology, origin, "
            "enrolled_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(hash) DO "
            "UPDATE SET member_id = excluded.member_id, status = excluded.status, "
            "technology = excluded.technology, origin = excluded.origin, "
            "enrolled_at = excluded.enrolled_at, updated_at = excluded.updated_at", creds)
        conn.executemany("UPDATE credentials SET status = 'revoked' WHERE hash = ?",
                         revoke_creds)
        if "schedule" in doc:
            self.rules.set_meta(conn, "schedule", json.dumps(doc["schedule"], sort_keys=True))
        else:
            conn.execute("DELETE FROM meta WHERE key = 'schedule'")

    def _delta(self, conn: sqlite3.Connection, doc: dict[str, Any], keep: set[str]) -> None:
        self._upsert(conn, doc, doc.get("members", []), doc.get("credentials", []), keep)
        conn.executemany(
            "DELETE FROM credentials WHERE hash = ? AND member_id NOT IN "
            "(SELECT id FROM sync_keep)", ((h,) for h in doc.get("removed_credentials", [])))
        conn.executemany("DELETE FROM members WHERE id = ? AND id NOT IN "
                         "(SELECT id FROM sync_keep)",
                         ((m,) for m in doc.get("removed_members", [])))
        if "schedule" in doc:
            self.rules.set_meta(conn, "schedule", json.dumps(doc["schedule"], sort_keys=True))

    def _upsert(self, conn: sqlite3.Connection, doc: dict[str, Any],
                members: Iterable[dict[str, Any]], credentials: Iterable[dict[str, Any]],
                keep: set[str]) -> None:
        issued = doc["issued_at"]
        revoke_members, revoke_creds = [], []
        rows = []
        for m in members:
            if m["id"] in keep:
                if m["status"] == "revoked":  # an office revocation wins over local changes
                    revoke_members.append((m["id"],))
                continue
            rows.append((m["id"], m["name"], m["plan"], m["status"], m.get("valid_from"),
                         m.get("valid_until"), m.get("origin", "central"),
                         m.get("updated_at", issued)))
        conn.executemany(
            "INSERT INTO members (id, name, plan, status, valid_from, valid_until, origin, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "name = excluded.name, plan = excluded.plan, status = excluded.status, "
            "valid_from = excluded.valid_from, valid_until = excluded.valid_until, "
            "origin = excluded.origin, updated_at = excluded.updated_at", rows)
        conn.executemany("UPDATE members SET status = 'revoked' WHERE id = ?", revoke_members)
        rows = []
        for c in credentials:
            if c["status"] == "revoked":
                revoke_creds.append((c["hash"],))
            rows.append((c["hash"], c["member_id"], c["status"], c.get("technology"),
                         c.get("origin", "central"), c.get("enrolled_at", issued),
                         c.get("updated_at", issued)))
        # a card held locally by a member the office does not know yet keeps its local row
        conn.executemany(
            "INSERT INTO credentials (hash, member_id, status, technology, origin, "
            "enrolled_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(hash) DO "
            "UPDATE SET member_id = excluded.member_id, status = excluded.status, "
            "technology = excluded.technology, origin = excluded.origin, "
            "enrolled_at = excluded.enrolled_at, updated_at = excluded.updated_at "
            "WHERE credentials.member_id NOT IN (SELECT id FROM sync_keep)", rows)
        conn.executemany("UPDATE credentials SET status = 'revoked' WHERE hash = ?",
                         revoke_creds)

    def _meta(self, conn: sqlite3.Connection, doc: dict[str, Any]) -> None:
        self.rules.set_meta(conn, "rule_version", str(doc["version"]))
        self.rules.set_meta(conn, "rule_issued_at", doc["issued_at"])
        self.rules.set_meta(conn, "rule_kind", doc["kind"])
