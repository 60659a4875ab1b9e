"""Moving an office store to another database (SQLite to PostgreSQL, or back).

Every table is copied in chunks, each committed on its own with INSERT ... ON CONFLICT DO
NOTHING: a row already in the target stays as it is, so a migration interrupted halfway is
simply run again, and a second run picks up what collectors stored meanwhile. Each chunk
of events is read back from the target: an event the target holds differently under the
same number is reported, never overwritten. At the end the doors' events are counted on both
sides (number, lowest and highest sequence number) and every other table must have at least
as many rows in the target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from accessd.central.store import CentralStore
from accessd.schema import columns_sql

# the events first: they are what must not be lost; the rest in a fixed order
FIRST = ("events", "doors", "door_journals", "door_keys", "purged", "conflicts", "alarms")


@dataclass
class Migration:
    copied: dict[str, int] = field(default_factory=dict)  # rows new in the target
    read: dict[str, int] = field(default_factory=dict)  # rows read from the source
    differ: list[str] = field(default_factory=list)  # events held differently in the target
    problems: list[str] = field(default_factory=list)  # what the verification found

    @property
    def ok(self) -> bool:
        return not self.differ and not self.problems


def migrate(source: CentralStore, target: CentralStore, *, chunk: int = 5000,
            say: Callable[[str], None] = lambda _line: None) -> Migration:
    """Copy `source` into `target` (whose tables exist: it was opened), then verify."""
    out = Migration()
    src, dst = source.tables(), target.tables()
    names = [t for t in FIRST if t in src] + sorted(set(src) - set(FIRST))
    for table in names:
        if table not in dst:
            out.problems.append(f"table {table} is not in the target (a newer source?)")
            continue
        columns = [c for c in src[table] if c in dst[table]]
        cols = columns_sql(columns)  # `start` and `end` quoted
        insert = (f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(columns))}) "
                  "ON CONFLICT DO NOTHING")
        out.copied[table] = out.read[table] = 0
        for rows in source.stream(f"SELECT {cols} FROM {table}", size=chunk):
            with target.transaction():
                out.copied[table] += target.insert_many(insert, rows)
            out.read[table] += len(rows)
            if table == "events":
                out.differ += _differing(target, columns, rows)
        if table == "doors":  # a mark the target already had stays only if it is higher
            for rows in source.stream("SELECT site, door, stored_seq FROM doors", size=chunk):
                with target.transaction():
                    for site, door, mark in rows:
                        target.raise_mark(site, door, mark)
        say(f"{table}: {out.read[table]} rows read, {out.copied[table]} new in the target")
    _verify(source, target, names, out)
    return out


def _differing(target: CentralStore, columns: list[str],
               rows: list[tuple[object, ...]]) -> list[str]:
    """Events of the chunk that the target holds under the same number with another id."""
    at = {c: i for i, c in enumerate(columns)}
    by_door: dict[tuple[object, object], dict[object, object]] = {}
    for r in rows:
        by_door.setdefault((r[at["site"]], r[at["door"]]), {})[r[at["seq"]]] = r[at["id"]]
    out = []
    for (site, door), ids in by_door.items():
        seqs = sorted(ids)  # type: ignore[type-var]
        for i in range(0, len(seqs), 500):
            part = seqs[i:i + 500]
            for seq, eid in target.rows(
                    f"SELECT seq, id FROM events WHERE site = ? AND door = ? AND seq IN "
                    f"({', '.join('?' * len(part))})", [site, door, *part]):
                if ids[seq] != eid:
                    out.append(f"{site}/{door}#{seq}: source id {ids[seq]}, target id {eid}")
    return out


def _verify(source: CentralStore, target: CentralStore, tables: list[str],
            out: Migration) -> None:
    per_door = ("SELECT site, door, count(*), min(seq), max(seq) FROM events "
                "GROUP BY site, door")
    theirs = {(s, d): (n, lo, hi) for s, d, n, lo, hi in source.rows(per_door)}
    for (site, door), (n, lo, hi) in sorted(theirs.items()):
        got = target.rows("SELECT count(*) FROM events WHERE site = ? AND door = ? AND seq "
                          "BETWEEN ? AND ?", (site, door, lo, hi))[0][0]
        if got != n:
            out.problems.append(f"events of {site}/{door} #{lo}..#{hi}: {n} in the source, "
                                f"{got} in the target")
    for table in tables:
        if table == "events" or table not in target.tables():
            continue
        a = source.rows(f"SELECT count(*) FROM {table}")[0][0]
        b = target.rows(f"SELECT count(*) FROM {table}")[0][0]
        if b < a:
            out.problems.append(f"{table}: {a} rows in the source, {b} in the target")
