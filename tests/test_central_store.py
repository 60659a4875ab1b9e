"""The central store on SQLite and on PostgreSQL: idempotent, contiguous, office wins."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from accessd.central.store import CentralStore, open_store
from accessd.errors import MemberNotFound

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def private_schema() -> Iterator[str]:
    """The URL of a private schema in the test PostgreSQL, dropped afterwards."""
    import psycopg  # in the test extras: missing, it is an error, not a skip

    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    schema = f"accessd_test_{secrets.token_hex(4)}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options={quote(f'-csearch_path={schema}')}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def _postgres() -> Iterator[CentralStore]:
    for url in private_schema():
        store = open_store(url)
        try:
            yield store
        finally:
            store.close()


def a_store(kind: str, folder: Path) -> Iterator[CentralStore]:
    """A fresh store of this kind ("sqlite" or "postgres"), closed afterwards."""
    if kind == "postgres":
        yield from _postgres()
    else:
        s = open_store(folder / "central.db")
        yield s
        s.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CentralStore]:
    yield from a_store(request.param, tmp_path)


def ev(seq: int, door: str = "d1", **kw) -> dict:
    return {"v": 1, "site": "s1", "door": door, "seq": seq, "id": f"{door}-{seq}",
            "ts": f"2026-11-02T10:{seq % 60:02d}:00.000Z", "type": "access.granted",
            "clock_trusted": True, "detail": {}, **kw}


def test_copies_are_dropped_by_door_and_sequence(store):
    r = store.store_events([ev(1), ev(2), ev(2), ev(1, door="d2")])
    assert (r.new, r.duplicates) == (3, 1)
    r = store.store_events([ev(1), ev(2), ev(3)])
    assert (r.new, r.duplicates) == (1, 2)
    assert store.count_events("s1") == 4
    assert store.count_events("s1", "d1") == 3


def test_the_acknowledgement_stops_at_the_first_hole(store):
    store.store_events([ev(s) for s in (1, 2, 3, 5, 6, 9)])
    assert store.advance("s1", "d1") == (3, (4, 4))
    store.store_events([ev(4)])
    assert store.advance("s1", "d1") == (6, (7, 8))
    store.store_events([ev(7), ev(8)])
    assert store.advance("s1", "d1") == (9, None)
    assert store.stored_seq("s1") == {"d1": 9}


def test_a_purge_floor_lets_the_mark_jump_over_events_that_no_longer_exist(store):
    store.store_events([ev(10, floor=10), ev(11)])
    assert store.advance("s1", "d1") == (11, None)


def enrolled(seq: int, mid: str, h: str | None = None, **member) -> dict:
    return ev(seq, type="member.enrolled", member_id=mid, detail={
        "member": {"id": mid, "name": "Zoé", "plan": "occasional", "status": "active",
                   "valid_from": None, "valid_until": None, "origin": "site",
                   "updated_at": "2026-11-02T10:00:00.000Z", **member},
        **({"credential_hash": h, "technology": "em4100"} if h else {})})


def test_host_enrolments_reach_the_office_as_proposals(store):
    h = "ab" * 32
    store.store_events([enrolled(1, "m-1", h)])
    assert store.rules("s1") == ([], [])  # never an office row by itself
    pending = store.proposals("s1")
    assert [(p["door"], p["seq"], p["kind"], p["member_id"], p["credential_hash"])
            for p in pending] == [("d1", 1, "member", "m-1", None), ("d1", 1, "card", "m-1", h)]
    assert pending[0]["grants"] == ["a new member"] and pending[1]["grants"] == ["a new card"]
    assert store.pending_seqs("s1") == {"d1": [1]}
    # a newer change of the same member from the same door replaces the pending row
    store.store_events([enrolled(2, "m-1", plan="subscriber")])
    assert [(p["seq"], p["proposed"]["plan"]) for p in store.proposals("s1")
            if p["kind"] == "member"] == [(2, "subscriber")]
    assert store.pending_seqs("s1") == {"d1": [1, 2]}
    done = store.approve("s1", None, by="olivia")
    assert [(p["kind"], p["state"], p["decided_by"]) for p in done] == [
        ("member", "approved", "olivia"), ("card", "approved", "olivia")]
    members, creds = store.rules("s1")
    assert [(m["id"], m["origin"], m["plan"]) for m in members] == [("m-1", "site",
                                                                      "subscriber")]
    assert [(c["hash"], c["member_id"], c["status"]) for c in creds] == [(h, "m-1", "active")]
    assert store.pending_seqs("s1") == {}


def test_what_an_import_keeps_and_removes(store):
    h = "ab" * 32
    store.store_events([enrolled(1, "m-1", h)])
    store.approve("s1", None, by="olivia")
    # an approved door enrolment is not in the office's file: it stays...
    counts = store.import_members("s1", [{"id": "a", "name": "A", "plan": "subscriber",
                                          "status": "active"}], [])
    assert {m["id"] for m in store.rules("s1")[0]} == {"a", "m-1"}
    assert counts["removed_members"] == 0 and counts["kept_from_doors"] == ["m-1"]
    # ...until a file names it: then it is the file's, and goes when the file drops it
    store.import_members("s1", [{"id": "m-1", "name": "Zoé", "plan": "occasional",
                                 "status": "active"}], [{"hash": h, "member_id": "m-1"}])
    assert [m["origin"] for m in store.rules("s1")[0]] == ["central"]
    counts = store.import_members("s1", [{"id": "a", "name": "A", "plan": "subscriber",
                                          "status": "active"}], [])
    assert {m["id"] for m in store.rules("s1")[0]} == {"a"} and store.rules("s1")[1] == []
    assert counts["removed_members"] == 1
    # with exact, the file is the whole list
    store.store_events([enrolled(3, "m-3", "cd" * 32)])
    store.approve("s1", None, by="olivia")
    assert "m-3" in {m["id"] for m in store.rules("s1")[0]}
    counts = store.import_members("s1", [{"id": "a", "name": "A", "plan": "subscriber",
                                          "status": "active"}], [], exact=True)
    assert {m["id"] for m in store.rules("s1")[0]} == {"a"} and store.rules("s1")[1] == []
    assert counts["removed_members"] == 1 and counts["removed_credentials"] == 1
    # a pending proposal is not a row: an import neither removes nor accepts it
    store.store_events([enrolled(2, "m-2")])
    store.import_members("s1", [], [])
    assert [p["member_id"] for p in store.proposals("s1")] == ["m-2"]
    assert store.rules("s1") == ([], [])


def test_a_removed_member_takes_the_cards_the_office_accepted_from_a_door(store):
    h = "ef" * 32
    store.import_members("s1", [{"id": "a", "name": "A", "plan": "subscriber",
                                 "status": "active"}], [])
    store.store_events([enrolled(1, "a", h, name="A", plan="subscriber")])
    store.approve("s1", None, by="olivia")
    assert [c["origin"] for c in store.rules("s1")[1]] == ["site"]
    store.import_members("s1", [], [])
    assert store.rules("s1") == ([], [])  # no card is left without its member


def test_importing_the_same_list_twice_changes_nothing(store):
    members = [{"id": "a", "name": "A", "plan": "subscriber", "status": "active"}]
    creds = [{"hash": "cd" * 32, "member_id": "a", "status": "active"}]
    store.import_members("s1", members, creds)
    first = store.rules("s1")
    store.import_members("s1", members, creds)
    assert store.rules("s1") == first
    counts = store.import_members("s1", [], [])
    assert counts["removed_members"] == 1 and store.rules("s1") == ([], [])


def test_versions_and_sites(store):
    assert store.latest_version("s1") == 0 and store.latest_snapshot("s1") is None
    store.record_version("s1", 1, "2026-11-02T10:00:00.000Z", '{"a":1}', None)
    assert store.latest_version("s1") == 1 and store.latest_snapshot("s1") == '{"a":1}'
    store.set_site("s1", name="La Cordée", timezone="Europe/Paris", credential_key="00" * 16)
    assert store.site("s1")["name"] == "La Cordée"


def test_a_mixed_batch_counts_new_rows_and_copies_as_row_by_row(store):
    h = "cd" * 32
    enrol = ev(3, type="member.enrolled", member_id="m9",
               detail={"member": {"id": "m9", "name": "Nine", "plan": "subscriber"},
                       "credential_hash": h, "technology": "em4100"})
    r = store.store_events([ev(1), ev(2), ev(2), enrol, ev(20, door="d2", floor=20),
                            ev(21, door="d2"), ev(1)])
    assert (r.new, r.duplicates) == (5, 2)
    assert r.doors == {("s1", "d1"), ("s1", "d2")}
    assert [(p["kind"], p["member_id"]) for p in store.proposals("s1")] == [
        ("member", "m9"), ("card", "m9")]
    r = store.store_events([ev(1), enrol, ev(4)])  # the copy of a host change does nothing
    assert (r.new, r.duplicates) == (1, 2)
    assert store.count_events("s1") == 6
    assert len(store.proposals("s1")) == 2


def test_advance_many_is_advance_for_every_door_in_one_transaction(store):
    store.store_events([ev(s) for s in (1, 2, 4)] + [ev(s, door="d2") for s in (1, 2, 3)]
                       + [ev(7, door="d3", floor=7)])
    marks = store.advance_many([("s1", "d2"), ("s1", "d1"), ("s1", "d3"), ("s1", "d1")])
    assert marks == {("s1", "d1"): (2, (3, 3)), ("s1", "d2"): (3, None),
                     ("s1", "d3"): (7, None)}
    assert store.stored_seq("s1") == {"d1": 2, "d2": 3, "d3": 7}
    assert store.advance_many([]) == {}
    assert all(store.advance(s, d) == m for (s, d), m in marks.items())


def test_an_office_revocation_is_for_good(store):
    from accessd.rights import Change

    h = "ab" * 32
    store.import_members("s1", [{"id": "a", "name": "A", "plan": "subscriber",
                                 "status": "active"}], [{"hash": h, "member_id": "a"}])
    store.store_events([enrolled(1, "a", "cd" * 32, name="A", plan="subscriber")])
    assert store.revoke("s1", member_id="a") is Change.CHANGED
    assert store.revoke("s1", member_id="a") is Change.UNCHANGED
    assert store.revoke("s1", credential_hash=h) is Change.CHANGED
    assert [p["state"] for p in store.proposals("s1", state="all")] == ["rejected"]
    counts = store.import_members("s1", [{"id": "a", "name": "A", "plan": "subscriber",
                                          "status": "active"}], [{"hash": h, "member_id": "a"}])
    assert counts["kept_revoked"] == 2
    members, creds = store.rules("s1")
    assert members[0]["status"] == creds[0]["status"] == "revoked"
    store.import_members("s1", [], [])
    store.import_members("s1", [{"id": "a", "name": "A", "plan": "subscriber",
                                 "status": "active"}], [{"hash": h, "member_id": "a"}])
    members, creds = store.rules("s1")
    assert members[0]["status"] == creds[0]["status"] == "revoked"
    with pytest.raises(MemberNotFound):
        store.revoke("s1", member_id="nobody")
