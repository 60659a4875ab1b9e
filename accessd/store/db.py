"""Opening SQLite the way an SD card that loses power needs it.

WAL with `synchronous=FULL`: a commit returns only once it is on the medium, a reader never
blocks the writer (the CLI enrols while the daemon decides), and a torn write at power loss is
rolled back at the next open instead of corrupting the file.

The door keeps each connection's page cache small (`limit_page_cache`, called by `accessd
run`): a Pi has little memory, the operating system's page cache holds the file's pages
anyway, and a lookup touches a few pages of a B-tree whose upper levels stay cached. A
`Database` is the plain `sqlite3` connection and the little the stores need of it: the door
imports no wrapper library for it.

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
from typing import Any

from accessd.errors import StoreError

DB_MODE = 0o600  # rules, journal, office store: the service user only
DIR_MODE = 0o750
DOOR_CACHE_KIB = 256  # the daemon's connections (`limit_page_cache`); SQLite's default: 2000
_cache_kib: int | None = None  # None: SQLite's default


def limit_page_cache(kib: int | None = DOOR_CACHE_KIB) -> None:
    """Connections opened from now on in this process keep at most `kib` KiB of pages
    (None: SQLite's default). For the daemon, whose memory is the Pi's; a process that
    writes a whole rule snapshot in one transaction (the apply child) keeps the default."""
    global _cache_kib
    _cache_kib = kib


class Database:
    """One SQLite connection (`conn`), as the stores use it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def close(self) -> None:
        self.conn.close()


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


def connect(path: Path | str, *, readonly: bool = False) -> Database:
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
        if _cache_kib is not None:
            conn.execute(f"PRAGMA cache_size=-{int(_cache_kib)}")
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open database: {exc}") from exc
    return Database(conn)


def integrity_ok(db: Database) -> bool:
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
