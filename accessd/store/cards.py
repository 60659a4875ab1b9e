"""What the door remembers about authenticated cards, in the rule cache's file.

Whether a credential is an authenticated card comes from the rule cache itself: its
`technology` (`ntag424`, `desfire`) travels with the credential to the office and back in
signed rules, so every door of a site knows it. This module adds one table of per-door state
the office does not need:

* `sun_counter`: the highest SUN read counter accepted from the card; a message whose counter
  is not above it is a replay and is refused;
* `key_version`: the master key version the card last proved, so the operator can see when a
  rollover is complete before retiring the old version.

It is a table of its own (not columns of `credentials`) so that rule snapshots, which
rewrite credentials, never touch it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from accessd.events import format_ts, utcnow
from accessd.store.db import transaction

AUTHENTICATED_TECHNOLOGIES = ("ntag424", "desfire")

SCHEMA = """
CREATE TABLE IF NOT EXISTS card_state (
    hash TEXT PRIMARY KEY,
    key_version INTEGER,
    sun_counter INTEGER,
    updated_at TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class CardState:
    key_version: int | None
    sun_counter: int | None


class CardStore:
    """The `card_state` table on a connection to rules.db (the rule cache's own)."""

    def __init__(self, conn: sqlite3.Connection, *, create: bool = True) -> None:
        self.conn = conn
        if create:
            conn.executescript(SCHEMA)

    def enrolled_authenticated(self, credential_hash: str) -> bool:
        row = self.conn.execute("SELECT technology FROM credentials WHERE hash = ?",
                                (credential_hash,)).fetchone()
        return row is not None and row[0] in AUTHENTICATED_TECHNOLOGIES

    def state(self, credential_hash: str) -> CardState | None:
        try:
            row = self.conn.execute("SELECT key_version, sun_counter FROM card_state "
                                    "WHERE hash = ?", (credential_hash,)).fetchone()
        except sqlite3.OperationalError:  # a read-only cache created before this table
            return None
        return CardState(row[0], row[1]) if row else None

    def record(self, credential_hash: str, *, key_version: int | None = None,
               sun_counter: int | None = None) -> None:
        """Remember what a card proved; a SUN counter only ever goes up."""
        with transaction(self.conn) as conn:
            conn.execute(
                "INSERT INTO card_state (hash, key_version, sun_counter, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(hash) DO UPDATE SET "
                "key_version = coalesce(excluded.key_version, key_version), "
                "sun_counter = CASE WHEN excluded.sun_counter IS NULL THEN sun_counter "
                "WHEN sun_counter IS NULL THEN excluded.sun_counter "
                "ELSE max(sun_counter, excluded.sun_counter) END, "
                "updated_at = excluded.updated_at",
                (credential_hash, key_version, sun_counter, format_ts(utcnow())))

    def versions(self) -> dict[int, int]:
        """{key version: number of enrolled authenticated cards last seen at it}."""
        rows = self.conn.execute(
            "SELECT s.key_version, count(*) FROM card_state s JOIN credentials c "
            "ON c.hash = s.hash WHERE c.status != 'revoked' AND s.key_version IS NOT NULL "
            "GROUP BY s.key_version").fetchall()
        return {int(v): int(n) for v, n in rows}
