"""Rule documents at the door: applied whole in one transaction, or rejected with a reason."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from accessd.decision import Plan
from accessd.events import Event, EventType, format_ts, utcnow
from accessd.protocol.codec import encode
from accessd.protocol.rules import make_delta, make_snapshot
from accessd.protocol.signing import OfficeKey, PublicKeys
from accessd.store.journal import Journal
from accessd.store.rules import RuleCache
from accessd.uplink.rulesync import RuleApplier

H = [f"{i:064x}" for i in range(1, 20)]


def member(mid: str, plan: str = "subscriber", status: str = "active") -> dict:
    return {"id": mid, "name": f"Member {mid}", "plan": plan, "status": status}


def cred(h: str, mid: str, status: str = "active") -> dict:
    return {"hash": h, "member_id": mid, "status": status}


@pytest.fixture
def key() -> OfficeKey:
    return OfficeKey.generate()


@pytest.fixture
def rules(tmp_path: Path):
    cache = RuleCache(tmp_path / "rules.db")
    yield cache
    cache.close()


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal.db", "s1", "d1")
    yield j
    j.close()


@pytest.fixture
def applier(rules: RuleCache, key: OfficeKey, journal: Journal) -> RuleApplier:
    return RuleApplier(rules, PublicKeys([key.public]), site="s1", door="d1", journal=journal)


def dump(rules: RuleCache) -> str:
    c = rules.db.conn
    return json.dumps([c.execute("SELECT * FROM members ORDER BY id").fetchall(),
                       c.execute("SELECT * FROM credentials ORDER BY hash").fetchall(),
                       c.execute("SELECT * FROM meta ORDER BY key").fetchall()])


def snapshot(key: OfficeKey, version: int, members: list, creds: list, **kw) -> bytes:
    return encode(make_snapshot(key, site="s1", version=version, members=members,
                                credentials=creds, **kw))


def base(applier: RuleApplier, key: OfficeKey) -> None:
    out = applier.handle(snapshot(key, 1, [member("a"), member("b", "occasional")],
                                  [cred(H[0], "a"), cred(H[1], "b")],
                                  schedule={"timezone": "Europe/Paris", "opens": "09:00",
                                            "closes": "18:00", "days": ["mon", "tue"],
                                            "closures": ["2026-12-25"]}), "snapshot")
    assert out.applied, out


def test_a_snapshot_replaces_the_rules_in_one_go(applier, rules, key):
    base(applier, key)
    assert rules.version == 1
    assert rules.lookup(H[0]).member_id == "a"
    assert rules.lookup(H[1]).plan is Plan.OCCASIONAL
    assert rules.schedule().days == frozenset({"mon", "tue"})
    out = applier.handle(snapshot(key, 2, [member("c")], [cred(H[2], "c")]), "snapshot")
    assert out.applied and out.detail["members"] == 1
    assert rules.lookup(H[0]) is None and rules.lookup(H[2]).member_id == "c"
    assert rules.schedule() is None  # the office no longer publishes one: config applies


def test_the_same_version_again_is_ignored_quietly(applier, rules, key):
    base(applier, key)
    before = dump(rules)
    out = applier.handle(snapshot(key, 1, [], []), "snapshot")
    assert out.ignored and out.reason is None
    assert dump(rules) == before


def tampered(key: OfficeKey) -> bytes:
    env = make_snapshot(key, site="s1", version=5, members=[member("x")],
                        credentials=[cred(H[5], "x")])
    env["payload"]["members"][0]["plan"] = "subscriber"
    env["payload"]["members"][0]["name"] = "Mallory"
    return encode(env)


def unsigned(key: OfficeKey) -> bytes:
    env = make_snapshot(key, site="s1", version=5, members=[], credentials=[])
    return encode(env["payload"])


def other_key(key: OfficeKey) -> bytes:
    return snapshot(OfficeKey.generate(), 5, [], [])


def raw(key: OfficeKey, **changes) -> bytes:
    """Signed by the right key, but not a valid document: the office's checks bypassed."""
    payload = {"v": 1, "kind": "snapshot", "site": "s1", "version": 5,
               "issued_at": format_ts(utcnow()), "members": [], "credentials": [], **changes}
    return encode(key.sign(payload))


def deep(key: OfficeKey) -> bytes:
    return b'{"payload":' + b"[" * 100 + b"]" * 100 + b', "sig": "", "key_id": ""}'


