"""The one member schema (accessd.schema): every form of a record agrees with it."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import pytest
from test_central_store import a_store

from accessd.central.members import COLUMNS, read_members
from accessd.cli.main import build_parser
from accessd.protocol.codec import schema as load_schema
from accessd.protocol.codec import validate
from accessd.protocol.rules import BOOKING_FIELDS, MEMBER_FIELDS, RIGHT_FIELDS
from accessd.schema import (
    BOOKINGS,
    CREDENTIALS,
    MEMBERS,
    RECORDS,
    RIGHTS,
    check_value,
    door_ddl,
    json_schema_defs,
    members_file_columns,
    upsert,
)
from accessd.store.rules import RuleCache
from accessd.uplink import rulesync


def test_rules_json_rows_are_the_schema_s():
    """schemas/rules.json holds exactly the derived rows (python -m accessd.schema --write)."""
    defs = load_schema("rules")["$defs"]
    for name, derived in json_schema_defs().items():
        assert defs[name] == derived, f"{name}: run python -m accessd.schema --write"
    for t in RECORDS:
        assert load_schema("rules")["properties"][t.wire]["items"] == \
            {"$ref": f"#/$defs/{t.wire[:-1]}"}


def test_the_door_s_tables_are_the_schema_s(tmp_path: Path):
    rules = RuleCache(tmp_path / "rules.db")
    try:
        for t in RECORDS:
            got = [r[1] for r in rules.db.conn.execute(f"PRAGMA table_info({t.name})")]
            assert got == list(t.names("door")), t.name
        assert rules.db.conn.execute("PRAGMA user_version").fetchone()[0] >= 2
    finally:
        rules.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_the_office_s_tables_are_the_schema_s(tmp_path: Path, kind: str):
    for store in a_store(kind, tmp_path):
        tables = store.tables()
        for t in RECORDS:
            assert tables[t.name] == ["site", *t.names("office")], (kind, t.name)


def test_a_member_s_email_stays_at_the_office(tmp_path: Path):
    """The field added through the schema alone: office DDL, members file, CLI, not the wire."""
    assert "email" in MEMBERS.names("office") and "email" not in MEMBER_FIELDS
    f = tmp_path / "m.csv"
    f.write_text("id,name,plan,email\na,Alice,occasional,alice@example.org\n")
    members, _ = read_members(f, None)
    from accessd.central.cli import main
    from accessd.central.store import open_store

    db = str(tmp_path / "office.db")
    s = open_store(db)
    s.import_members("s", members, [])
    s.close()
    assert main(["central", "member", "set", "--store", db, "--site", "s", "--id", "b",
                 "--name", "Bob", "--plan", "subscriber", "--email", "bob@example.org"]) == 0
    s = open_store(db)
    try:
        assert [m["email"] for m in s.members("s")] == ["alice@example.org", "bob@example.org"]
        from accessd.central.publisher import build
        from accessd.protocol.signing import OfficeKey

        assert "@" not in json.dumps(build(s, OfficeKey.generate(), "s").snapshot)
    finally:
        s.close()


def test_office_only_fields_never_reach_a_door():
    assert "note" in RIGHTS.names("office") and "status" in BOOKINGS.names("office")
    assert "note" not in RIGHT_FIELDS and "status" not in BOOKING_FIELDS
    assert "note" not in json.dumps(load_schema("rules")["$defs"]["right"])
    assert set(MEMBER_FIELDS) == set(MEMBERS.names("door"))


def test_the_wire_fields_are_the_door_s_columns():
    for t in RECORDS:
        assert set(t.wire_names()) == set(t.names("door")), t.name


@pytest.mark.parametrize("table", RECORDS, ids=lambda t: t.name)
def test_the_door_upsert_writes_and_rewrites_a_row(tmp_path: Path, table):
    conn = sqlite3.connect(":memory:")
    conn.executescript(door_ddl())
    conn.execute("PRAGMA foreign_keys=OFF")
    names = table.names("door")
    row = {n: "x" for n in names}
    row.update({"plan": "occasional", "status": "active", "origin": "central",
                "effect": "deny"} if table in (MEMBERS, CREDENTIALS, RIGHTS) else {})
    sql = upsert(table, office=False)
    conn.execute(sql, [row[n] for n in names])
    row2 = {**row, names[1]: "y"}
    conn.execute(sql, [row2[n] for n in names])
    assert conn.execute(f"SELECT * FROM {table.name}").fetchall() == \
        [tuple(row2[n] for n in names)]


def test_members_file_columns_come_from_the_schema(tmp_path: Path):
    assert members_file_columns() == COLUMNS
    assert COLUMNS[:6] == ("id", "name", "plan", "status", "valid_from", "valid_until")
    f = tmp_path / "m.csv"
    f.write_text("id,name,plan,valid_until,credential_hash\n"
                 f"a,Alice,occasional,2026-12-31,{'a' * 64}\n")
    members, creds = read_members(f, None)
    assert members == [{"id": "a", "name": "Alice", "plan": "occasional", "status": "active",
                        "valid_from": None, "valid_until": "2026-12-31"}]
    assert creds[0]["hash"] == "a" * 64


def _options(parser: argparse.ArgumentParser, command: str) -> dict[str, argparse.Action]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[command]._actions}


def test_the_host_s_enroll_options_come_from_the_schema():
    opts = _options(build_parser(), "enroll")
    for name in ("name", "plan", "valid_from", "valid_until"):
        f = MEMBERS.get(name)
        assert f.cli in opts[name].option_strings and opts[name].help == f.help
    assert opts["plan"].choices == list(MEMBERS.get("plan").choices)


@pytest.mark.parametrize(("table", "field", "value", "ok"), [
    (MEMBERS, "plan", "vip", False), (MEMBERS, "valid_from", "2026-02-30", False),
    (MEMBERS, "valid_until", " 2026-02-28 ", "2026-02-28"), (RIGHTS, "days", "Tue,mon", "mon,tue"),
    (RIGHTS, "days", "mon,funday", False), (RIGHTS, "start", "24:00", False),
    (RIGHTS, "end", "24:00", "24:00"), (RIGHTS, "door", "*", "*"),
    (BOOKINGS, "door", "*", False), (BOOKINGS, "start", "2026-03-29T08:00:00Z",
                                      "2026-03-29T08:00:00Z"),
    (CREDENTIALS, "hash", "A" * 64, "a" * 64), (MEMBERS, "name", "", False),
])
def test_values_are_checked_as_the_schema_says(table, field, value, ok):
    f = table.get(field)
    if ok is False:
        with pytest.raises(ValueError):
            check_value(f, value)
    else:
        assert check_value(f, value) == ok


def test_rights_and_bookings_rows_travel_and_are_checked():
    doc = {"v": 1, "kind": "delta", "site": "s", "version": 2, "base_version": 1,
           "issued_at": "2026-03-01T00:00:00.000Z",
           "rights": [{"id": "r1", "member_id": "m", "door": "*", "effect": "deny",
                       "days": "sat,sun"}],
           "bookings": [{"id": "b1", "member_id": "m", "door": "room-a",
                         "start": "2026-03-29T08:00:00Z", "end": "2026-03-29T09:00:00Z"}]}
    validate("rules", doc)
    bad = json.loads(json.dumps(doc))
    bad["bookings"][0]["door"] = "*"
    with pytest.raises(Exception, match="bookings/0/door"):
        validate("rules", bad)


def test_rulesync_columns_are_the_schema_s():
    assert MEMBERS.names("door") == rulesync._MEMBER
    assert CREDENTIALS.names("door") == rulesync._CARD


def test_docs_list_every_members_file_column():
    text = (Path(__file__).parents[1] / "docs" / "central.md").read_text()
    table = text[text.index("## Members file"):text.index("```csv")]
    documented = {c for line in table.splitlines() if line.startswith("| `")
                  for c in line.split("|")[1].replace("`", "").replace(",", " ").split()}
    assert documented == set(members_file_columns())


def test_an_office_member_is_set_field_by_field(tmp_path: Path):
    from accessd.central.cli import main

    store = str(tmp_path / "office.db")
    assert main(["central", "member", "set", "--store", store, "--site", "s", "--id", "m1",
                 "--name", "Zoé", "--plan", "occasional", "--until", "2026-12-31"]) == 0
    assert main(["central", "member", "set", "--store", store, "--site", "s", "--id", "m1",
                 "--plan", "subscriber"]) == 0
    from accessd.central.store import open_store

    s = open_store(store)
    try:
        (row,) = s.members("s")
        assert (row["name"], row["plan"], row["valid_until"], row["origin"]) == \
            ("Zoé", "subscriber", "2026-12-31", "central")
        with pytest.raises(ValueError, match="valid_until"):
            s.set_member("s", "m1", {"valid_until": "2026-02-30"})
    finally:
        s.close()
    assert main(["central", "member", "set", "--store", store, "--site", "s", "--id", "m2",
                 "--name", "X"]) == 1  # a new member needs a plan
