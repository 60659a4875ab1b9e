"""The journal's writer: commits in groups off the door's lock, in order, without gaps, and
nobody hears of an entry before it is durable (accessd/store/writer.py).

A `StallingJournal` stands in for an SD card whose fsync stalls: each commit waits at a gate
the test opens, so the tests can look at the door *while* a commit is on its way.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import test_controller
from test_controller import ANA, OLI, tap

from accessd.decision import Plan
from accessd.errors import JournalFullError
from accessd.events import Event, EventType, JournalEntry
from accessd.store import spool
from accessd.store.journal import Journal
from accessd.store.writer import JournalWriter

ROOT = Path(__file__).resolve().parent.parent
MIA = "5566778899"
rig = test_controller.rig  # the controller on real gpiozero devices and SQLite files


class StallingJournal:
    """The real journal behind a gate: a commit starts, then waits until the gate opens."""

    def __init__(self, real: Journal) -> None:
        self.real = real
        self.gate = threading.Event()
        self.started = threading.Event()
        self.groups: list[list[str]] = []  # the event types of each commit, in order

    def append_many(self, events: list[Event]) -> list[JournalEntry]:
        self.groups.append([str(e.type) for e in events])
        self.started.set()
        if not self.gate.wait(30):
            raise TimeoutError("the test never opened the gate")
        return self.real.append_many(events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def committed_seqs(path: Path) -> list[int]:
    """What another connection (another process, the uplink) sees committed."""
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]
    finally:
        conn.close()


def test_taps_are_decided_while_a_commit_stalls_and_the_next_group_takes_them_all(rig) -> None:
    c, relay, pin, clock, *_ = rig
    c.rules.enroll(name="Mia", plan=Plan.SUBSCRIBER, credential_hash=c.hasher(MIA))
    heard: list[JournalEntry] = []
    c.listeners.append(heard.append)
    stalling = StallingJournal(c.journal)
    c.journal = stalling  # type: ignore[assignment]
    assert c.on_card(tap(ANA)).granted
    assert stalling.started.wait(10)  # the first commit is on its way to the card...
    relay.lock()
    clock.mono += 1
    d = c.on_card(tap(MIA))  # ...and the next member is let in meanwhile
    assert d is not None and d.granted and pin.state is True
    assert not c.on_card(tap(OLI)).granted  # 22:00: an occasional member is refused
    assert heard == [] and c.counters.decided == 3
    assert (c.counters.granted, c.counters.denied) == (0, 0)  # nothing durable yet
    assert c.pending_events == 3
    stalling.gate.set()
    assert c.flush()
    assert stalling.groups == [["access.granted"], ["access.granted", "access.denied"]]
    assert [(e.seq, e.event.member_name) for e in heard] == [(1, "Ana"), (2, "Mia"),
                                                             (3, "Oli")]
    assert (c.counters.granted, c.counters.denied) == (2, 1) and c.pending_events == 0
    assert c.last_decision is not None and c.last_decision["member_name"] == "Oli"


def test_a_listener_hears_of_an_entry_only_once_another_connection_can_read_it(rig) -> None:
    c, relay, pin, clock, *_ = rig
    seen: list[tuple[int, list[int]]] = []
    c.listeners.append(lambda e: seen.append((e.seq, committed_seqs(c.journal.path))))
    for i in range(20):
        clock.mono += 1
        c.on_card(tap(ANA if i % 2 else OLI))
        relay.lock()
    assert c.flush()
    assert [s for s, _ in seen] == list(range(1, 21))
    assert all(seq in visible for seq, visible in seen)


APPENDER = """
import sys
from accessd.events import Event, EventType
from accessd.store.journal import Journal
j = Journal(sys.argv[1], "site", "front")
print("ready", flush=True)
for i in range(int(sys.argv[2])):
    j.append(Event(EventType.MEMBER_ENROLLED, detail={"n": i}))
j.close()
"""


def test_order_and_one_gapless_sequence_with_the_cli_appending_from_another_process(
        rig) -> None:
    """Two reader threads let members in while another process journals enrolments, as the
    CLI does: one sequence without gaps, each reader's entries in the order decided."""
    c, relay, *_ = rig
    uids = {name: [f"{base + i:010X}" for i in range(150)]
            for name, base in (("north", 0xAB00000000), ("south", 0xCD00000000))}
    with c.rules.transaction() as conn:
        c.rules.bulk_load(
            conn, [{"id": f"{name}-{i:03d}", "name": f"{name} {i:03d}", "plan": "subscriber"}
                   for name in uids for i in range(150)],
            [{"hash": c.hasher(uid), "member_id": f"{name}-{i:03d}"}
             for name, cards in uids.items() for i, uid in enumerate(cards)])
    heard: list[JournalEntry] = []
    c.listeners.append(heard.append)
    cli = subprocess.Popen([sys.executable, "-c", APPENDER, str(c.journal.path), "150"],
                           cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert cli.stdout is not None and cli.stdout.readline().strip() == "ready"

    def reader(name: str) -> None:
        for uid in uids[name]:
            c.on_card(tap(uid, reader=name))

    threads = [threading.Thread(target=reader, args=(n,)) for n in uids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert cli.wait(60) == 0
    assert c.flush()
    entries = list(c.journal.iter_all())
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1)) == list(
        range(1, 451))
    assert c.journal.last_seq == 450
    assert sum(e.event.type is EventType.MEMBER_ENROLLED for e in entries) == 150
    ours = [e for e in entries if e.event.type is not EventType.MEMBER_ENROLLED]
    assert [e.seq for e in heard] == [e.seq for e in ours]  # every one, in sequence order
    for name in uids:
        assert [e.event.member_name for e in ours if e.event.reader == name] == [
            f"{name} {i:03d}" for i in range(150)]
    assert c.counters.granted == c.counters.decided == 300


