"""Commands from the office at the door: verified, fresh, and each accepted only once.

Seen command ids are kept in the rule cache's file (table `seen_commands`, owned here) until
they expire, so a command recorded off the wire and replayed is refused even after the
daemon restarts; once expired, the expiry check refuses it anyway.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from accessd.errors import ProtocolError
from accessd.events import format_ts, parse_ts
from accessd.protocol.commands import verify_command
from accessd.protocol.signing import PublicKeys, reason_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_commands (
    id TEXT PRIMARY KEY,
    expires_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class CommandOutcome:
    accepted: bool
    command: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class CommandHandler:
    """Checks command envelopes; the caller carries out the accepted ones."""

    def __init__(self, conn: sqlite3.Connection, keys: PublicKeys | None, *, site: str,
                 door: str, now: Callable[[], datetime | None]) -> None:
        self.conn, self.keys, self.site, self.door, self.now = conn, keys, site, door, now
        conn.executescript(SCHEMA)

    def check(self, raw: bytes) -> CommandOutcome:
        if self.keys is None:
            return CommandOutcome(False, reason="no_key",
                                  detail={"error": "no office public key configured"})
        now = self.now()
        try:
            cmd = verify_command(raw, self.keys, site=self.site, door=self.door, now=now)
        except ProtocolError as exc:
            return CommandOutcome(False, reason=reason_of(exc), detail={"error": str(exc)})
        info = {"id": cmd["id"], "type": cmd["type"], "operator": cmd["operator"]}
        assert now is not None
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("DELETE FROM seen_commands WHERE expires_at <= ?",
                              (format_ts(now),))
            cur = self.conn.execute("INSERT INTO seen_commands (id, expires_at) VALUES (?, ?) "
                                    "ON CONFLICT(id) DO NOTHING",
                                    (cmd["id"], format_ts(parse_ts(cmd["expires_at"]))))
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        if cur.rowcount == 0:
            return CommandOutcome(False, cmd, reason="replayed",
                                  detail={**info, "error": "this command id was already used"})
        return CommandOutcome(True, cmd, detail=info)