@pytest.mark.parametrize(("make", "reason"), [
    (tampered, "bad_signature"),
    (unsigned, "unsigned"),
    (other_key, "unknown_key"),
    (lambda k: b'{"payload": {"v": 1, "kind": "snap', "malformed"),
    (lambda k: b"\xff\xfe not even text", "malformed"),
    (deep, "too_deep"),
    (lambda k: raw(k, members=[member("x", plan="vip")]), "invalid"),
    (lambda k: raw(k, credentials=[cred("C0FFEE", "x")]), "invalid"),
    (lambda k: raw(k, members=[member("x")], credentials=[cred(H[3], "nobody")]), "invalid"),
    (lambda k: raw(k, members=[member("x")], removed_members=["y"]), "invalid"),
    (lambda k: encode(make_snapshot(k, site="s2", version=5, members=[], credentials=[])),
     "wrong_site"),
    (lambda k: snapshot(k, 0 + 1, [], []) and encode(make_delta(
        k, site="s1", version=5, base_version=1)), "wrong_topic"),
])
def test_bad_documents_are_rejected_and_the_cache_untouched(applier, rules, key, make, reason):
    base(applier, key)
    before = dump(rules)
    out = applier.handle(make(key), "snapshot")
    assert not out.applied and out.reason == reason, out
    assert dump(rules) == before


def test_an_oversized_document_is_refused_before_parsing(rules, key, journal):
    small = RuleApplier(rules, PublicKeys([key.public]), site="s1", door="d1",
                        journal=journal, max_bytes=2048)
    big = snapshot(key, 1, [member(f"m{i}") for i in range(100)], [])
    out = small.handle(big, "snapshot")
    assert out.reason == "too_large" and rules.version == 0
    out = small.handle(b"{" * 10_000_000, "snapshot")  # never parsed
    assert out.reason == "too_large"


def test_an_older_version_is_rejected(applier, rules, key):
    applier.handle(snapshot(key, 3, [member("a")], []), "snapshot")
    before = dump(rules)
    out = applier.handle(snapshot(key, 2, [member("z")], []), "snapshot")
    assert out.reason == "stale_version" and dump(rules) == before


def test_a_delta_applies_on_its_base_version(applier, rules, key):
    base(applier, key)
    d = make_delta(key, site="s1", version=2, base_version=1, members=[member("c")],
                   credentials=[cred(H[2], "c"), cred(H[0], "a", "revoked")],
                   removed_members=["b"])
    out = applier.handle(encode(d), "delta")
    assert out.applied
    assert rules.version == 2
    assert rules.lookup(H[2]).member_id == "c"
    assert str(rules.lookup(H[0]).credential_status) == "revoked"
    assert rules.lookup(H[1]) is None  # member b and its card are gone
    assert rules.schedule() is not None  # a delta without a schedule keeps it


def test_a_delta_with_a_gap_asks_for_a_snapshot(applier, rules, key):
    base(applier, key)
    before = dump(rules)
    d = make_delta(key, site="s1", version=4, base_version=3, members=[member("c")])
    out = applier.handle(encode(d), "delta")
    assert out.reason == "version_gap" and out.request_snapshot
    assert dump(rules) == before


def test_a_delta_that_fails_halfway_leaves_nothing_behind(applier, rules, key):
    base(applier, key)
    before = dump(rules)
    d = make_delta(key, site="s1", version=2, base_version=1, members=[member("c")],
                   credentials=[cred(H[2], "c"), cred(H[3], "ghost")])  # unknown member
    out = applier.handle(encode(d), "delta")
    assert out.reason == "inconsistent" and out.request_snapshot
    assert dump(rules) == before  # member c was inserted, then rolled back


def test_without_a_journal_a_host_enrolment_newer_than_the_snapshot_survives_it(rules, key):
    applier = RuleApplier(rules, PublicKeys([key.public]), site="s1", door="d1")
    base(applier, key)
    issued = utcnow()
    later = rules.enroll(name="Newcomer", plan=Plan.OCCASIONAL, credential_hash=H[9])
    out = applier.handle(snapshot(key, 2, [member("a")], [cred(H[0], "a")],
                                  issued_at=issued - timedelta(seconds=5)), "snapshot")
    assert out.applied and out.detail["kept_local"] == 1
    assert rules.lookup(H[9]).member_id == later.id
    assert rules.lookup(H[1]) is None  # the office dropped b, which it knew about


def test_an_enrolment_the_office_has_not_stored_survives_by_sequence(applier, rules, key,
                                                                    journal):
    base(applier, key)
    m = rules.enroll(name="Host's pick", plan=Plan.SUBSCRIBER, credential_hash=H[8])
    journal.append(Event(EventType.MEMBER_ENROLLED, member_id=m.id,  # seq 1, not stored yet
                         detail={"credential_hash": H[8]}))
    later = utcnow() + timedelta(hours=1)  # the office's clock is ahead: time alone fails
    doc = snapshot(key, 2, [member("a")], [cred(H[0], "a")], issued_at=later,
                   stored_seq={"d1": 0})
    assert applier.handle(doc, "snapshot").applied
    assert rules.lookup(H[8]).member_id == m.id
    doc = snapshot(key, 3, [member("a")], [cred(H[0], "a")], issued_at=later,
                   stored_seq={"d1": 1})  # now the office has it, and chose to drop it
    assert applier.handle(doc, "snapshot").applied
    assert rules.lookup(H[8]) is None


