"""`accessd central migrate`: SQLite to PostgreSQL and back, against the real PostgreSQL,
without losing or duplicating an event; idempotent, resumable, verified."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_central_store import private_schema

from accessd.central.cli import main
from accessd.central.migrate import migrate
from accessd.central.store import CentralStore, open_store
from accessd.protocol.signing import DoorKey, public_line

J = "9" * 32


def central(*args: str) -> int:
    return main(["central", *args])


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from private_schema()


def ev(seq: int, door: str = "d1") -> dict:
    return {"v": 2, "site": "s1", "door": door, "seq": seq, "id": f"{door}-{seq}",
            "journal": J if door == "d1" else "8" * 32, "ts": "2026-11-02T10:00:00.000Z",
            "type": "access.granted", "clock_trusted": True, "detail": {"n": seq},
            "member_name": "Zoé"}


def fill(store: CentralStore, n: int = 1200) -> None:
    store.store_events([ev(s) for s in range(1, n + 1)] + [ev(s, "d2") for s in (1, 2, 4)])
    store.advance_many([("s1", "d1"), ("s1", "d2")])
    store.add_door_key("s1", "d1", public_line(DoorKey.generate().public))
    store.raise_alarm("s1", "d2", "event_unsigned", "a test")
    store.store_events([{**ev(3), "id": "other"}])  # a conflict
    store.set_site("s1", name="La Cordée", timezone="Europe/Paris")
    store.import_members("s1", [{"id": "a", "name": "A", "plan": "subscriber",
                                 "status": "active"}], [])
    store.record_version("s1", 1, "2026-11-02T10:00:00.000Z", '{"a": 1}', None)


def summary(store: CentralStore) -> dict:
    return {"events": sorted((e["door"], e["seq"], e["id"], e["member_name"], e["detail"]["n"])
                             for e in store.events("s1")),
            "marks": store.stored_seq("s1"), "keys": store.door_keys(),
            "alarms": [(a["kind"], a["count"]) for a in store.alarms()],
            "conflicts": [(c["seq"], c["refused"]["id"]) for c in store.conflicts()],
            "journal": store.current_journal("s1", "d1"), "rules": store.rules("s1"),
            "version": store.latest_snapshot("s1"), "site": store.site("s1")}


@pytest.mark.parametrize("direction", ["sqlite-to-postgres", "postgres-to-sqlite"])
def test_a_store_moves_whole_and_a_second_run_changes_nothing(tmp_path, pg_url, direction):
    urls = [str(tmp_path / "office.db"), pg_url]
    if direction == "postgres-to-sqlite":
        urls.reverse()
    source, target = open_store(urls[0]), open_store(urls[1])
    try:
        fill(source)
        first = migrate(source, target, chunk=500)
        assert first.ok, (first.differ, first.problems)
        assert first.copied["events"] == first.read["events"] == 1203
        assert summary(target) == summary(source)
        again = migrate(source, target, chunk=500)
        assert again.ok and sum(again.copied.values()) == 0  # idempotent
        assert target.count_events("s1") == 1203
    finally:
        source.close()
        target.close()


def test_an_interrupted_migration_is_resumed_and_new_events_picked_up(tmp_path, pg_url):
    source = open_store(tmp_path / "office.db")
    fill(source)
    target = open_store(pg_url)
    try:
        # as if the first run died after its first chunk of events
        rows = next(source.stream("SELECT * FROM events ORDER BY site, door, seq", size=500))
        cols = source.tables()["events"]
        target.insert_many(f"INSERT INTO events ({', '.join(cols)}) VALUES "
                           f"({', '.join('?' * len(cols))})", rows)
        partial = migrate(source, target, chunk=500)
        assert partial.ok and partial.copied["events"] == 1203 - 500
        source.store_events([ev(s) for s in range(1201, 1211)])  # a collector kept going
        source.advance_many([("s1", "d1")])
        tail = migrate(source, target, chunk=500)
        assert tail.ok and tail.copied["events"] == 10
        assert summary(target) == summary(source)
    finally:
        source.close()
        target.close()


def test_an_event_the_target_holds_differently_is_reported_not_overwritten(tmp_path,
                                                                           pg_url):
    target = open_store(pg_url)
    target.store_events([{**ev(7), "id": "target-own"}])
    target.close()
    source = open_store(tmp_path / "office.db")
    fill(source, 20)
    source.close()
    code = central("migrate", "--from", str(tmp_path / "office.db"), "--to", pg_url)
    assert code == 1
    target = open_store(pg_url)
    try:
        assert [e["id"] for e in target.events("s1") if e["seq"] == 7 and e["door"] == "d1"] \
            == ["target-own"]
        assert target.count_events("s1", "d1") == 20
    finally:
        target.close()


def test_the_command_line_migrates_and_checks(tmp_path, pg_url, capsys):
    source = open_store(tmp_path / "office.db")
    fill(source, 50)
    source.close()
    assert central("migrate", "--from", str(tmp_path / "office.db"), "--to", pg_url) == 0
    out = capsys.readouterr()
    assert "migrated: 53 events checked" in out.out and "events: 53 rows read" in out.err
    assert central("migrate", "--from", pg_url, "--to", str(tmp_path / "back.db")) == 0
    back = open_store(tmp_path / "back.db")
    assert back.count_events("s1") == 53 and back.stored_seq("s1") == {"d1": 50, "d2": 2}
    back.close()
    assert central("migrate", "--from", pg_url, "--to", pg_url) == 1
    assert "same store" in capsys.readouterr().err
