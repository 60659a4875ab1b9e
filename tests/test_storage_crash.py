"""The power-loss model (faultsuite/storage/crash.py) on small hand-written logs: what a file
keeps after its last sync, what it may lose or keep after it, a torn sector, names that need a
folder sync, -shm files, and a log the model cannot follow.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from faultsuite.storage import ShimError
from faultsuite.storage.crash import SECTOR, Disk, Loss, ReplayError
from faultsuite.storage.log import HEADER, MAGIC, Flag, Op, Record, read_log

SEEDS = range(300)
NO_FLAGS = Flag(0)


class Log:
    """A hand-written shim log: records at increasing positions, one process."""

    def __init__(self, root: Path) -> None:
        self.root, self.records, self.pos = root, [], 0

    def add(self, op: Op, *, fd: int = -1, offset: int = 0, name: str | None = None,
            name2: str | None = None, data: bytes = b"", flags: Flag = NO_FLAGS,
            pid: int = 1) -> int:
        path = str(self.root / name) if name is not None else ""
        path2 = str(self.root / name2) if name2 is not None else ""
        self.records.append(Record(self.pos, op, flags, pid, fd, offset, 0, 0, path, path2,
                                   data))
        self.pos += 100
        return self.pos - 100

    def open(self, fd: int, name: str, flags: Flag = NO_FLAGS) -> None:
        self.add(Op.OPEN, fd=fd, name=name, flags=flags)

    def write(self, fd: int, offset: int, data: bytes) -> None:
        self.add(Op.WRITE, fd=fd, offset=offset, data=data)

    def sync(self, fd: int, covers: int | None = None, flags: Flag = NO_FLAGS) -> None:
        """A sync that covers everything logged before it (or before `covers`)."""
        self.add(Op.SYNC, fd=fd, offset=self.pos if covers is None else covers, flags=flags)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def disk_of(tmp_path: Path, root: Path, log: Log, files: dict[str, bytes]) -> Disk:
    snap = tmp_path / "snap"
    snap.mkdir(exist_ok=True)
    for name, content in files.items():
        (snap / name).write_bytes(content)
    disk = Disk(snap, root)
    disk.advance(log.records, len(log.records))
    return disk


def outcomes(disk: Disk, loss: Loss, name: str) -> list[bytes | None]:
    return [disk.after_loss(loss, random.Random(s))[0].get(name) for s in SEEDS]


def test_a_synced_write_survives_every_loss_and_a_later_one_may_not(tmp_path: Path,
                                                                      root: Path) -> None:
    log = Log(root)
    log.open(3, "f")
    log.write(3, 0, b"A" * 10)
    log.sync(3)
    log.write(3, 10, b"B" * 10)
    disk = disk_of(tmp_path, root, log, {"f": b""})
    assert set(outcomes(disk, Loss.ALL, "f")) == {b"A" * 10}
    assert set(outcomes(disk, Loss.NONE, "f")) == {b"A" * 10 + b"B" * 10}
    kept = set(outcomes(disk, Loss.SUBSET, "f"))
    assert b"A" * 10 in kept and b"A" * 10 + b"B" * 10 in kept
    assert all(k.startswith(b"A" * 10) for k in kept if k is not None)
    files, report = disk.after_loss(Loss.ALL, random.Random(0))
    assert report.lost and report.differ == ["f"] and report.pending_ops == 1


def test_a_sync_covers_only_what_was_logged_before_the_call_began(tmp_path: Path,
                                                                  root: Path) -> None:
    log = Log(root)
    log.open(3, "f")
    log.write(3, 0, b"A")
    began = log.pos  # the fsync starts here; another thread writes while it runs
    log.write(3, 1, b"B")
    log.sync(3, covers=began)
    disk = disk_of(tmp_path, root, log, {"f": b""})
    assert set(outcomes(disk, Loss.ALL, "f")) == {b"A"}


def test_unsynced_writes_in_order_up_to_a_torn_sector(tmp_path: Path, root: Path) -> None:
    log = Log(root)
    log.open(3, "f")
    log.write(3, 0, b"A" * (2 * SECTOR))
    disk = disk_of(tmp_path, root, log, {"f": bytes(2 * SECTOR)})
    seen = set()
    for out in outcomes(disk, Loss.PREFIX, "f"):
        assert out is not None and len(out) == 2 * SECTOR
        k = out.index(0) if 0 in out else len(out)
        assert out == b"A" * k + bytes(2 * SECTOR - k)  # a prefix of the write arrived
        seen.add(k)
    assert {0, SECTOR, 2 * SECTOR} <= seen
    assert any(k % SECTOR for k in seen), "no torn sector in 300 losses"


def test_unsynced_sectors_survive_independently_and_untouched_bytes_never_change(
        tmp_path: Path, root: Path) -> None:
    log = Log(root)
    log.open(3, "f")
    log.write(3, 100, b"N" * 800)  # sector 0 from byte 100, sector 1 up to byte 900
    disk = disk_of(tmp_path, root, log, {"f": b"o" * 1024})
    shapes = set()
    for out in outcomes(disk, Loss.SUBSET, "f"):
        assert out is not None
        assert out[:100] == b"o" * 100 and out[900:] == b"o" * 124  # never written: intact
        first, second = out[100:512], out[512:900]
        shapes.add((first.count(b"N"), second.count(b"N")))
        for piece in (first, second):  # each piece: all, nothing, or a prefix (torn)
            n = piece.count(b"N")
            assert piece == b"N" * n + b"o" * (len(piece) - n)
    assert (412, 0) in shapes and (0, 388) in shapes and (412, 388) in shapes and (0, 0) in shapes


def test_a_truncation_is_volatile_until_synced(tmp_path: Path, root: Path) -> None:
    log = Log(root)
    log.open(3, "f")
    log.add(Op.TRUNCATE, fd=3, offset=10)
    disk = disk_of(tmp_path, root, log, {"f": b"x" * 1000})
    assert set(outcomes(disk, Loss.ALL, "f")) == {b"x" * 1000}
    assert set(outcomes(disk, Loss.NONE, "f")) == {b"x" * 10}
    log.sync(3)
    disk = disk_of(tmp_path, root, log, {"f": b"x" * 1000})
    assert set(outcomes(disk, Loss.ALL, "f")) == {b"x" * 10}


def test_a_new_file_needs_its_folder_synced(tmp_path: Path, root: Path) -> None:
    log = Log(root)
    log.open(3, "new", Flag.CREATED)
    log.write(3, 0, b"data")
    log.sync(3)  # the data is durable, the name is not
    disk = disk_of(tmp_path, root, log, {})
    assert set(outcomes(disk, Loss.ALL, "new")) == {None}
    assert set(outcomes(disk, Loss.PREFIX, "new")) == {None, b"data"}
    log.open(4, "", Flag.ISDIR)  # the folder itself, as SQLite opens it after creating a WAL
    log.sync(4, flags=Flag.ISDIR)
    disk = disk_of(tmp_path, root, log, {})
    assert set(outcomes(disk, Loss.ALL, "new")) == {b"data"}


def test_an_unlink_or_rename_not_synced_may_be_undone(tmp_path: Path, root: Path) -> None:
    log = Log(root)
    log.add(Op.UNLINK, name="gone")
    log.add(Op.RENAME, name="a", name2="b")
    disk = disk_of(tmp_path, root, log, {"gone": b"g", "a": b"content"})
    after = [disk.after_loss(Loss.PREFIX, random.Random(s))[0] for s in SEEDS]
    shapes = {(f.get("gone"), f.get("a"), f.get("b")) for f in after}
    # metadata commits in order: a rename never survives an unlink issued before it
    assert shapes == {(b"g", b"content", None), (None, b"content", None),
                      (None, None, b"content")}
    assert disk.after_loss(Loss.NONE, random.Random(0))[0] == {"b": b"content"}


def test_shm_files_are_dropped(tmp_path: Path, root: Path) -> None:
    log = Log(root)
    log.open(3, "j.db-shm", Flag.CREATED)
    log.write(3, 0, b"index")
    disk = disk_of(tmp_path, root, log, {"x.db-shm": b"old index", "x.db": b"db"})
    for loss in Loss:
        assert disk.after_loss(loss, random.Random(1))[0] == {"x.db": b"db"}


def test_rewriting_the_same_bytes_is_not_a_loss(tmp_path: Path, root: Path) -> None:
    log = Log(root)
    log.open(3, "f")
    log.write(3, 0, b"same")
    disk = disk_of(tmp_path, root, log, {"f": b"same"})
    _, report = disk.after_loss(Loss.ALL, random.Random(0))
    assert report.pending_ops == 1 and report.dropped == 1 and not report.lost


def test_open_with_truncation_dup_and_fork(tmp_path: Path, root: Path) -> None:
    log = Log(root)
    log.open(3, "f", Flag.TRUNC)
    log.add(Op.DUP, fd=7, offset=3)
    log.add(Op.FORK, pid=2, offset=1)
    log.add(Op.WRITE, pid=2, fd=7, offset=0, data=b"child")
    disk = disk_of(tmp_path, root, log, {"f": b"old content"})
    assert disk.files() == {"f": b"child"}
    assert set(outcomes(disk, Loss.ALL, "f")) == {b"old content"}


def test_what_the_model_cannot_follow_is_refused(tmp_path: Path, root: Path) -> None:
    cases = [
        (lambda log: log.write(9, 0, b"x"), "never saw opened"),
        (lambda log: log.open(3, "unknown"), "never created"),
        (lambda log: log.add(Op.UNSUPPORTED, name="f", data=b"writable shared mapping"),
         "cannot follow"),
    ]
    for build, message in cases:
        log = Log(root)
        build(log)
        with pytest.raises(ReplayError, match=message):
            disk_of(tmp_path, root, log, {"f": b""})
    log = Log(root)
    log.add(Op.UNSUPPORTED, name="x.db-shm", data=b"writable shared mapping")
    disk_of(tmp_path, root, log, {})  # a -shm mapping is expected: the index is not durable


def test_the_binary_log_round_trips_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    def record(op: Op, path: bytes, data: bytes, offset: int = 0) -> bytes:
        return HEADER.pack(MAGIC, op, 0, 42, 5, offset, len(data), len(path), 0, 7, 99) \
            + path + data

    raw = record(Op.OPEN, b"/x/f", b"") + record(Op.WRITE, b"", b"hello", 3) \
        + record(Op.MARK, b"", b"commit 1")
    log = tmp_path / "io.log"
    log.write_bytes(raw)
    recs = read_log(log)
    assert [(r.op, r.path, bytes(r.data), r.offset) for r in recs] == [
        (Op.OPEN, "/x/f", b"", 0), (Op.WRITE, "", b"hello", 3), (Op.MARK, "", b"commit 1", 0)]
    assert recs[1].pos == HEADER.size + 4 and recs[2].text == "commit 1"
    log.write_bytes(raw[:-3])
    with pytest.raises(ShimError, match="truncated record"):
        read_log(log)
    log.write_bytes(raw + b"garbage" * 10)
    with pytest.raises(ShimError, match="bad record magic"):
        read_log(log)
