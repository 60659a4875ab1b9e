"""What a folder holds after a power loss: the initial snapshot plus the shim's log, cut anywhere.

The model (docs/reliability.md, "The power-loss model"):
- **data**: a file keeps every write, truncation and extension covered by its last completed
  fsync/fdatasync before the cut (a sync covers what was logged before the call began). Later
  operations are volatile: all lost (`Loss.ALL`), each 512-byte sector piece kept or lost at
  random (`Loss.SUBSET`), or kept in issue order up to a point (`Loss.PREFIX`); in the last two,
  one sector may be torn: only a prefix of the bytes written to it arrives. Bytes a write did not
  touch are never damaged (SQLite's "powersafe overwrite").
- **names**: creating, renaming and unlinking a file is volatile until the directory itself is
  fsynced (POSIX; ext4 is often kinder). Volatile name changes survive as an in-order prefix, as
  a journalling filesystem commits its metadata in order.
- **-shm files** are dropped: SQLite keeps its WAL index in shared memory and rebuilds it.
- `Loss.NONE` keeps everything: the state a SIGKILL leaves, and the log's completeness check.
"""

from __future__ import annotations

import enum
import os
import random
import shutil
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

from faultsuite.storage import ShimError
from faultsuite.storage.log import Flag, Op, Record

SECTOR = 512


class ReplayError(ShimError):
    """The log holds something the model cannot rebuild (an unsupported call, an unknown file)."""


class Loss(enum.Enum):
    NONE = "none"
    ALL = "all"
    SUBSET = "subset"
    PREFIX = "prefix"


@dataclass(frozen=True, slots=True)
class DataOp:
    """A volatile change to a file's bytes: a write (`data`), or a new size (`size`)."""

    pos: int
    offset: int = 0
    data: bytes | memoryview = b""
    size: int | None = None  # truncate to `size`
    grow: int | None = None  # extend to at least `grow` (fallocate)


def apply(buf: bytearray, op: DataOp) -> None:
    if op.size is not None:
        if op.size < len(buf):
            del buf[op.size:]
        else:
            buf.extend(bytes(op.size - len(buf)))
    elif op.grow is not None:
        if op.grow > len(buf):
            buf.extend(bytes(op.grow - len(buf)))
    else:
        if op.offset > len(buf):
            buf.extend(bytes(op.offset - len(buf)))
        buf[op.offset:op.offset + len(op.data)] = op.data


