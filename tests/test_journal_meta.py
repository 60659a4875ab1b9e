"""The journal's meta never wedges the door, and its numbering survives a journal replaced."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_config

from accessd.events import Event, EventType
from accessd.store.journal import Journal, stored_int


def _journal(path: Path, n: int = 0) -> Journal:
    j = Journal(path, "s1", "d1")
    if n:
        j.append_many([Event(EventType.ACCESS_GRANTED, member_id=f"m{i}") for i in range(n)])
    return j


def _set_meta(path: Path, **values: object) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    with conn:
        for key, value in values.items():
            conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO "
                         "UPDATE SET value = excluded.value", (key, value))
    conn.close()


@pytest.mark.parametrize(("raw", "value"), [
    (29, 29), ("29", 29), ("29.0", 29), (29.0, 29), (" 7 ", 7), ("x", None), ("2.5", None),
    ("-1", None), (True, None), (None, None), ("nan", None), ("1e400", None), ("٣", None)])
def test_stored_numbers_are_read_for_what_they_mean(raw, value):
    assert stored_int(raw) == value


def test_a_float_acknowledged_mark_is_read_and_repaired(tmp_path, caplog):
    path = tmp_path / "journal.db"
    _journal(path, 40).close()
    _set_meta(path, acked_seq="29.0")
    ro = Journal(path, "s1", "d1", readonly=True)
    assert (ro.acked_seq, ro.depth()) == (29, 11)  # read leniently, nothing written
    ro.close()
    with caplog.at_level(logging.WARNING):
        j = Journal(path, "s1", "d1")
    assert "repaired meta acked_seq '29.0' -> 29" in caplog.text
    assert j.conn.execute("SELECT value FROM meta WHERE key = 'acked_seq'").fetchone()[0] \
        == "29"
    assert "last_seq" not in caplog.text  # what was right is left alone
    assert j.acknowledge(35) == 35
    with pytest.raises(ValueError):
        j.acknowledge(36.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        j.acknowledge(True)
    j.close()


def test_garbage_in_meta_never_stops_journalling(tmp_path, caplog):
    path = tmp_path / "journal.db"
    _journal(path, 12).close()
    _set_meta(path, last_seq="oops", acked_seq="{", journal_id="not an id")
    ro = Journal(path, "s1", "d1", readonly=True)
    assert (ro.last_seq, ro.acked_seq, ro.journal_id) == (12, 0, None)
    ro.close()
    with caplog.at_level(logging.WARNING):
        j = Journal(path, "s1", "d1")
    assert j.append(Event(EventType.DOOR_OPENED)).seq == 13  # numbering goes on
    assert (j.last_seq, j.acked_seq, len(j.journal_id or "")) == (13, 0, 32)
    assert "journal_id" in caplog.text and "last_seq 'oops' -> 12" in caplog.text
    # a mark behind the rows (a restored meta) is brought up to them
    _set_meta(path, last_seq=5)
    j.close()
    j = Journal(path, "s1", "d1")
    assert j.last_seq == 13 and j.append(Event(EventType.DOOR_CLOSED)).seq == 14
    j.close()


def test_status_without_the_daemon_shows_a_bad_journal_instead_of_crashing(tmp_path):
    config = write_config(tmp_path)
    state = tmp_path / "state"
    _journal(state / "journal.db", 40).close()
    _set_meta(state / "journal.db", acked_seq="29.0")
    r = subprocess.run([sys.executable, "-m", "accessd", "--config", str(config), "status",
                        "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stdout)["journal"] == {"last_seq": 40, "acked_seq": 29, "depth": 11}
    assert "Traceback" not in r.stderr


def test_a_rebase_renumbers_the_unacknowledged_entries_once(tmp_path):
    j = _journal(tmp_path / "journal.db", 5)
    j.acknowledge(2)
    old, new = j.journal_id, "c" * 32
    ids = [e.id for e in j.iter_all()]
    assert j.rebase("f" * 32, 100, new) is None  # not this journal's instruction
    assert j.rebase(old, 100, new) == 3
    assert [e.seq for e in j.iter_all()] == [1, 2, 101, 102, 103]
    assert [e.id for e in j.iter_all()] == ids  # the same events, renumbered
    assert (j.acked_seq, j.last_seq, j.journal_id, j.depth()) == (100, 103, new, 3)
    assert j.rebase(old, 100, "d" * 32) is None  # replayed: the journal moved on
    assert j.append(Event(EventType.DOOR_OPENED)).seq == 104
    assert j.new_identity() != new
    j.close()
