"""The `power_loss` fault scenario's checker can fail: a journal without fsync loses committed
events under the same model that finds none lost with the product's `synchronous=FULL`, and
each invariant catches a folder damaged on purpose. Then the durability bugs the model found in
the product, now fixed (docs/reliability.md, "Durability bugs it found").
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, write_config

from faultsuite.power import RuleSets
from faultsuite.power_loss import (
    Expected,
    LoggedRun,
    Plan,
    Tally,
    check_folder,
    negative_control,
    simulate,
)
from faultsuite.storage import shim_env
from faultsuite.storage.crash import Disk, Loss, snapshot, write_folder
from faultsuite.storage.log import Op, Record, file_names, read_log


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoggedRun, RuleSets]:
    """A small run of the real door code under the shim: taps, one snapshot, one purge."""
    run = LoggedRun(tmp_path_factory.mktemp("power_loss"),
                    Plan(cycles=1, taps=20, members=100, old_rows=300, cuts=45), seed=1)
    rs = run.prepare()
    run.execute(rs)
    return run, rs


def test_the_product_loses_nothing_committed_under_the_model(
        logged: tuple[LoggedRun, RuleSets]) -> None:
    run, rs = logged
    assert run.complete()
    tally = Tally()
    simulate(run, rs, random.Random(3), run.plan.cuts, tally)
    assert tally.problems == [] and tally.failed_cuts == 0
    assert all(tally.cuts[k] == 15 for k in ("taps", "rules", "purge"))
    assert sum(tally.lost.values()) > 0  # unsynced writes were really lost


def test_without_fsync_the_checker_finds_committed_events_lost(tmp_path: Path) -> None:
    tally = negative_control(tmp_path, random.Random(5), cuts=12, taps=20)
    assert tally.events_lost > 0, tally.figures()
    assert any("committed events lost" in p for p in tally.problems)


def _end_state(run: LoggedRun, dest: Path) -> Expected:
    """The folder as the run left it (nothing lost), and every marker's promise."""
    disk = Disk(run.snapshot, run.storage)
    disk.advance(run.records, len(run.records))
    files, _ = disk.after_loss(Loss.NONE, random.Random(0))
    write_folder(files, dest)
    exp = Expected(rules_old=run.initial_rules)
    for r in run.records:
        if r.op == Op.MARK:
            exp.see(r.text)
    return exp


def _damaged(run: LoggedRun, rs: RuleSets, sql: str) -> list[str]:
    exp = _end_state(run, run.cut)
    db = "rules.db" if "members" in sql else "journal.db"
    conn = sqlite3.connect(run.cut / db)
    conn.execute(sql)
    conn.commit()
    conn.close()
    problems, _ = check_folder(run.cut, exp, rs)
    return problems


def test_each_invariant_catches_a_damaged_folder(logged: tuple[LoggedRun, RuleSets]) -> None:
    run, rs = logged
    exp = _end_state(run, run.cut)
    assert check_folder(run.cut, exp, rs) == ([], "old")
    assert exp.purged_upto > 0 and len(exp.committed) > 300

    newest = max(exp.committed)
    problems = _damaged(run, rs, f"DELETE FROM events WHERE seq = {newest - 3}")
    assert any("committed events lost" in p for p in problems)
    assert any("gap in sequence" in p for p in problems)

    problems = _damaged(run, rs, "UPDATE meta SET value = value + 1 WHERE key = 'last_seq'")
    assert any("meta last_seq" in p for p in problems)

    problems = _damaged(run, rs, f"INSERT INTO events SELECT {exp.purged_upto}, 'back', ts, "
                                 "site, door, reader, type, member_id, member_name, plan, "
                                 "result, reason, credential, clock_trusted, detail FROM events "
                                 f"WHERE seq = {newest}")
    assert any("is back" in p for p in problems)

    problems = _damaged(run, rs, "INSERT INTO members (id, name, plan, status, updated_at) "
                                 "VALUES ('b-999999', 'intruder', 'subscriber', 'active', 'x')")
    assert any("mixed" in p for p in problems)