def test_stop_writes_what_is_queued_before_the_writer_ends(rig) -> None:
    c, relay, pin, clock, *_ = rig
    stalling = StallingJournal(c.journal)
    c.journal = stalling  # type: ignore[assignment]
    for _ in range(5):
        clock.mono += 1
        c.on_card(tap(OLI))
    assert stalling.started.wait(10)
    c.record(c.event(EventType.DAEMON_STOPPED))
    opener = threading.Timer(0, stalling.gate.set)
    opener.start()
    assert c.close()
    opener.join()
    types = [str(e.event.type) for e in stalling.real.iter_all()]
    assert types == ["access.denied"] * 5 + ["daemon.stopped"]
    assert c.spool([Path("/nonexistent/never-used")]) is None  # nothing left to spool


class RefusingJournal:
    """A journal on a full disk, until `full` is cleared."""

    def __init__(self, real: Journal) -> None:
        self.real, self.full = real, True

    def append_many(self, events: list[Event]) -> list[JournalEntry]:
        if self.full:
            raise JournalFullError("database or disk is full")
        return self.real.append_many(events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_beyond_the_limit_the_oldest_held_events_are_dropped_and_said(tmp_path: Path,
                                                                      caplog) -> None:
    real = Journal(tmp_path / "journal.db", "site", "front")
    refusing = RefusingJournal(real)
    heard: list[JournalEntry] = []
    w = JournalWriter(refusing, on_durable=heard.extend, limit=3)  # type: ignore[arg-type]
    try:
        with caplog.at_level("ERROR", logger="accessd.store.writer"):
            for n in range(5):
                w.submit([Event(EventType.DOOR_OPENED, detail={"n": n})])
                assert not w.flush()
        assert not w.healthy and w.held == 3 and w.dropped == 2
        assert sum("dropping the oldest" in r.getMessage() for r in caplog.records) == 1
        refusing.full = False
        assert w.flush() and w.healthy and w.held == 0
        assert [e.event.type for e in heard][0] is EventType.JOURNAL_UNAVAILABLE
        assert [e.event.detail.get("n") for e in heard[1:]] == [2, 3, 4]
        assert heard[0].event.detail["events_held"] == 3
    finally:
        w.close()
        real.close()


def test_one_submission_is_never_split_between_two_commits(tmp_path: Path) -> None:
    real = Journal(tmp_path / "journal.db", "site", "front")
    stalling = StallingJournal(real)
    w = JournalWriter(stalling, on_durable=lambda entries: None)  # type: ignore[arg-type]
    try:
        w.submit([Event(EventType.DAEMON_STARTED)])
        assert stalling.started.wait(10)
        w.submit([Event(EventType.DOOR_OPENED)] * 600)
        w.submit([Event(EventType.DOOR_CLOSED)] * 600)  # together beyond one group's size
        w.submit([Event(EventType.DOOR_FORCED)] * 1500)  # alone beyond it: still whole
        stalling.gate.set()
        assert w.flush()
        assert [len(g) for g in stalling.groups] == [1, 600, 600, 1500]
    finally:
        w.close()
        real.close()


# -- the spool ----------------------------------------------------------------------------
def test_a_spool_file_the_journal_already_holds_is_deleted_not_journalled_again(
        tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    path = spool.save([Event(EventType.ACCESS_DENIED, reason="unknown_credential")], [folder])
    assert path is not None and path.stat().st_mode & 0o777 == 0o600
    copy = path.read_bytes()
    j = Journal(tmp_path / "journal.db", "site", "front")
    try:
        assert spool.import_spools(j, [folder], lambda now: True) == 1
        assert not path.exists()
        path.write_bytes(copy)  # a power loss undid the deletion
        assert j.holds_spool(path.name)
        assert spool.import_spools(j, [folder], lambda now: True) == 0
        assert not path.exists()
        types = [(str(e.event.type), e.event.reason) for e in j.iter_all()]
        assert types == [("alarm.journal_unavailable", "spooled_at_stop"),
                         ("access.denied", "unknown_credential")]
    finally:
        j.close()


def test_a_spool_file_the_journal_refuses_stays_with_the_later_ones(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    first = spool.save([Event(EventType.DOOR_OPENED)], [folder])
    second = spool.save([Event(EventType.DOOR_CLOSED)], [folder])
    assert first is not None and second is not None and first.name < second.name
    real = Journal(tmp_path / "journal.db", "site", "front")
    try:
        assert spool.import_spools(RefusingJournal(real), [folder],  # type: ignore[arg-type]
                                   lambda now: True) == 0
        assert first.exists() and second.exists() and real.last_seq == 0
        assert spool.import_spools(real, [folder], lambda now: True) == 2
        assert [str(e.event.type) for e in real.iter_all()] == [
            "alarm.journal_unavailable", "door.opened", "alarm.journal_unavailable",
            "door.closed"]
    finally:
        real.close()


@pytest.mark.parametrize("bad", [b"{not json\n", b'{"type": "no.such.type"}\n'])
def test_an_unreadable_spool_file_is_kept_and_the_others_imported(tmp_path: Path,
                                                                  bad: bytes) -> None:
    folder = tmp_path / "spool"
    good = spool.save([Event(EventType.DOOR_OPENED)], [folder])
    broken = folder / "spool-1.jsonl"
    broken.write_bytes(bad)
    j = Journal(tmp_path / "journal.db", "site", "front")
    try:
        assert spool.import_spools(j, [folder], lambda now: True) == 1
        assert broken.exists() and good is not None and not good.exists()
    finally:
        j.close()
