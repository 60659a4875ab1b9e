"""The storage shim (faultsuite/storage/shim.c): its log holds every byte written under the
tracked folder, in order with the markers; it stalls the syncs of that folder only; and what it
cannot follow it says, instead of leaving a silent gap. Real processes, real files, real SQLite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT

from faultsuite.storage import (
    ShimError,
    build_shim,
    marker_path,
    read_stats,
    shim_env,
    start,
)
from faultsuite.storage.crash import Disk, ReplayError, read_folder, snapshot
from faultsuite.storage.log import Flag, Op, file_names, read_log


def run_child(code: str, folder: Path, **shim: object) -> subprocess.CompletedProcess[str]:
    env = shim_env(folder, **shim)  # type: ignore[arg-type]
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(folder)], env=env,
                       cwd=folder.parent, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


SQLITE_WORKLOAD = """
import os, sqlite3, subprocess, sys
from faultsuite.storage import Markers
folder = sys.argv[1]
marks = Markers.from_env()
a = sqlite3.connect(folder + "/a.db", isolation_level=None)
a.execute("PRAGMA journal_mode=WAL"); a.execute("PRAGMA synchronous=FULL")
a.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, v BLOB)")
b = sqlite3.connect(folder + "/a.db", isolation_level=None)   # a second connection
for i in range(1500):
    (a if i % 2 else b).execute("INSERT INTO t (v) VALUES (?)", (os.urandom(200 + i % 700),))
    marks.mark(f"commit {i}")
a.execute("DELETE FROM t WHERE i % 3 = 0")
a.execute("PRAGMA wal_checkpoint(TRUNCATE)")
a.execute("UPDATE t SET v = zeroblob(100) WHERE i % 5 = 0")
a.execute("VACUUM")
b.close()
a.close()                                     # the last close checkpoints and deletes the WAL
c = sqlite3.connect(folder + "/b.db", isolation_level=None)   # a second file, left open
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE u (x)")
subprocess.run(["true"], check=True)  # vfork + close_range in the child: c keeps its fds
c.executemany("INSERT INTO u VALUES (?)", [(os.urandom(50),) for _ in range(300)])
# plain Python file I/O: write, append, pwrite, writev, truncate, rename, unlink, dup
with open(folder + "/notes.txt", "w") as f:
    f.write("hello\\n" * 1000)
fd = os.open(folder + "/notes.txt", os.O_WRONLY | os.O_APPEND)
os.write(fd, b"appended")
os.pwrite(fd, b"PW", 3)                       # Linux appends a pwrite on an O_APPEND file
os.close(fd)
fd = os.open(folder + "/vec.bin", os.O_RDWR | os.O_CREAT, 0o644)
os.writev(fd, [b"a" * 10, b"b" * 5000, b"c"])
os.pwrite(fd, b"XYZ", 4000)
d = os.dup(fd)
os.write(d, b"through a dup")
os.ftruncate(fd, 3000)
os.fsync(fd)
os.close(d); os.close(fd)
os.truncate(folder + "/notes.txt", 100)
os.rename(folder + "/notes.txt", folder + "/renamed.txt")
open(folder + "/gone.txt", "w").write("x")
os.unlink(folder + "/gone.txt")
os.makedirs(folder + "/sub", exist_ok=True)
open(folder + "/sub/inner.txt", "w").write("in a subfolder")
s = sqlite3.connect(folder + "/seed.db", isolation_level=None)   # in the snapshot already
s.execute("PRAGMA journal_mode=WAL")
s.execute("UPDATE s SET x = x * 2")
s.close()
sys.stdout.flush()
os._exit(0)                                   # b.db and its WAL stay as a crash leaves them
"""


def test_replaying_the_whole_log_reproduces_every_byte_sqlite_and_python_wrote(
        tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    seed = folder / "seed.db"  # a database that exists before the run: in the snapshot
    import sqlite3

    conn = sqlite3.connect(seed)
    conn.execute("CREATE TABLE s (x)")
    conn.executemany("INSERT INTO s VALUES (?)", [(i,) for i in range(100)])
    conn.commit()
    conn.close()
    snapshot(folder, tmp_path / "snap")
    log = tmp_path / "io.log"
    run_child(SQLITE_WORKLOAD, folder, log=log, markers=True)
    records = read_log(log)
    ops = Counter(r.op for r in records)
    assert ops[Op.WRITE] > 1500 and ops[Op.SYNC] > 700 and ops[Op.MARK] == 1500
    assert ops[Op.UNLINK] >= 2 and ops[Op.RENAME] == 1 and ops[Op.TRUNCATE] >= 2
    assert ops[Op.DUP] >= 1 and ops[Op.UNSUPPORTED] == 0
    assert any(r.op == Op.SYNC and r.flags & Flag.ISDIR for r in records), \
        "SQLite syncs the folder after creating a WAL: the shim must see it"
    disk = Disk(tmp_path / "snap", folder)
    disk.advance(records, len(records))
    assert disk.files() == read_folder(folder)
    assert {"a.db", "b.db", "b.db-wal", "renamed.txt", "vec.bin", "seed.db",
            "sub/inner.txt"} <= set(read_folder(folder))
    # the comparison is byte-exact: without a write that left its mark, it no longer matches
    names = file_names(records)
    wal = [i for i, r in enumerate(records) if r.op == Op.WRITE and names[i].endswith("b.db-wal")]
    vec = [i for i, r in enumerate(records) if r.op == Op.WRITE and names[i].endswith("vec.bin")]
    for i in (wal[-1], vec[0]):
        short = Disk(tmp_path / "snap", folder)
        short.advance(records[:i] + records[i + 1:], len(records) - 1)
        assert short.files() != read_folder(folder)
    # an empty snapshot plus the log is not enough: the check above can fail
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReplayError, match="never created"):
        Disk(empty, folder).advance(records, len(records))


def test_markers_are_logged_in_order_with_the_writes_around_them(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    log = tmp_path / "io.log"
    run_child("""
