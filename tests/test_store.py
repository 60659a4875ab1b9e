"""The rule cache and the journal, on real SQLite files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from accessd.decision import Plan, Status
from accessd.errors import DuplicateCredential, JournalFullError, MemberNotFound
from accessd.events import Event, EventType
from accessd.store.db import connect, integrity_ok
from accessd.store.journal import Journal, LogFilter
from accessd.store.rules import RuleCache

H1, H2 = "a1" * 32, "b2" * 32


@pytest.fixture
def rules(tmp_path: Path):
    r = RuleCache(tmp_path / "rules.db")
    yield r
    r.close()


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal.db", "site", "door")
    yield j
    j.close()


def test_enroll_lookup_and_status(rules: RuleCache) -> None:
    m = rules.enroll(name="Ana", plan=Plan.OCCASIONAL, credential_hash=H1,
                     valid_until=date(2027, 1, 31))
    g = rules.lookup(H1)
    assert g is not None and g.member_id == m.id and g.plan is Plan.OCCASIONAL
    assert g.valid_until == date(2027, 1, 31)
    assert rules.lookup(H2) is None
    with pytest.raises(DuplicateCredential):
        rules.enroll(name="Bob", plan=Plan.SUBSCRIBER, credential_hash=H1)
    # the failed enrolment left nothing
    assert rules.counts() == {"members": 1, "credentials": 1, "rights": 0, "bookings": 0}
    rules.enroll(name="Ana", plan=Plan.OCCASIONAL, credential_hash=H2, member_id=m.id)
    assert len(rules.member(m.id).credentials) == 2
    rules.set_member_status(m.id, Status.SUSPENDED)
    assert rules.lookup(H2).member_status is Status.SUSPENDED
    rules.revoke_credential(H1[:12])
    assert rules.lookup(H1).credential_status is Status.REVOKED
    with pytest.raises(MemberNotFound):
        rules.set_member_status("nobody", Status.ACTIVE)


def test_enrolment_visible_to_another_open_connection(tmp_path: Path) -> None:
    daemon_view = RuleCache(tmp_path / "rules.db")
    cli = RuleCache(tmp_path / "rules.db")
    assert daemon_view.lookup(H1) is None
    cli.enroll(name="Ana", plan=Plan.SUBSCRIBER, credential_hash=H1)
    assert daemon_view.lookup(H1) is not None  # no restart, no cache to invalidate
    daemon_view.close()
    cli.close()


def test_journal_sequence_and_outbox(journal: Journal) -> None:
    entries = [journal.append(Event(EventType.ACCESS_GRANTED, reader="r")) for _ in range(5)]
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert len({e.id for e in entries}) == 5
    assert journal.depth() == 5
    assert journal.acknowledge(3) == 3
    assert [e.seq for e in journal.pending()] == [4, 5]
    assert journal.acknowledge(2) == 3  # never goes back
    assert journal.acknowledge(99) == 5  # never past what exists
    assert journal.pending() == []


def test_journal_round_trip_and_query(journal: Journal) -> None:
    ts = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    journal.append(Event(EventType.ACCESS_DENIED, ts=ts, reader="door", member_id="m-1",
                         member_name="Ana", plan="occasional", result="denied",
                         reason="outside_opening_hours", credential="abc",
                         detail={"direction": "entry"}))
    journal.append(Event(EventType.DOOR_OPENED, ts=ts + timedelta(minutes=1)))
    (e,) = journal.query(LogFilter(result="denied"))
    assert e.event.member_name == "Ana" and e.event.detail == {"direction": "entry"}
    assert e.event.ts == ts
    d = e.to_dict()
    assert d["type"] == "access.denied" and d["ts"] == "2026-11-25T10:00:00.000Z"
    assert [x.seq for x in journal.query(LogFilter(type="door.*"))] == [2]
    assert [x.seq for x in journal.query(LogFilter(member="An"))] == [1]
    assert journal.query(LogFilter(since=ts + timedelta(seconds=1)))[0].seq == 2


def test_retention_deletes_a_prefix_and_keeps_numbering(journal: Journal) -> None:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    old = now - timedelta(days=100)
    journal.append(Event(EventType.ACCESS_GRANTED, ts=old))
    journal.append(Event(EventType.ACCESS_GRANTED, ts=datetime(1970, 1, 1, tzinfo=UTC),
                         clock_trusted=False))
    journal.append(Event(EventType.ACCESS_GRANTED, ts=old + timedelta(days=1)))
    journal.append(Event(EventType.ACCESS_GRANTED, ts=datetime(1970, 1, 1, tzinfo=UTC),
                         clock_trusted=False))  # newer than every trusted old entry: kept
    journal.append(Event(EventType.ACCESS_GRANTED, ts=now))
    assert journal.latest_trusted_ts() == now
    assert journal.purge(90, now=now) == 3
    assert [e.seq for e in journal.iter_all()] == [4, 5]
    assert journal.purge(90, now=now) == 0
    assert journal.append(Event(EventType.ACCESS_GRANTED)).seq == 6


WRITER = """
import sys
from accessd.store.journal import Journal
from accessd.events import Event, EventType
j = Journal(sys.argv[1], "site", "door")
for i in range(int(sys.argv[2])):
    j.append(Event(EventType.ACCESS_GRANTED, reader=sys.argv[3]))
    print(i, flush=True)
"""


def test_two_processes_share_one_gapless_sequence(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    Journal(path, "site", "door").close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), "150", name],
                              stdout=subprocess.DEVNULL) for name in ("daemon", "cli")]
    assert [p.wait(60) for p in procs] == [0, 0]
    j = Journal(path, "site", "door")
    seqs = [e.seq for e in j.iter_all()]
    assert seqs == list(range(1, 301))
    assert integrity_ok(j.db)
    j.close()


def test_sigkill_mid_burst_keeps_every_committed_event(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "100000", "r"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    confirmed = -1
    deadline = time.monotonic() + 30
    while confirmed < 300 and time.monotonic() < deadline:
        confirmed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    j = Journal(path, "site", "door")
    assert integrity_ok(j.db)
    seqs = [e.seq for e in j.iter_all()]
    assert len(seqs) >= confirmed + 1  # everything reported committed is there
    assert seqs == list(range(1, len(seqs) + 1))  # and no gap
    j.close()


def test_readonly_journal_raises_journal_full(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    Journal(path, "site", "door").close()
    ro = Journal(path, "site", "door", readonly=True)
    with pytest.raises(JournalFullError):
        ro.append(Event(EventType.ACCESS_GRANTED))
    ro.close()


def test_wal_mode_and_full_sync(tmp_path: Path) -> None:
    db = connect(tmp_path / "x.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    db.conn.close()
    assert sqlite3.connect(tmp_path / "x.db").execute("PRAGMA integrity_check").fetchone()[0] \
        == "ok"


def test_root_cli_refuses_service_owned_state(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from accessd.admin import Site
    from accessd.config import parse_config
    from accessd.errors import AccessdError

    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 4242, 4242)
    cfg = parse_config(f'[[readers]]\nname = "d"\ntype = "simulated"\n[storage]\n'
                       f'dir = "{state}"\n')
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(AccessdError, match="belongs to 4242: run this as that user"):
        Site.open(cfg)
    assert not (state / "rules.db").exists()
