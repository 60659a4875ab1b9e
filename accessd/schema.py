"""One definition of the member model: members, credentials, rights (time windows) and bookings.

Every place that stores, sends or reads these records derives its form from the tables below
instead of restating them: the door's rule cache DDL (`door_ddl`), the office's SQLite and
PostgreSQL DDL (`office_ddl`), the rows of rule documents in `schemas/rules.json`
(`json_schema_defs`, kept in the file and checked by tests/test_schema.py; `python -m
accessd.schema --write` rewrites it), the upserts (`upsert`), the members file's columns and
value checks (`members_file_columns`, `check_value`) and command-line options (`add_options`).

A field says where it lives: `door` fields are kept in the door's cache and travel in rule
documents; `office` fields stay at the office (a member's e-mail, used to match calendar
bookings, never reaches a door in a public hallway). A field marked `meta` is bookkeeping
(who owns a row, when it changed): stored at both ends, optional on the wire.

Adding a field is one line here (plus its documentation): the tables grow it at the next open
(`migrate_*`: new columns are added in place, nothing is rewritten or lost), the wire form and
the members file take it, the options appear. A new field must be nullable or have a default,
so that rows written before it stay valid.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PLANS = ("subscriber", "occasional")
STATUSES = ("active", "suspended", "revoked")
ORIGINS = ("site", "central")
EFFECTS = ("allow", "deny")
BOOKING_STATES = ("active", "cancelled")
DOOR_KINDS = ("entrance", "room", "meeting_room")

# the wire patterns (ASCII digits: \d would take other scripts' digits)
HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
HHMM_END = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
DAYS = r"^(mon|tue|wed|thu|fri|sat|sun)(,(mon|tue|wed|thu|fri|sat|sun)){0,6}$"
INSTANT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
DOOR_REF = r"^(\*|[a-z0-9][a-z0-9_-]{0,62})$"
DOOR_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"

DOOR_SCHEMA_VERSION = 2  # PRAGMA user_version of rules.db (0: before this module, 1: unused)
OFFICE_SCHEMA_VERSION = 2  # schema_meta.version of the office store (absent: before it)


@dataclass(frozen=True)
class Field:
    """One column of a record, and what it is on the wire, in the members file, on the CLI.

    `kind`: text, id, enum, date, hash, instant, hhmm, hhmm_end, days, door, stamp.
    `where`: "door" (door cache, wire, office), "office" (office only).
    `required`: NOT NULL in SQL and required on the wire (for `door` fields).
    `csv`: the members-file column (None: not in the file); `cli`: the option's flag.
    """

    name: str
    kind: str = "text"
    required: bool = False
    where: str = "door"
    meta: bool = False  # bookkeeping: optional on the wire, never from a members file
    choices: tuple[str, ...] = ()
    max_length: int | None = None
    default: str | None = None  # SQL default (text)
    csv: str | None = None
    cli: str | None = None
    help: str = ""
    check_door: bool = True  # CHECK (enum) in the door's cache

    @property
    def on_wire(self) -> bool:
        return self.where == "door"


@dataclass(frozen=True)
class Table:
    name: str
    key: str  # the primary key's column (with `site` before it at the office)
    fields: tuple[Field, ...]
    references: dict[str, str] = field(default_factory=dict)  # column -> "table(column)"
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (name, columns) at the door
    wire: str | None = None  # the rule document's array ("members"); None: not sent
    office_only: bool = False

    def names(self, where: str = "door", *, meta: bool = True) -> tuple[str, ...]:
        """Column names of the door's table (`door`) or the office's (`office`)."""
        return tuple(f.name for f in self.fields
                     if (where == "office" or f.where == "door") and (meta or not f.meta))

    def wire_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.on_wire)

    def get(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")


MEMBERS = Table("members", "id", (
    Field("id", "id", required=True, csv="id", help="member id"),
    Field("name", "text", required=True, max_length=200, csv="name", cli="--name",
          help="member's display name"),
    Field("plan", "enum", required=True, choices=PLANS, csv="plan", cli="--plan",
          help="subscriber: 24/7 at the plan's doors; occasional: opening hours only"),
    Field("status", "enum", required=True, choices=STATUSES, csv="status"),
    Field("valid_from", "date", csv="valid_from", cli="--from",
          help="first valid day, YYYY-MM-DD (site time)"),
    Field("valid_until", "date", csv="valid_until", cli="--until",
          help="last valid day, inclusive, YYYY-MM-DD (site time): valid until midnight at "
               "its end"),
    Field("email", "text", where="office", max_length=254, csv="email", cli="--email",
          help="e-mail address (kept at the office): matches calendar bookings to the "
               "member"),
    Field("origin", "enum", required=True, meta=True, choices=ORIGINS, default="site"),
    Field("updated_at", "stamp", required=True, meta=True),
), wire="members")

CREDENTIALS = Table("credentials", "hash", (
    Field("hash", "hash", required=True),
    Field("member_id", "id", required=True),
    Field("status", "enum", required=True, choices=STATUSES),
    Field("technology", "text"),
    Field("origin", "enum", required=True, meta=True, choices=ORIGINS, default="site"),
    Field("enrolled_at", "stamp", required=True, meta=True),
    Field("updated_at", "stamp", required=True, meta=True),
), references={"member_id": "members(id)"}, indexes=(("credentials_member", ("member_id",)),),
    wire="credentials")

RIGHTS = Table("rights", "id", (
    Field("id", "id", required=True),
    Field("member_id", "id", required=True, cli="--member", help="member id"),
    Field("door", "door", required=True, cli="--door",
          help="the door it applies to, or * for every door"),
    Field("effect", "enum", required=True, choices=EFFECTS, cli="--effect",
          help="allow: an extra right; deny: a restriction (wins over every grant)"),
    Field("days", "days", cli="--days",
          help="weekdays, e.g. mon,tue,wed (default: every day)"),
    Field("start", "hhmm", cli="--start", help="HH:MM site time (default 00:00)"),
    Field("end", "hhmm_end", cli="--end", help="HH:MM site time, 24:00 allowed, after "
                                                "--start (default 24:00)"),
    Field("valid_from", "date", cli="--valid-from", help="first day, YYYY-MM-DD"),
    Field("valid_until", "date", cli="--valid-until", help="last day, inclusive"),
    Field("note", "text", where="office", max_length=200, cli="--note",
          help="why (kept at the office)"),
    Field("updated_at", "stamp", where="office", meta=True),
), references={"member_id": "members(id)"}, indexes=(("rights_member", ("member_id",)),),
    wire="rights")

BOOKINGS = Table("bookings", "id", (
    Field("id", "id", required=True),
    Field("member_id", "id", required=True, cli="--member", help="member id"),
    Field("door", "door_id", required=True, cli="--door", help="the booked room's door"),
    Field("start", "instant", required=True, cli="--start",
          help="start, site time YYYY-MM-DDTHH:MM (or with an offset)"),
    Field("end", "instant", required=True, cli="--end", help="end, after the start"),
    Field("status", "enum", where="office", choices=BOOKING_STATES, default="active"),
    Field("source", "text", where="office", max_length=200),
    Field("summary", "text", where="office", max_length=200, cli="--summary",
          help="what the booking is for (kept at the office)"),
    Field("updated_at", "stamp", where="office", meta=True),
), references={"member_id": "members(id)"},
    indexes=(("bookings_member", ("member_id",)), ("bookings_door_end", ("door", "end"))),
    wire="bookings")

RECORDS = (MEMBERS, CREDENTIALS, RIGHTS, BOOKINGS)
BY_NAME = {t.name: t for t in RECORDS}

# the raw card columns of a members file (one row per card), after the member's columns
CARD_COLUMNS = ("card", "credential_hash", "card_status", "technology")


# -- SQL -------------------------------------------------------------------------------------
def _column(f: Field, *, door: bool) -> str:
    kind = "TEXT"
    parts = [f'"{f.name}"' if f.name in ("end", "start") else f.name, kind]
    if f.required:
        parts.append("NOT NULL")
    if f.default is not None:
        parts.append(f"DEFAULT '{f.default}'")
    if door and f.choices and f.check_door:
        quoted = ", ".join(f"'{c}'" for c in f.choices)
        parts.append(f"CHECK ({f.name} IN ({quoted}))")
    return " ".join(parts)


def door_ddl() -> str:
    """CREATE statements of the door's rule cache for every record (IF NOT EXISTS)."""
    out = []
    for t in RECORDS:
        cols = []
        for f in t.fields:
            if f.where != "door":
                continue
            col = _column(f, door=True)
            if f.name == t.key:
                col = col.replace(" NOT NULL", "") + " PRIMARY KEY"
            if f.name in t.references:
                col += f" REFERENCES {t.references[f.name]} ON DELETE CASCADE"
            cols.append(col)
        out.append(f"CREATE TABLE IF NOT EXISTS {t.name} (\n    " + ",\n    ".join(cols)
                   + "\n);")
        for name, cols_ in t.indexes:
            out.append(f"CREATE INDEX IF NOT EXISTS {name} ON {t.name}({columns_sql(cols_)});")
    return "\n".join(out) + "\n"