import os, sys
from faultsuite.storage import Markers
m = Markers.from_env()
fd = os.open(sys.argv[1] + "/f", os.O_WRONLY | os.O_CREAT, 0o644)
for i in range(50):
    os.write(fd, bytes([i]) * 10)
    m.mark(f"wrote {i}")
    os.fsync(fd)
    m.mark(f"synced {i}")
""", folder, log=log, markers=True)
    seq = [(r.op, r.text if r.op == Op.MARK else None) for r in read_log(log)
           if r.op in (Op.WRITE, Op.SYNC, Op.MARK)]
    expected = []
    for i in range(50):
        expected += [(Op.WRITE, None), (Op.MARK, f"wrote {i}"), (Op.SYNC, None),
                     (Op.MARK, f"synced {i}")]
    assert seq == expected
    assert marker_path(log).read_text().startswith("wrote 0synced 0")


def test_a_fifo_in_the_folder_neither_blocks_the_process_nor_is_logged(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    os.mkfifo(folder / "taps")
    log = tmp_path / "io.log"
    r = run_child("""
import os, sys, threading
fifo = sys.argv[1] + "/taps"
got = []
reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
reader.start()                                  # blocks in open() until a writer comes
with open(fifo, "w") as w:                      # the same process opens the other end
    w.write("0A1B2C3D4E\\n")
reader.join(30)
print(got)
""", folder, log=log)
    assert "0A1B2C3D4E" in r.stdout
    assert read_log(log) == []


def test_only_files_under_the_folder_are_logged(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    (tmp_path / "store2").mkdir()  # same prefix, another folder
    (tmp_path / "link").symlink_to(folder)  # reached through a symbolic link: the same folder
    log = tmp_path / "io.log"
    run_child("""
import os, sys
folder = sys.argv[1]
parent = os.path.dirname(folder)
for name in (parent + "/store2/x", parent + "/outside", parent + "/link/through-link",
             folder + "/inside"):
    fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"data")
    os.fsync(fd)
    os.close(fd)