def test_an_office_revocation_wins_over_a_local_enrolment(applier, rules, key):
    base(applier, key)
    issued = utcnow() - timedelta(seconds=5)
    m = rules.enroll(name="Newcomer", plan=Plan.SUBSCRIBER, credential_hash=H[7])
    doc = snapshot(key, 2, [member("a"), {**member(m.id), "origin": "site"}],
                   [cred(H[0], "a"), cred(H[7], m.id, "revoked")], issued_at=issued)
    assert applier.handle(doc, "snapshot").applied
    assert str(rules.lookup(H[7]).credential_status) == "revoked"


def test_decisions_read_the_old_rules_until_the_commit(applier, rules, key, tmp_path):
    """A reader on another connection (the daemon) sees all of a snapshot or none of it."""
    base(applier, key)
    reader = RuleCache(tmp_path / "rules.db", readonly=True)
    big = snapshot(key, 2, [member(f"n{i}") for i in range(3000)],
                   [cred(f"{i + 100:064x}", f"n{i}") for i in range(3000)])
    seen: list[tuple[int, bool, bool]] = []
    done = threading.Event()

    def watch() -> None:
        while True:
            finished = done.is_set()
            reader.db.conn.execute("BEGIN")  # one read snapshot, like one tap
            v = reader.version
            old = reader.lookup(H[0]) is not None
            new = reader.lookup(f"{2999 + 100:064x}") is not None
            reader.db.conn.execute("COMMIT")
            seen.append((v, old, new))
            if finished:
                return

    t = threading.Thread(target=watch)
    t.start()
    assert applier.handle(big, "snapshot").applied
    done.set()
    t.join()
    reader.close()
    assert {1, 2} <= {v for v, _, _ in seen}, "the reader ran during the apply"
    assert all((v, o, n) in ((1, True, False), (2, False, True)) for v, o, n in seen)


def test_issue_time_is_recorded(applier, rules, key):
    base(applier, key)
    assert rules.get_meta("rule_issued_at") <= format_ts(utcnow())


def test_the_wire_form_leaves_out_what_the_door_fills_in(key):
    stamp = "2026-11-02T09:00:00.000Z"
    env = make_snapshot(key, site="s1", version=1, members=[
        {**member("a"), "valid_from": None, "valid_until": None, "origin": "central",
         "updated_at": stamp},
        {**member("b"), "valid_until": "2026-12-31", "origin": "site", "updated_at": stamp}],
        credentials=[{**cred(H[0], "a"), "technology": None, "origin": "central",
                      "enrolled_at": stamp, "updated_at": stamp},
                     {**cred(H[1], "b"), "technology": "em4100", "origin": "site",
                      "enrolled_at": stamp, "updated_at": stamp}])
    m, c = env["payload"]["members"], env["payload"]["credentials"]
    assert m[0] == member("a")  # an office row: no origin, no timestamps, no null dates
    assert m[1] == {**member("b"), "valid_until": "2026-12-31", "origin": "site",
                    "updated_at": stamp}  # a host's row keeps what the next sync compares
    assert c[0] == cred(H[0], "a")
    assert c[1]["origin"] == "site" and c[1]["enrolled_at"] == stamp


