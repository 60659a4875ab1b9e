"""Opening SQLite the way an SD card that loses power needs it.

WAL with `synchronous=FULL`: a commit returns only once it is on the medium, a reader never
blocks the writer (the CLI enrols while the daemon decides), and a torn write at power loss is
rolled back at the next open instead of corrupting the file.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

from accessd.errors import StoreError


def connect(path: Path | str, *, readonly: bool = False) -> sqlite_utils.Database:
    if str(path) != ":memory:":
        p = Path(path)
        if not readonly:
            p.parent.mkdir(parents=True, exist_ok=True)
    try:
        if readonly:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10,
                                   check_same_thread=False, isolation_level=None)
        else:
            conn = sqlite3.connect(str(path), timeout=10, check_same_thread=False,
                                   isolation_level=None)
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open database: {exc}") from exc
    return sqlite_utils.Database(conn)


def integrity_ok(db: sqlite_utils.Database) -> bool:
    return db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One atomic write: BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlock
    between the daemon and the CLI); any exception rolls everything back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")  # a failed COMMIT (disk full) is rolled back below too
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
