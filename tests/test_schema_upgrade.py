"""Upgrades from today's format: a door cache and an office store written by the code before
the member schema (tests/fixtures/upgrade, made by make_v0.py) migrate in place, losing nothing.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from test_central_store import private_schema

from accessd.central.publisher import build
from accessd.central.store import open_store
from accessd.decision import Plan, Status
from accessd.errors import StoreError
from accessd.protocol.signing import OfficeKey
from accessd.schema import DOOR_SCHEMA_VERSION, OFFICE_SCHEMA_VERSION
from accessd.store.cards import CardStore
from accessd.store.rules import RuleCache

FIXTURES = Path(__file__).parent / "fixtures" / "upgrade"
H = [f"{i:x}" * 64 for i in range(1, 9)]


def load(sql: Path, db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.executescript(sql.read_text())
    conn.close()


def contents(conn: sqlite3.Connection | object, tables: list[str], columns: dict) -> dict:
    return {t: sorted(map(tuple, conn.execute(  # type: ignore[attr-defined]
        f"SELECT {', '.join(columns[t])} FROM {t}").fetchall()), key=repr) for t in tables}


def old_columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')] for t in names}


def test_a_door_cache_of_today_migrates_in_place_losing_nothing(tmp_path: Path):
    db = tmp_path / "rules.db"
    load(FIXTURES / "door_v0.sql", db)
    conn = sqlite3.connect(db)
    cols = old_columns(conn)
    before = contents(conn, sorted(cols), cols)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()

    rules = RuleCache(db)  # the daemon and the CLI open it so
    try:
        c = rules.db.conn
        assert c.execute("PRAGMA user_version").fetchone()[0] == DOOR_SCHEMA_VERSION
        assert contents(c, sorted(cols), cols) == before  # every old row, every old value
        assert {"rights", "bookings"} <= set(old_columns(c))
        assert rules.version == 7 and rules.schedule() is not None
        ana = rules.lookup(H[0])
        assert ana and ana.plan is Plan.SUBSCRIBER and ana.member_status is Status.ACTIVE
        bob = rules.lookup(H[1])
        assert bob and str(bob.valid_until) == "2026-12-31"
        assert rules.lookup(H[2]).credential_status is Status.REVOKED
        assert rules.revoked()[1] >= {H[2]}
        assert rules.member("m-dee").origin == "site"
        CardStore(c)  # the card table is still the one it was
    finally:
        rules.close()
    again = RuleCache(db)  # a second open changes nothing
    try:
        assert contents(again.db.conn, sorted(cols), cols) == before
    finally:
        again.close()


def test_a_door_cache_newer_than_the_code_is_refused(tmp_path: Path):
    db = tmp_path / "rules.db"
    load(FIXTURES / "door_v0.sql", db)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {DOOR_SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this accessd"):
        RuleCache(db)


def _office_checks(store, before: dict, cols: dict) -> None:
    assert store.upgraded, "the upgrade says what it did"
    assert "sites.access added" in store.upgraded
    tables = store.tables()
    assert "rights" in tables and "bookings" in tables and "site_doors" in tables
    assert contents(store.conn, sorted(cols), cols) == before  # nothing lost or changed
    assert store.rows("SELECT value FROM schema_meta WHERE key = 'version'") == \
        [(str(OFFICE_SCHEMA_VERSION),)]
    old_snapshot = json.loads(store.latest_snapshot("morez"))["payload"]
    docs = build(store, OfficeKey.generate(), "morez", delta=True)
    assert docs.snapshot["payload"]["members"] == old_snapshot["members"]
    assert docs.snapshot["payload"]["credentials"] == old_snapshot["credentials"]
    assert docs.delta is not None and docs.changes == 0  # the upgrade changed no rule
    assert store.proposals("morez", state="all")
    assert store.is_revoked("morez", "member", "m-ana")


def test_an_office_store_of_today_migrates_in_place_on_sqlite(tmp_path: Path):
    db = tmp_path / "office.db"
    load(FIXTURES / "office_v0.sql", db)
    conn = sqlite3.connect(db)
    cols = old_columns(conn)
    before = contents(conn, sorted(cols), cols)
    conn.close()
    store = open_store(db)
    try:
        _office_checks(store, before, cols)
    finally:
        store.close()
    store = open_store(db)
    try:
        assert store.upgraded == []  # done once
    finally:
        store.close()


def test_an_office_store_of_today_migrates_in_place_on_postgresql():
    import psycopg

    for url in private_schema():
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in (FIXTURES / "office_v0_pg.sql").read_text().split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            cols: dict[str, list[str]] = {}
            for t, c in conn.execute(
                    "SELECT table_name, column_name FROM information_schema.columns WHERE "
                    "table_schema = current_schema() ORDER BY table_name, ordinal_position"):
                cols.setdefault(t, []).append(c)
            before = contents(conn, sorted(cols), cols)
        store = open_store(url)
        try:
            _office_checks(store, before, cols)
        finally:
            store.close()
