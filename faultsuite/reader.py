"""The reader's serial line under abuse: unplugged and replugged, noise at full speed, half
frames, frames with wrong checksums (some of them carrying a real member's number).

The real daemon reads an RDM6300 on a pseudo-terminal reached through a symlink (as udev's
/dev/serial/by-id links are); unplugging closes the terminal, replugging creates a new one and
re-points the link. Which cards were really on the line is computed independently of the
product's parser (a regular expression and the XOR checksum); any decision for another card
is a false card.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import sqlite3
import time
import tty
from pathlib import Path

from faultsuite.core import Context, Result, scenario
from faultsuite.daemon import Daemon, Site, until

FRAME = re.compile(rb"\x02([0-9A-Fa-f]{12})\x03")


def frame(uid: str, *, bad_checksum: bool = False, flip: int | None = None) -> bytes:
    """The RDM6300 frame of `uid`; with `bad_checksum`, one bit of the checksum flipped."""
    data = bytes.fromhex(uid)
    x = 0
    for b in data:
        x ^= b
    if bad_checksum:
        x ^= 1 << (random.randrange(8) if flip is None else flip)
    return b"\x02" + (data.hex().upper() + f"{x:02X}").encode() + b"\x03"


def cards_on_the_line(stream: bytes) -> set[str]:
    """The UIDs of valid frames in `stream`, by an oracle independent of the product."""
    out = set()
    for m in FRAME.finditer(stream):
        text = m.group(1).decode()
        data = bytes.fromhex(text[:10])
        x = 0
        for b in data:
            x ^= b
        if x == int(text[10:], 16):
            out.add(text[:10].upper())
    return out


class Line:
    """A pseudo-terminal behind a stable symlink: the reader's USB-serial adapter."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = self.slave = -1
        self.plug()

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.link)

    def unplug(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.link.unlink(missing_ok=True)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view[:4096])
            view = view[n:]


def _events(journal: Path, after: int) -> list[tuple[int, str, str | None, str | None]]:
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT seq, type, credential, result FROM events WHERE seq > ? "
                            "ORDER BY seq", (after,)).fetchall()
    finally:
        conn.close()


def _wait_event(journal: Path, after: int, etype: str, timeout: float = 15) -> bool:
    return until(lambda: any(e[1] == etype for e in _events(journal, after)), timeout)


@scenario("reader_faults",
          "pty unplugged/replugged, noise at full speed, half frames, bad checksums: no false "
          "card, no crash, reader.offline then reader.online journalled", order=20)
def reader_faults(ctx: Context, res: Result) -> None:
    rng = random.Random(ctx.seed + 1)
    random.seed(ctx.seed + 1)
    link = ctx.workdir / "ttyRDM6300"
    line = Line(link)
    site = Site(ctx.workdir / "site", reader="serial", serial_port=str(link))
    members = [f"{0x7700000000 + i:010X}" for i in range(16)]
    for i, uid in enumerate(members):
        site.enroll(uid, f"Member {i}")
    short = {site.hasher(u)[:12]: u for u in members}
    d = Daemon(site)
    noise_bytes = 0
    try:
        d.wait_for(r"reader door: online", timeout=10)
        seen = 0
        for trial in range(ctx.n(6, 40)):
            res.trials += 1
            # 1. unplug: the reader must say so once, and the door keep running
            line.unplug()
            if not res.check(_wait_event(site.journal_path, seen, "reader.offline"),
                             f"trial {trial}: no reader.offline after unplug"):
                continue
            time.sleep(rng.uniform(0.0, 1.0))
            line.plug()
            if not res.check(_wait_event(site.journal_path, seen, "reader.online", 40),
                             f"trial {trial}: no reader.online after replug"):
                continue
            # 2. abuse on the line, then one genuine card as a sentinel
            sent = bytearray()
            for _ in range(ctx.n(40, 200)):
                r = rng.random()
                if r < 0.4:
                    chunk = rng.randbytes(rng.randrange(1, 2048))
                elif r < 0.7:  # a member's frame cut short
                    f = frame(rng.choice(members))
                    chunk = f[:rng.randrange(1, len(f) - 1)]
                elif r < 0.9:  # a member's frame with a wrong checksum
                    chunk = frame(rng.choice(members), bad_checksum=True)
                else:  # a frame with a non-hex byte inside, or one character too many
                    f = bytearray(frame(rng.choice(members)))
                    if rng.random() < 0.5:
                        f[rng.randrange(1, 13)] = rng.choice(b"GZ\x00\xff ")
                    else:
                        f[12:12] = b"0"
                    chunk = bytes(f)
                sent += chunk
            sentinel = members[trial % len(members)]
            tail = b"\x03" + frame(sentinel)  # close any frame the noise left open
            sent += tail
            start = time.monotonic()
            line.write(bytes(sent))
            noise_bytes += len(sent)
            expected = cards_on_the_line(bytes(sent))
            deadline = time.monotonic() + 15
            got: list[tuple[int, str, str | None, str | None]] = []
            while time.monotonic() < deadline:
                got = _events(site.journal_path, seen)
                if any(e[2] == site.hasher(sentinel)[:12] for e in got):
                    break
                time.sleep(0.02)
            else:
                res.fail(f"trial {trial}: the genuine card after the noise was not decided")
            res.figures.setdefault("sentinel_latency_s", []).append(
                round(time.monotonic() - start, 3))
            cards = [e for e in got if e[1].startswith("access.")]
            for e in cards:
                uid = short.get(e[2] or "")
                res.check(uid is not None and uid in expected,
                          f"trial {trial}: false card {e[2]} ({e[1]} {e[3]})")
            res.check(d.alive(), f"trial {trial}: daemon died")
            time.sleep(0.6)  # past the hold-off, so the next sentinel is a new presentation
            seen = max((e[0] for e in _events(site.journal_path, seen)), default=seen)
        text = d.text()
        res.check("Traceback" not in text, "a traceback in the daemon's log")
        res.check("worker crashed" not in text, "the reader worker crashed")
    finally:
        code = d.stop()
        line.unplug()
    res.check(code == 0, f"daemon exit status {code}")
    lat = res.figures.pop("sentinel_latency_s", [0])
    res.figures.update({"bytes_of_abuse": noise_bytes, "max_sentinel_latency_s": max(lat)})
    res.notes.append(f"{noise_bytes} bytes of noise, half frames and bad checksums; a genuine "
                     f"card after them decided within {max(lat):.2f} s at worst")