os.chdir(folder)
fd = os.open("relative", os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b"r")
os.close(fd)
dfd = os.open(folder, os.O_RDONLY)
fd = os.open("at-dirfd", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=dfd)
os.close(fd)
os.close(dfd)
""", folder, log=log)
    records = read_log(log)
    opened = sorted(Path(r.path).name for r in records
                    if r.op == Op.OPEN and not r.flags & Flag.ISDIR)
    assert opened == ["at-dirfd", "inside", "relative", "through-link"]
    assert all(Path(p).parent == folder.resolve()
               for p in file_names(records) if p and p != str(folder.resolve()))


DELAY_CHILD = """
import json, os, sys, time
folder = sys.argv[1]
out = {"inside": [], "outside": []}
for where, name in (("inside", folder + "/f"), ("outside", os.path.dirname(folder) + "/g")):
    fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644)
    for i in range(3):
        os.write(fd, b"x")
        t = time.monotonic()
        (os.fsync if i % 2 else os.fdatasync)(fd)
        out[where].append((time.monotonic() - t) * 1000)
    os.close(fd)
print(json.dumps(out))
"""


def test_every_sync_under_the_folder_is_delayed_and_no_other(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    stats = tmp_path / "stats"
    r = run_child(DELAY_CHILD, folder, delay_ms=120, stats=stats)
    took = json.loads(r.stdout)
    assert all(ms >= 120 for ms in took["inside"]), took  # a lower bound: a sleep never ends early
    [counters] = read_stats(stats)
    assert counters["syncs"] == 3 and counters["delayed"] == 3  # the 3 outside: not counted
    assert counters["delayed_ms"] >= 3 * 120
    assert counters["records"] == 0  # no log asked for


def test_a_delay_range_draws_each_stall_within_it(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    stats = tmp_path / "stats"
    r = run_child(DELAY_CHILD, folder, delay_ms=(50, 80), stats=stats)
    assert all(ms >= 50 for ms in json.loads(r.stdout)["inside"])
    [counters] = read_stats(stats)
    assert counters["delayed"] == 3 and counters["delayed_ms"] >= 150


def test_start_runs_a_process_with_the_shim(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    log = tmp_path / "io.log"
    proc = start([sys.executable, "-c", "import os, sys; fd = os.open(sys.argv[1] + '/f', "
                  "os.O_WRONLY | os.O_CREAT, 0o644); os.write(fd, b'abc'); os.fsync(fd)",
                  str(folder)], folder, log=log, delay_ms=1)
    assert proc.wait(60) == 0
    assert [r.op for r in read_log(log)] == [Op.OPEN, Op.WRITE, Op.SYNC]


def test_a_disk_that_drops_flushes_logs_no_sync(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    log = tmp_path / "io.log"
    run_child("""
import os, sys
fd = os.open(sys.argv[1] + "/f", os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b"abc")
os.fsync(fd)
""", folder, log=log, sync="drop")
    assert [r.op for r in read_log(log)] == [Op.OPEN, Op.WRITE]


def test_a_writable_shared_mapping_is_refused_by_the_replay(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    snapshot(folder, tmp_path / "snap")
    log = tmp_path / "io.log"
    run_child("""
import mmap, os, sys
for name in ("data", "x.db-shm"):
    fd = os.open(sys.argv[1] + "/" + name, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, 4096)
    m = mmap.mmap(fd, 4096)
    m[:5] = b"hello"
    m.close()
    os.close(fd)
""", folder, log=log)
    records = read_log(log)
    [bad] = [r for r in records if r.op == Op.UNSUPPORTED]
    assert bad.path.endswith("/data") and "mapping" in bad.text
    with pytest.raises(ReplayError, match="writable shared mapping"):
        Disk(tmp_path / "snap", folder).advance(records, len(records))


def test_configuration_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    with pytest.raises(ShimError, match="outside the tracked folder"):
        shim_env(folder, log=folder / "io.log")
    with pytest.raises(ValueError, match="delay_ms"):
        shim_env(folder, delay_ms=(80, 50))
    with pytest.raises(ValueError, match="sync must be"):
        shim_env(folder, sync="sometimes")
    with pytest.raises(ShimError, match="does not exist"):
        shim_env(tmp_path / "nowhere")
    env = shim_env(folder)
    env["ACCESSD_FSYNC_DELAY_MS"] = "fast"
    r = subprocess.run([sys.executable, "-c", "pass"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "ACCESSD_FSYNC_DELAY_MS must be" in r.stderr


def test_without_a_compiler_the_shim_cannot_be_built(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCESSD_SHIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(ShimError, match="no C compiler"):
        build_shim()