def office_ddl() -> str:
    """CREATE statements of the office's tables for every record, keyed by (site, key): the
    same text for SQLite and PostgreSQL (TEXT columns, `start`/`end` quoted)."""
    out = []
    for t in RECORDS:
        cols = ["site TEXT NOT NULL"] + [_column(f, door=False) for f in t.fields]
        cols.append(f"PRIMARY KEY (site, {t.key})")
        out.append(f"CREATE TABLE IF NOT EXISTS {t.name} (\n    " + ",\n    ".join(cols)
                   + "\n);")
        for name, cols_ in t.indexes:
            if t.name == "credentials":
                continue  # the office finds cards by (site, hash) and members by (site, id)
            out.append(f"CREATE INDEX IF NOT EXISTS {name.replace('_', '_site_', 1)} ON "
                       f"{t.name} (site, {columns_sql(cols_)});")
    return "\n".join(out) + "\n"


def _q(name: str) -> str:
    return f'"{name}"' if name in ("start", "end") else name


def columns_sql(names: Iterable[str]) -> str:
    """A column list for SQL (quotes the reserved words `start` and `end`)."""
    return ", ".join(_q(n) for n in names)


def upsert(table: Table, *, office: bool, columns: Sequence[str] | None = None,
           keep: Iterable[str] = ()) -> str:
    """INSERT ... ON CONFLICT DO UPDATE of `columns` (default: every column of that end);
    the columns in `keep` are written for a new row and left alone on an existing one."""
    names = list(columns or table.names("office" if office else "door"))
    if office:
        names = ["site", *names]
    key = f"(site, {table.key})" if office else f"({table.key})"
    skip = {"site", table.key, *keep}
    sets = ", ".join(f"{_q(n)} = excluded.{_q(n)}" for n in names if n not in skip)
    return (f"INSERT INTO {table.name} ({columns_sql(names)}) VALUES "
            f"({', '.join('?' * len(names))}) ON CONFLICT {key} DO UPDATE SET {sets}")