def test_a_snapshot_writes_only_the_rows_that_changed(applier, rules, key):
    members = [member(f"m{i}") for i in range(20)]
    creds = [cred(H[i], f"m{i}") for i in range(19)]
    t1 = utcnow() - timedelta(hours=2)
    assert applier.handle(snapshot(key, 1, members, creds, issued_at=t1), "snapshot").applied
    c = rules.db.conn
    stamps = dict(c.execute("SELECT id, updated_at FROM members"))
    assert set(stamps.values()) == {format_ts(t1)}
    members[3] = {**members[3], "name": "Renamed"}
    members[4] = {**members[4], "status": "suspended"}
    creds[5] = cred(H[5], "m6")  # a card moves to another member
    del members[7]  # m7 leaves, and its card with it (cascade)
    del creds[7]
    t2 = utcnow() - timedelta(hours=1)
    before = c.total_changes
    out = applier.handle(snapshot(key, 2, members, creds, issued_at=t2), "snapshot")
    assert out.applied and out.detail["members"] == 19 and out.detail["credentials"] == 18
    changed = {i for i, s in c.execute("SELECT id, updated_at FROM members")
               if s == format_ts(t2)}
    assert changed == {"m3", "m4"}  # the others keep their timestamps: they were not written
    assert rules.lookup(H[5]).member_id == "m6" and rules.lookup(H[7]) is None
    assert rules.member("m3").name == "Renamed"
    assert str(rules.lookup(H[4]).member_status) == "suspended"
    assert c.total_changes - before < 12  # a handful of rows and the meta, not 40 rows
    # the same rules again under a new version: nothing but the version is written
    before = c.total_changes
    assert applier.handle(snapshot(key, 3, members, creds), "snapshot").applied
    assert c.total_changes - before == 3  # rule_version, rule_issued_at, rule_kind
    # and the end state is exactly what a fresh door gets from the same snapshot
    fresh = RuleCache(Path(rules.path).with_name("fresh.db"))
    try:
        other = RuleApplier(fresh, PublicKeys([key.public]), site="s1", door="d1")
        assert other.handle(snapshot(key, 3, members, creds), "snapshot").applied
        q = ("SELECT m.id, m.name, m.plan, m.status, m.valid_from, m.valid_until, m.origin, "
             "c.hash, c.status, c.technology, c.origin FROM members m LEFT JOIN credentials "
             "c ON c.member_id = m.id ORDER BY m.id, c.hash")
        assert c.execute(q).fetchall() == fresh.db.conn.execute(q).fetchall()
    finally:
        fresh.close()


def test_a_large_document_is_applied_by_a_child_process(rules, key, journal, tmp_path):
    """accessd.uplink.apply: the same checks and the same one transaction, another process."""
    from accessd.protocol.signing import public_line
    from accessd.uplink.apply import apply_in_child

    pub = tmp_path / "office.pub"
    pub.write_text(public_line(key.public) + "\n")

    def child(raw: bytes, kind: str = "snapshot") -> dict:
        return apply_in_child(raw, kind, rules=tmp_path / "rules.db",
                              journal=tmp_path / "journal.db", keys=pub, site="s1",
                              door="d1", max_bytes=1 << 20)

    out = child(snapshot(key, 1, [member("a")], [cred(H[0], "a")]))
    assert out["applied"] and out["detail"]["version"] == 1, out
    assert rules.version == 1 and rules.lookup(H[0]).member_id == "a"
    before = dump(rules)
    out = child(tampered(key))
    assert not out["applied"] and out["reason"] == "bad_signature"
    out = child(snapshot(key, 1, [], []))
    assert out["ignored"]
    out = child(encode(make_delta(key, site="s1", version=3, base_version=2)), "delta")
    assert out["reason"] == "version_gap" and out["request_snapshot"]
    assert dump(rules) == before  # every rejection left the cache untouched
    out = apply_in_child(b"{}", "snapshot", rules=tmp_path / "rules.db", journal=None,
                         keys=tmp_path / "missing.pub", site="s1", door="d1", max_bytes=1024)
    assert out["reason"] == "apply_failed" and dump(rules) == before


GOOD_SCHEDULE = {"timezone": "Europe/Paris", "opens": "09:00", "closes": "18:00",
                 "days": ["mon"], "closures": []}


@pytest.mark.parametrize(("make", "kind"), [
    (lambda k: raw(k, schedule={**GOOD_SCHEDULE, "timezone": "Europe/Pariss"}), "snapshot"),
    (lambda k: raw(k, schedule={**GOOD_SCHEDULE, "closures": ["2026-02-30"]}), "snapshot"),
    (lambda k: raw(k, schedule={**GOOD_SCHEDULE, "opens": "18:00", "closes": "09:00"}),
     "snapshot"),
    (lambda k: raw(k, members=[{**member("x"), "valid_until": "2026-02-30"}]), "snapshot"),
    (lambda k: raw(k, members=[{**member("x"), "valid_from": "2026-13-01"}]), "snapshot"),
    (lambda k: encode(make_delta(k, site="s1", version=2, base_version=1,
                                 schedule={**GOOD_SCHEDULE, "timezone": "Mars/Olympus"})),
     "delta"),
], ids=["zone", "closure", "hours", "until", "from", "delta-zone"])
def test_a_calendar_that_means_nothing_is_refused_whole(applier, rules, key, make, kind):
    """Signed by the office and valid by the schema, but an office typo: refused before any
    write, with its own reason, so the door keeps its previous rules."""
    base(applier, key)
    before = dump(rules)
    out = applier.handle(make(key), kind)
    assert not out.applied and out.reason == "bad_calendar", out
    assert out.detail["error"]
    assert dump(rules) == before
