"""Opening SQLite the way an SD card that loses power needs it.

WAL with `synchronous=FULL`: a commit returns only once it is on the medium, a reader never
blocks the writer (the CLI enrols while the daemon decides), and a torn write at power loss is
rolled back at the next open instead of corrupting the file.

Database files hold personal data and card hashes: they are created with mode 0600 whatever
the umask (SQLite gives the -wal and -shm files the database file's mode), and a file an
older version left readable by others is tightened at the next open.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

from accessd.errors import StoreError

DB_MODE = 0o600  # rules, journal, office store: the service user only
DIR_MODE = 0o750


def prepare_file(path: Path, mode: int = DB_MODE) -> None:
    """Create `path` (and its folder) with exactly `mode`, not what the umask leaves; tighten
    an existing one we own, and its -wal and -shm files, to `mode` at most."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            try:
                st = p.stat()
                if st.st_mode & 0o777 & ~mode and st.st_uid == os.geteuid():
                    os.chmod(p, stat.S_IMODE(st.st_mode) & mode)
            except OSError:
                continue  # absent, or not ours to change: SQLite reports what matters
        return
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def connect(path: Path | str, *, readonly: bool = False) -> sqlite_utils.Database:
    if str(path) != ":memory:" and not readonly:
        try:
            prepare_file(Path(path))
        except OSError as exc:
            raise StoreError(f"{path}: cannot create database: {exc}") from exc
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
