"""What the office keeps about each door, on SQLite and PostgreSQL: keys, journals, conflicts,
declared purges and alarms."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_central_store import a_store

from accessd.central.store import CentralStore, open_store
from accessd.errors import StoreError
from accessd.protocol.signing import DoorKey, public_line

J1, J2 = "1" * 32, "2" * 32


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CentralStore]:
    yield from a_store(request.param, tmp_path)


def ev(seq: int, door: str = "d1", journal: str | None = J1, **kw) -> dict:
    m = {"v": 2, "site": "s1", "door": door, "seq": seq, "id": f"{door}-{seq}",
         "ts": f"2026-11-02T10:{seq % 60:02d}:00.000Z", "type": "access.granted",
         "clock_trusted": True, "detail": {}, **kw}
    if journal:
        m["journal"] = journal
    return m


def test_door_keys_are_registered_listed_rolled_and_removed(store):
    k1, k2 = DoorKey.generate(), DoorKey.generate()
    assert store.add_door_key("s1", "d1", public_line(k1.public, "s1/d1")) == k1.key_id
    assert store.add_door_key("s1", "d1", public_line(k1.public)) == k1.key_id  # again: no-op
    store.add_door_key("s1", "d1", public_line(k2.public))  # a second key: rolled
    assert [k["key_id"] for k in store.door_keys("s1", "d1")] == [k1.key_id, k2.key_id]
    with pytest.raises(StoreError, match="already registered for s1/d1"):
        store.add_door_key("s1", "d2", public_line(k1.public))
    with pytest.raises(StoreError, match="labelled 's1/d2'"):
        store.add_door_key("s1", "d1", public_line(DoorKey.generate().public, "s1/d2"))
    line = public_line(k1.public).split()
    with pytest.raises(StoreError, match="key id on the line"):
        store.add_door_key("s1", "d1", f"{line[0]} {line[1]} {'0' * 16}")
    with pytest.raises(StoreError, match="public-key"):
        store.add_door_key("s1", "d1", "ssh-ed25519 AAAA")
    assert store.remove_door_key("s1", "d1", k1.key_id)
    assert not store.remove_door_key("s1", "d1", k1.key_id)
    assert [k["key_id"] for k in store.door_keys()] == [k2.key_id]


def test_alarms_are_counted_while_open_and_reopen_after_clearing(store):
    store.raise_alarm("s1", "d1", "event_unsigned", "first")
    store.raise_alarm("s1", "d1", "event_unsigned", "second", count=4)
    store.raise_alarm("s1", "d2", "event_unsigned", "other door")
    (a,) = store.alarms(door="d1")
    assert (a["kind"], a["count"], a["detail"], a["cleared"]) == ("event_unsigned", 5,
                                                                  "second", None)
    assert store.clear_alarm(a["id"]) and not store.clear_alarm(a["id"])
    assert [x["door"] for x in store.alarms()] == ["d2"]
    store.raise_alarm("s1", "d1", "event_unsigned", "again")
    assert [x["count"] for x in store.alarms(door="d1")] == [1]
    assert len(store.alarms(open_only=False, door="d1")) == 2


def test_a_different_event_for_a_stored_number_is_kept_out_recorded_and_alarmed(store):
    r = store.store_events([ev(1), ev(2)])
    assert (r.new, r.duplicates, r.conflicts) == (2, 0, 0)
    forged = ev(2, id="forged", member_id="mallory")
    r = store.store_events([ev(2), forged, ev(3)])  # a copy, a conflict, a new one
    assert (r.new, r.duplicates, r.conflicts) == (1, 1, 1)
    assert [e["id"] for e in store.events("s1")] == ["d1-1", "d1-2", "d1-3"]
    (c,) = store.conflicts("s1")
    assert (c["seq"], c["kept"]["id"], c["refused"]["id"], c["count"]) == (2, "d1-2", "forged",
                                                                           1)
    store.store_events([forged])  # the same conflicting copy again: counted, not repeated
    assert [c["count"] for c in store.conflicts("s1")] == [2]
    (a,) = store.alarms()
    assert (a["door"], a["kind"], a["count"]) == ("d1", "event_conflict", 2)
    assert "forged" in a["detail"]
    assert store.advance("s1", "d1") == (3, None)


def test_a_conflict_on_the_per_row_path_is_caught_too(store):
    store.store_events([ev(1), ev(2)])
    r = store.store_events([ev(2, id="other", floor=2)])  # a floor takes the per-row path
    assert (r.new, r.duplicates, r.conflicts) == (0, 0, 1)
    assert [c["refused"]["id"] for c in store.conflicts()] == ["other"]


def test_only_a_declared_floor_moves_the_mark_past_missing_numbers(store):
    store.store_events([ev(1), ev(2), ev(5)])
    assert store.advance("s1", "d1") == (2, (3, 4))
    store.store_events([ev(6, floor=4)])  # the door signed: it holds nothing below 4
    assert store.advance("s1", "d1") == (3, (4, 4))  # 3 is gone, 4 still expected
    assert [(p["first_seq"], p["last_seq"], p["reason"]) for p in store.purged("s1")] == [
        (3, 3, "door_floor")]
    (a,) = store.alarms()
    assert (a["kind"], a["count"]) == ("events_purged", 1) and "3..3" in a["detail"]
    store.store_events([ev(7, floor=2)])  # a floor below the mark changes nothing
    assert len(store.purged("s1")) == 1


def test_a_door_s_first_journal_is_adopted_and_a_new_one_renumbered_after_its_numbers(store):
    r = store.store_events([ev(s) for s in (1, 2, 3)])
    assert r.journals == {("s1", "d1"): J1} and not r.rebases
    assert store.current_journal("s1", "d1") == J1
    # the SD card is replaced: a new journal numbers from 1 again
    r = store.store_events([ev(1, journal=J2, id="new-1"), ev(2, journal=J2, id="new-2")])
    assert (r.new, r.conflicts) == (0, 0)
    assert r.refused == {("s1", "d1", "renumbering"): 2}
    rebase = r.rebases[("s1", "d1")]
    assert (rebase.journal, rebase.after) == (J2, 3) and len(rebase.next) == 32
    assert store.current_journal("s1", "d1") == rebase.next
    assert [a["kind"] for a in store.alarms()] == ["journal_replaced"]
    # until the door has renumbered, its old-numbered events keep being refused
    assert store.store_events([ev(3, journal=J2, id="new-3")]).rebases == {("s1", "d1"): rebase}
    # a late event of the replaced journal: within its numbers it is stored, past them not
    assert store.store_events([ev(4, journal=J1)]).refused == {("s1", "d1", "old_journal"): 1}
    assert sorted(a["kind"] for a in store.alarms()) == ["journal_replaced", "old_journal"]
    # the door renumbered: 1, 2, 3 of the new journal are 4, 5, 6 now
    r = store.store_events([ev(4 + i, journal=rebase.next, id=f"new-{i + 1}")
                            for i in range(3)])
    assert (r.new, r.conflicts, r.rebases) == (3, 0, {})
    assert [e["id"] for e in store.events("s1")] == ["d1-1", "d1-2", "d1-3", "new-1",
                                                     "new-2", "new-3"]
    assert store.advance("s1", "d1") == (6, None)
    statuses = {j["journal"]: j["status"] for j in store.door_journals("s1", "d1")}
    assert statuses == {J1: "retired", J2: "renumbering", rebase.next: "current"}


def test_journals_are_per_door_and_events_without_one_go_through(store):
    r = store.store_events([ev(1), ev(1, door="d2", journal=J2), ev(2, journal=None)])
    assert r.new == 3 and r.journals == {("s1", "d1"): J1, ("s1", "d2"): J2}
    # a door with no history adopts whatever journal comes first, even after another's
    other = uuid.uuid4().hex
    assert store.store_events([ev(1, door="d3", journal=other)]).journals == {
        ("s1", "d3"): other}


def test_the_door_alarm_and_conflict_commands(tmp_path, capsys):
    from accessd.central.cli import main

    db = str(tmp_path / "central.db")
    key = DoorKey.generate()
    line = public_line(key.public, "s1/d1")
    (tmp_path / "d1.pub").write_text(line + "\n")

    def run(*args: str) -> int:
        return main(["central", *args, "--store", db])

    assert run("door", "add", "--site", "s1", "--door", "d1", "--public-key-file",
               str(tmp_path / "d1.pub")) == 0
    assert f"key {key.key_id} registered for s1/d1" in capsys.readouterr().out
    assert run("door", "add", "--site", "s1", "--door", "d2", "--public-key", line) == 1
    assert "labelled 's1/d1'" in capsys.readouterr().err
    assert run("door", "list") == 0 and key.key_id in capsys.readouterr().out
    store = open_store(db)
    store.store_events([ev(1), ev(1, id="forged")])
    store.close()
    assert run("conflicts") == 0 and "kept d1-1" in capsys.readouterr().out
    assert run("alarms", "--json") == 0
    import json

    (alarm,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert alarm["kind"] == "event_conflict"
    assert run("alarms", "--clear", alarm["id"]) == 0
    assert run("alarms") == 0 and "event_conflict" not in capsys.readouterr().out
    assert run("alarms", "--clear", alarm["id"]) == 1
    assert run("door", "remove", "--site", "s1", "--door", "d1", "--key-id", key.key_id) == 0
    assert run("door", "remove", "--site", "s1", "--door", "d1", "--key-id", key.key_id) == 1