def _existing_columns(conn: Any, table: str, dialect: str) -> list[str] | None:
    if dialect == "postgres":
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = %s ORDER BY ordinal_position", (table,)
        ).fetchall()
    else:
        rows = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
        rows = [(r[1],) for r in rows]
    return [r[0] for r in rows] or None


def missing_columns(conn: Any, *, office: bool, dialect: str = "sqlite"
                    ) -> list[tuple[Table, Field]]:
    """The schema's columns an existing table lacks (a table written by an older version)."""
    out = []
    for t in RECORDS:
        have = _existing_columns(conn, t.name, dialect)
        if have is None:
            continue  # created whole by the DDL
        for f in t.fields:
            if (office or f.where == "door") and f.name not in have:
                out.append((t, f))
    return out


def add_column_sql(t: Table, f: Field, *, office: bool) -> str:
    col = _column(f, door=not office)
    if f.required and f.default is None:
        raise ValueError(f"{t.name}.{f.name}: a new column must be nullable or have a default")
    return f"ALTER TABLE {t.name} ADD COLUMN {col}"


def migrate_door(conn: sqlite3.Connection) -> list[str]:
    """Bring a door's rule cache to DOOR_SCHEMA_VERSION in place, in one transaction.

    Today's layout is the one `door_ddl` writes; a cache written before a field existed gets
    the column (NULL or its default in existing rows), a missing table is created; nothing
    is rewritten. Returns what was done (for the log). Refuses a newer cache than this code.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > DOOR_SCHEMA_VERSION:
        from accessd.errors import StoreError

        raise StoreError(f"the rule cache has schema version {version}, newer than this "
                         f"accessd ({DOOR_SCHEMA_VERSION}): upgrade accessd")
    done: list[str] = []
    missing = missing_columns(conn, office=False)
    fresh = _existing_columns(conn, "members", "sqlite") is None  # a new cache: nothing to say
    if version == DOOR_SCHEMA_VERSION and not missing:
        conn.executescript(door_ddl())  # cheap: every statement IF NOT EXISTS
        return done
    conn.execute("BEGIN IMMEDIATE")
    try:
        for t, f in missing_columns(conn, office=False):
            conn.execute(add_column_sql(t, f, office=False))
            done.append(f"{t.name}.{f.name} added")
        for statement in door_ddl().split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {DOOR_SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    if version != DOOR_SCHEMA_VERSION and not fresh:
        done.append(f"schema version {version} -> {DOOR_SCHEMA_VERSION}")
    return done


# -- JSON Schema of rule documents -----------------------------------------------------------
_WIRE_KIND: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "minLength": 1, "maxLength": 64},
    "date": {"$ref": "#/$defs/date"},
    "hash": {"$ref": "#/$defs/hash"},
    "stamp": {"type": "string"},
    "text": {"type": "string"},
    "instant": {"type": "string", "pattern": INSTANT},
    "hhmm": {"type": "string", "pattern": HHMM},
    "hhmm_end": {"type": "string", "pattern": HHMM_END},
    "days": {"type": "string", "pattern": DAYS},
    "door": {"type": "string", "pattern": DOOR_REF},
    "door_id": {"type": "string", "pattern": DOOR_ID},
}


def _wire_field(f: Field) -> dict[str, Any]:
    if f.kind == "enum":
        return {"$ref": "#/$defs/status"} if f.choices == STATUSES else {"enum": list(f.choices)}
    if f.kind == "text":
        out: dict[str, Any] = {"type": "string" if f.required else ["string", "null"]}
        if f.max_length:
            out = {"type": "string", "maxLength": f.max_length} if f.required else \
                {"type": ["string", "null"], "maxLength": f.max_length}
        return out
    return dict(_WIRE_KIND[f.kind])


def json_schema_defs() -> dict[str, Any]:
    """The `$defs` of one row of each record, as schemas/rules.json holds them."""
    out = {}
    for t in RECORDS:
        names = t.wire_names()
        out[t.wire[:-1] if t.wire else t.name] = {
            "type": "object",
            "required": [n for n in names if t.get(n).required and not t.get(n).meta],
            "properties": {n: _wire_field(t.get(n)) for n in names},
            "additionalProperties": False,
        }
    return out


def schema_file() -> Path:
    return Path(__file__).with_name("schemas") / "rules.json"


def write_json_schema(path: Path | None = None) -> bool:
    """Rewrite the row `$defs` of schemas/rules.json from the tables; True if it changed."""
    path = path or schema_file()
    doc = json.loads(path.read_text("utf-8"))
    defs = {**doc["$defs"], **json_schema_defs()}
    if defs == doc["$defs"]:
        return False
    doc["$defs"] = defs
    path.write_text(dump_schema(doc), "utf-8")
    return True


def dump_schema(doc: Any, depth: int = 0) -> str:
    """JSON with a line per key down to the properties of a definition, compact below."""
    pad = "  " * (depth + 1)
    if isinstance(doc, dict) and depth < 4 and any(isinstance(v, dict) for v in doc.values()):
        items = [f"{pad}{json.dumps(k)}: {dump_schema(v, depth + 1).strip()}"
                 for k, v in doc.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}" + ("\n" if not depth
                                                                         else "")
    return json.dumps(doc, ensure_ascii=False)


# -- values: members file, CLI ---------------------------------------------------------------
_PATTERNS = {k: re.compile(v["pattern"]).match for k, v in _WIRE_KIND.items() if "pattern" in v}
_HEX64 = re.compile(r"^[0-9a-f]{64}$").match


def check_value(f: Field, value: Any) -> Any:
    """`value` as the field stores it (None for empty), else ValueError saying why."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if f.required and f.default is None:
            raise ValueError("required")
        return None
    if not isinstance(value, str):
        value = str(value)
    value = value.strip()
    if f.kind == "enum":
        if value not in f.choices:
            raise ValueError(f"must be one of {', '.join(f.choices)}, got {value!r}")
    elif f.kind == "date":
        try:
            value = date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError(f"expected YYYY-MM-DD, got {value!r}") from None
    elif f.kind == "hash":
        value = value.lower()
        if not _HEX64(value):
            raise ValueError("expected 64 lower-case hex digits")
    elif f.kind == "days":
        days = [d.strip().lower() for d in value.split(",") if d.strip()]
        bad = [d for d in days if d not in WEEKDAYS]
        if bad or not days:
            raise ValueError(f"expected weekdays among {','.join(WEEKDAYS)}, got {value!r}")
        value = ",".join(d for d in WEEKDAYS if d in days)
    elif f.kind in _PATTERNS and not _PATTERNS[f.kind](value):
        raise ValueError(f"{value!r} does not fit {_WIRE_KIND[f.kind]['pattern']}")
    elif f.kind == "id" and len(value) > 64:
        raise ValueError("at most 64 characters")
    if f.max_length and len(value) > f.max_length:
        raise ValueError(f"at most {f.max_length} characters")
    return value


