"""Reading the shim's binary log (the record layout is `struct rec` in shim.c)."""

from __future__ import annotations

import enum
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from faultsuite.storage import ShimError

MAGIC = 0x314C5341
HEADER = struct.Struct("<IHHIiqQIIQQ")  # 56 bytes


class Op(enum.IntEnum):
    OPEN = 1
    WRITE = 2
    TRUNCATE = 3
    SYNC = 4
    RENAME = 5
    UNLINK = 6
    CLOSE = 7
    MARK = 8
    EXTEND = 9
    UNSUPPORTED = 10
    SYNC_ALL = 11
    DUP = 12
    FORK = 13


class Flag(enum.IntFlag):
    CREATED = 1
    ISDIR = 2
    DATASYNC = 4
    SYNCWRITES = 8
    TRUNC = 16


@dataclass(frozen=True, slots=True)
class Record:
    """One logged operation. `pos` is its byte offset in the log; for a sync, `offset` is the
    log position when the call started: it covers the records before that position."""

    pos: int
    op: Op
    flags: Flag
    pid: int
    fd: int
    offset: int
    ino: int
    t_ns: int
    path: str = ""
    path2: str = ""
    data: bytes | memoryview = b""

    @property
    def text(self) -> str:
        """A marker's text."""
        return bytes(self.data).decode()


def read_log(path: Path | str) -> list[Record]:
    """Every record of a log, in order. A truncated or corrupt log is an error: a record lost
    would make the reconstruction wrong without saying so."""
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return []
    with p.open("rb") as f:
        buf = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    out = []
    at, size = 0, len(buf)
    while at < size:
        if size - at < HEADER.size:
            raise ShimError(f"{p}: truncated record header at byte {at}")
        (magic, op, flags, pid, fd, offset, length, plen, p2len, ino,
         t_ns) = HEADER.unpack_from(buf, at)
        if magic != MAGIC:
            raise ShimError(f"{p}: bad record magic at byte {at}")
        start = at + HEADER.size
        end = start + plen + p2len + length
        if end > size:
            raise ShimError(f"{p}: truncated record at byte {at}")
        path_s = bytes(buf[start:start + plen]).decode(errors="surrogateescape")
        path2 = bytes(buf[start + plen:start + plen + p2len]).decode(errors="surrogateescape")
        out.append(Record(at, Op(op), Flag(flags), pid, fd, offset, ino, t_ns, path_s, path2,
                          buf[start + plen + p2len:end]))
        at = end
    return out


def file_names(records: list[Record]) -> list[str]:
    """For each record, the path of the file it touches ("" for markers and the like):
    following opens, closes, dups and forks as the shim saw them."""
    fds: dict[tuple[int, int], str] = {}
    out = []
    for r in records:
        key = (r.pid, r.fd)
        if r.op == Op.OPEN:
            fds[key] = r.path
            out.append(r.path)
        elif r.op in (Op.WRITE, Op.SYNC, Op.TRUNCATE, Op.EXTEND):
            out.append(r.path or fds.get(key, ""))
        elif r.op == Op.CLOSE:
            out.append(fds.pop(key, ""))
        elif r.op == Op.DUP:
            fds[key] = fds.get((r.pid, r.offset), "")
            out.append(fds[key])
        elif r.op == Op.FORK:
            fds.update({(r.pid, fd): p for (pid, fd), p in list(fds.items()) if pid == r.offset})
            out.append("")
        else:
            out.append(r.path)
    return out