def sectors(op: DataOp) -> list[DataOp]:
    """A write split at 512-byte sector boundaries of the file (a truncation stays whole)."""
    if op.size is not None or op.grow is not None:
        return [op]
    out, at, end = [], op.offset, op.offset + len(op.data)
    while at < end:
        stop = min(end, (at // SECTOR + 1) * SECTOR)
        out.append(DataOp(op.pos, at, op.data[at - op.offset:stop - op.offset]))
        at = stop
    return out


_ids = count(1)


@dataclass(eq=False)
class Inode:
    durable: bytearray
    current: bytearray
    pending: list[DataOp] = field(default_factory=list)
    ident: int = field(default_factory=lambda: next(_ids))

    def change(self, op: DataOp) -> None:
        apply(self.current, op)
        self.pending.append(op)

    def sync(self, covers: int) -> None:
        keep = []
        for op in self.pending:
            if op.pos < covers:
                apply(self.durable, op)
            else:
                keep.append(op)
        self.pending = keep


@dataclass(frozen=True, slots=True)
class NameOp:
    pos: int
    kind: str  # "create" | "rename" | "unlink"
    name: str
    parent: str
    name2: str = ""
    inode: Inode | None = None


@dataclass(frozen=True, slots=True)
class DirHandle:
    name: str


@dataclass
class CutReport:
    """What one simulated loss did: which files differ from what the processes last wrote."""

    loss: Loss
    pending_ops: int  # volatile operations at the cut, data and names
    dropped: int  # sector pieces or name changes that did not survive
    torn: bool
    differ: list[str]

    @property
    def lost(self) -> bool:
        """Something written was really lost (the folder is not what the processes left)."""
        return bool(self.differ)


def _parent(name: str) -> str:
    return os.path.dirname(name) or "."


def _rename(names: dict[str, Inode], old: str, new: str) -> None:
    inode = names.pop(old, None)
    if inode is None:
        return
    names[new] = inode
    prefix = old + "/"
    for other in [n for n in names if n.startswith(prefix)]:  # a renamed folder
        names[new + other[len(old):]] = names.pop(other)


def _apply_name(names: dict[str, Inode], op: NameOp) -> None:
    if op.kind == "create":
        assert op.inode is not None
        names[op.name] = op.inode
    elif op.kind == "rename":
        _rename(names, op.name, op.name2)
    else:
        names.pop(op.name, None)


def is_shm(name: str) -> bool:
    return name.endswith("-shm")


class Disk:
    """The simulated medium under a folder, advanced one log record at a time."""

    def __init__(self, snapshot: Path, root: Path) -> None:
        """`snapshot` holds a copy of the folder taken before the logged run; `root` is the
        folder's real path during the run (the log names files by absolute path)."""
        self.root = Path(root).resolve()
        self.current: dict[str, Inode] = {}
        self.durable: dict[str, Inode] = {}
        self.name_ops: list[NameOp] = []
        self.fds: dict[tuple[int, int], Inode | DirHandle] = {}
        self.applied = 0  # records consumed so far
        for path in sorted(Path(snapshot).rglob("*")):
            if path.is_file() and not is_shm(path.name):
                content = path.read_bytes()
                inode = Inode(bytearray(content), bytearray(content))
                rel = path.relative_to(snapshot).as_posix()
                self.current[rel] = self.durable[rel] = inode

    # -- following the log -----------------------------------------------------------------
    def _name(self, path: str) -> str:
        try:
            rel = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            raise ReplayError(f"{path}: outside the tracked folder {self.root}") from None
        return rel or "."

    def _inode(self, rec: Record) -> Inode | None:
        target = self.fds.get((rec.pid, rec.fd))
        if target is None:
            raise ReplayError(f"record at {rec.pos}: {rec.op.name} on fd {rec.fd} of pid "
                              f"{rec.pid}, which the log never saw opened")
        return target if isinstance(target, Inode) else None

    def advance(self, records: list[Record], upto: int) -> None:
        """Apply records[self.applied:upto] (the cut comes after record upto - 1)."""
        if upto < self.applied:
            raise ValueError("cuts must be visited in order")
        for rec in records[self.applied:upto]:
            self.step(rec)
        self.applied = upto

    def step(self, rec: Record) -> None:
        op = rec.op
        if op == Op.MARK:
            return
        if op == Op.OPEN:
            name = self._name(rec.path)
            if rec.flags & Flag.ISDIR:
                self.fds[(rec.pid, rec.fd)] = DirHandle(name)
                return
            if rec.flags & Flag.CREATED:
                inode = Inode(bytearray(), bytearray())
                self.current[name] = inode
                self.name_ops.append(NameOp(rec.pos, "create", name, _parent(name),
                                            inode=inode))
            else:
                found = self.current.get(name)
                if found is None:
                    raise ReplayError(f"record at {rec.pos}: {name} opened but never created "
                                      "in the snapshot or the log")
                inode = found
            self.fds[(rec.pid, rec.fd)] = inode
            if rec.flags & Flag.TRUNC:
                inode.change(DataOp(rec.pos, size=0))
        elif op == Op.WRITE:
            inode = self._inode(rec)
            if inode is not None:
                inode.change(DataOp(rec.pos, rec.offset, rec.data))
        elif op == Op.TRUNCATE:
            if rec.fd < 0:
                name = self._name(rec.path)
                if name not in self.current:
                    raise ReplayError(f"record at {rec.pos}: truncate of unknown {name}")
                self.current[name].change(DataOp(rec.pos, size=rec.offset))
            else:
                inode = self._inode(rec)
                if inode is not None:
                    inode.change(DataOp(rec.pos, size=rec.offset))
        elif op == Op.EXTEND:
            inode = self._inode(rec)
            if inode is not None:
                inode.change(DataOp(rec.pos, grow=rec.offset))
        elif op == Op.SYNC:
            target = self.fds.get((rec.pid, rec.fd))
            if target is None:
                raise ReplayError(f"record at {rec.pos}: sync of an fd never opened")
            if isinstance(target, DirHandle):
                self._sync_names(rec.offset, target.name)
            else:
                target.sync(rec.offset)
        elif op == Op.SYNC_ALL:
            for inode in {i.ident: i for i in self._all_inodes()}.values():
                inode.sync(rec.offset)
            self._sync_names(rec.offset, None)
        elif op == Op.RENAME:
            old, new = self._name(rec.path), self._name(rec.path2)
            _rename(self.current, old, new)
            self.name_ops.append(NameOp(rec.pos, "rename", old, _parent(new), name2=new))
        elif op == Op.UNLINK:
            name = self._name(rec.path)
            self.current.pop(name, None)
            self.name_ops.append(NameOp(rec.pos, "unlink", name, _parent(name)))
        elif op == Op.CLOSE:
            self.fds.pop((rec.pid, rec.fd), None)
        elif op == Op.DUP:
            old = self.fds.get((rec.pid, rec.offset))
            if old is not None:
                self.fds[(rec.pid, rec.fd)] = old
        elif op == Op.FORK:
            for (pid, fd), target in list(self.fds.items()):
                if pid == rec.offset:
                    self.fds[(rec.pid, fd)] = target
        elif op == Op.UNSUPPORTED:
            if not is_shm(rec.path):
                raise ReplayError(f"record at {rec.pos}: {rec.text} on {rec.path}: the log "
                                  "cannot follow it")
        else:  # pragma: no cover - Op() already refused unknown codes
            raise ReplayError(f"record at {rec.pos}: unknown operation {op}")

    def _sync_names(self, covers: int, folder: str | None) -> None:
        keep = []
        for op in self.name_ops:
            if op.pos < covers and (folder is None or op.parent == folder):
                _apply_name(self.durable, op)
            else:
                keep.append(op)
        self.name_ops = keep

    def _all_inodes(self) -> list[Inode]:
        out = list(self.current.values()) + list(self.durable.values())
        out += [t for t in self.fds.values() if isinstance(t, Inode)]
        out += [op.inode for op in self.name_ops if op.inode is not None]
        return out

    # -- the state after a cut -------------------------------------------------------------
    def files(self) -> dict[str, bytes]:
        """What the processes see now (every write kept): the folder without its -shm files."""
        return {n: bytes(i.current) for n, i in self.current.items() if not is_shm(n)}

    def pending(self) -> int:
        inodes = {i.ident: i for i in self._all_inodes()}.values()
        return sum(len(i.pending) for i in inodes) + len(self.name_ops)

    def after_loss(self, loss: Loss, rng: random.Random) -> tuple[dict[str, bytes], CutReport]:
        """The folder's files after a power loss now (-shm files dropped)."""
        pending = self.pending()
        if loss is Loss.NONE:
            return self.files(), CutReport(loss, pending, 0, False, [])
        names = dict(self.durable)
        dropped = 0
        if loss is not Loss.ALL and self.name_ops:
            keep = rng.randrange(len(self.name_ops) + 1)
            for op in self.name_ops[:keep]:
                _apply_name(names, op)
            dropped += len(self.name_ops) - keep
        else:
            dropped += len(self.name_ops)
        out: dict[str, bytes] = {}
        torn = False
        for name, inode in names.items():
            if is_shm(name):
                continue
            buf = bytearray(inode.durable)
            pieces = [p for op in inode.pending for p in sectors(op)]
            if loss is Loss.ALL:
                dropped += len(pieces)
            elif loss is Loss.SUBSET:
                p = rng.uniform(0.2, 0.8)
                kept = [piece for piece in pieces if rng.random() < p]
                dropped += len(pieces) - len(kept)
                writes = [i for i, piece in enumerate(kept) if len(piece.data) > 1]
                if writes and rng.random() < 0.5:
                    i = rng.choice(writes)
                    kept[i] = _torn(kept[i], rng)
                    torn = True
                for piece in kept:
                    apply(buf, piece)
            else:  # PREFIX: in issue order up to a point, the next sector maybe torn
                k = rng.randrange(len(pieces) + 1)
                for piece in pieces[:k]:
                    apply(buf, piece)
                dropped += len(pieces) - k
                if k < len(pieces) and len(pieces[k].data) > 1 and rng.random() < 0.5:
                    apply(buf, _torn(pieces[k], rng))
                    torn = True
            out[name] = bytes(buf)
        now = {n: i.current for n, i in self.current.items() if not is_shm(n)}
        differ = sorted(n for n in set(now) | set(out) if now.get(n) != out.get(n))
        return out, CutReport(loss, pending, dropped, torn, differ)


def _torn(piece: DataOp, rng: random.Random) -> DataOp:
    """Only a prefix of the bytes written to one sector reached the medium."""
    keep = rng.randrange(1, len(piece.data))
    return DataOp(piece.pos, piece.offset, piece.data[:keep])


def write_folder(files: dict[str, bytes], dest: Path) -> None:
    """Make `dest` hold exactly these files (the reconstructed folder). The log keeps no file
    modes: every file is written private (0600), as a door's storage folder is."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name, content in files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)


def read_folder(folder: Path) -> dict[str, bytes]:
    """A folder's files as the reconstruction names them (-shm files left out)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and not is_shm(p.name)}


def snapshot(folder: Path, dest: Path) -> None:
    """Copy a folder's files (not its -shm files) as the initial state of a logged run."""
    write_folder(read_folder(folder), dest)