def members_file_columns() -> tuple[str, ...]:
    """The members file's columns: the member's, then the card's."""
    return tuple(f.csv for f in MEMBERS.fields if f.csv) + CARD_COLUMNS


def add_options(parser: argparse.ArgumentParser, table: Table, names: Sequence[str], *,
                required: Iterable[str] = (), types: Mapping[str, Callable[[str], Any]]
                | None = None, helps: Mapping[str, str] | None = None) -> None:
    """Add the options of `names` (fields of `table` that have a `cli` flag) to `parser`:
    flag, destination (the field's name), choices and help come from the field."""
    required, types, helps = set(required), dict(types or {}), dict(helps or {})
    for name in names:
        f = table.get(name)
        if f.cli is None:
            raise ValueError(f"{table.name}.{name} has no command-line option")
        kw: dict[str, Any] = {"dest": name, "help": helps.get(name, f.help)}
        if f.choices:
            kw["choices"] = list(f.choices)
        if name in types:
            kw["type"] = types[name]
        if f.kind == "date":
            kw["metavar"] = "DATE"
        elif not f.choices:
            kw["metavar"] = f.cli.lstrip("-").upper().replace("-", "_")
        if name in required:
            kw["required"] = True
        parser.add_argument(f.cli, **kw)


def cli_values(table: Table, args: argparse.Namespace, names: Sequence[str]
               ) -> dict[str, Any]:
    """The values of `names` given on the command line (absent ones left out)."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def instant_text(value: datetime) -> str:
    """An aware instant in the wire's form: UTC, whole seconds, `Z`."""
    if value.tzinfo is None:
        raise ValueError("instants must be timezone-aware")
    from datetime import UTC

    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m accessd.schema [--write]`: print the derived DDL, or rewrite rules.json."""
    p = argparse.ArgumentParser(prog="python -m accessd.schema", description=main.__doc__)
    p.add_argument("--write", action="store_true", help="rewrite schemas/rules.json's rows")
    args = p.parse_args(argv)
    if args.write:
        print("rules.json " + ("rewritten" if write_json_schema() else "already agrees"))
        return 0
    print("-- door\n" + door_ddl() + "\n-- office (SQLite and PostgreSQL)\n" + office_ddl())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