def test_a_corrupt_page_is_caught(logged: tuple[LoggedRun, RuleSets]) -> None:
    run, rs = logged
    exp = _end_state(run, run.cut)
    wal = run.cut / "journal.db-wal"
    if wal.exists():  # fold the WAL in, so the damage lands in the database file itself
        conn = sqlite3.connect(run.cut / "journal.db")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    db = run.cut / "journal.db"
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    leaves = [r[0] for r in conn.execute(
        "SELECT pageno FROM dbstat WHERE name = 'events' AND pageno > 1")]
    conn.close()
    assert leaves
    raw = bytearray(db.read_bytes())
    at = (leaves[len(leaves) // 2] - 1) * page_size
    raw[at:at + 8] = b"\xff" * 8  # a b-tree page header no SQLite page has
    db.write_bytes(bytes(raw))
    problems, _ = check_folder(run.cut, exp, rs)
    assert problems, "a journal with zeroed pages passed the check"
    shutil.rmtree(run.cut)


# -- product durability bugs the power-loss model found (fixed: accessd/store/spool.py) ---------
STOP_WITH_HELD_EVENTS = """
import sys
from accessd.config import load_config
from accessd.daemon.service import Daemon
from accessd.readers.base import CardRead
from accessd.store.journal import Journal
cfg = load_config(sys.argv[1])
daemon = Daemon(cfg)
daemon.start()
c = daemon.controller
c.journal = Journal(cfg.storage.journal_db, cfg.site.id, cfg.site.door, readonly=True)
c.on_card(CardRead("door", "0A1B2C3D4E", "simulated"))   # the journal refuses it: held
daemon.stop()                                             # held events spooled at stop
"""

START_AND_STOP = """
import sys
from accessd.config import load_config
from accessd.daemon.service import Daemon
daemon = Daemon(load_config(sys.argv[1]))
daemon.start()                                            # imports the spool file
daemon.stop()
"""


def _run_under_shim(code: str, config: Path, state: Path, log: Path) -> list[Record]:
    env = shim_env(state, log=log)
    r = subprocess.run([sys.executable, "-c", code, str(config)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return read_log(log)


def _spooled_runs(tmp_path: Path) -> tuple[Path, Path, list[Record]]:
    """A daemon stopped with a held event: its folder, snapshot and log."""
    state = tmp_path / "state"
    state.mkdir(parents=True)
    snapshot(state, tmp_path / "snap")
    records = _run_under_shim(STOP_WITH_HELD_EVENTS, write_config(tmp_path), state,
                              tmp_path / "stop.log")
    assert list((state / "spool").glob("spool-*.jsonl")), "nothing spooled: the setup broke"
    return state, tmp_path / "snap", records


def _journal_after_next_start(tmp_path: Path, files: dict[str, bytes]) -> list[tuple[str, str]]:
    from accessd.config import load_config
    from accessd.daemon.service import Daemon

    write_folder(files, tmp_path / "state")  # makes tmp_path too
    daemon = Daemon(load_config(write_config(tmp_path)))
    try:
        daemon.start()
        assert daemon.controller is not None
        rows = [(str(e.event.type), e.event.reason or "")
                for e in daemon.controller.journal.iter_all()]
    finally:
        daemon.stop()
    return rows


def test_events_spooled_at_stop_survive_a_power_loss_after_the_stop(tmp_path: Path) -> None:
    state, snap, records = _spooled_runs(tmp_path)
    disk = Disk(snap, state)
    disk.advance(records, len(records))  # the daemon has stopped and said "spooled"
    files, _ = disk.after_loss(Loss.ALL, random.Random(0))
    spooled = [n for n in files if n.startswith("spool/spool-") and n.endswith(".jsonl")]
    assert spooled, f"the spool file is gone after the power loss: {sorted(files)}"


def test_a_spool_file_is_journalled_once_whatever_the_instant_of_a_power_loss(
        tmp_path: Path) -> None:
    state, _, _ = _spooled_runs(tmp_path / "first")
    snapshot(state, tmp_path / "snap")  # the spool file is durable before the import
    records = _run_under_shim(START_AND_STOP, write_config(tmp_path / "first"), state,
                              tmp_path / "import.log")
    names = file_names(records)
    unlink = next(i for i, r in enumerate(records)
                  if r.op == Op.UNLINK and "/spool/spool-" in r.path)
    first_write = next(i for i, r in enumerate(records)
                       if r.op == Op.WRITE and names[i].endswith("journal.db-wal"))
    cuts = [first_write, unlink, unlink + 1, len(records)]  # before, at and after the unlink
    for n, at in enumerate(cuts):
        disk = Disk(tmp_path / "snap", state)
        disk.advance(records, at)
        files, _ = disk.after_loss(Loss.ALL, random.Random(n))
        rows = _journal_after_next_start(tmp_path / f"next-{n}", files)
        imported = [r for r in rows if r == ("alarm.journal_unavailable", "spooled_at_stop")]
        held = [r for r in rows if r[0] == "access.denied"]
        assert len(imported) == 1 and len(held) == 1, (
            f"cut at record {at} of {len(records)}: the spool file was journalled "
            f"{len(imported)} times ({len(held)} copies of the held tap)")
