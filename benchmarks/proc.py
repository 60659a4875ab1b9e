"""The daemon as a real process: `accessd --config X run`, mock pins, a simulated reader.

- startup_s: from just before the process is spawned to READY=1 arriving on a NOTIFY_SOCKET
  datagram socket the benchmark binds itself (what systemd's Type=notify waits for). The
  rule cache holds 100,000 credentials. Median of several cold-ish starts (the files are in
  the page cache after the first, as they are on a Pi that restarts the service).
- rss_mib: the same daemon after a series of taps written to its FIFO (enrolled and unknown
  cards): peak resident memory, VmHWM from /proc/<pid>/status.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Cards,
    Result,
    Site,
    SiteFactory,
    accessd_cmd,
    random_uid,
    terminate,
)


class DaemonProcess:
    """One `accessd run`, its notify socket, and its FIFO reader."""

    def __init__(self, site: Site, sock_path: Path) -> None:
        self.site = site
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        self.sock.bind(str(sock_path))
        env = dict(os.environ, NOTIFY_SOCKET=str(sock_path))
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        self.stderr = open(site.dir / "stderr.log", "wb")  # noqa: SIM115
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(accessd_cmd(site.config), env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr)

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds from spawn to READY=1."""
        deadline = time.perf_counter() + timeout
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"accessd did not become ready: see {self.stderr.name}")
            self.sock.settimeout(min(remaining, 0.5))
            try:
                msg = self.sock.recv(4096)
            except TimeoutError:
                continue
            t = time.perf_counter()
            if b"READY=1" in msg.split(b"\n"):
                return t - self.t0

    def status(self) -> dict[str, int]:
        """VmRSS, VmHWM in kB."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
        return out

    def stop(self) -> int:
        terminate(self.proc)
        self.sock.close()
        self.stderr.close()
        return self.proc.returncode


def bench_startup(sites: SiteFactory, *, runs: int) -> Result:
    times = []
    for _ in range(runs):
        site = sites.site(readers=[{"name": "door", "type": "simulated", "source": "fifo"}])
        _fifo_path(site)
        p = DaemonProcess(site, site.dir / "notify.sock")
        try:
            times.append(p.wait_ready())
        finally:
            p.stop()
    med = statistics.median(times)
    return Result("startup_s", "process spawn -> READY=1 on NOTIFY_SOCKET (accessd run, "
                  "100k credentials, mock pins), median", round(med, 3), "<= 1.0 s", med <= 1.0,
                  note=f"{runs} runs, min {min(times):.3f} max {max(times):.3f} s",
                  extra={"runs": [round(t, 3) for t in times]})


def _fifo_path(site: Site) -> Path:
    """Point the simulated reader's `source` at a FIFO in the site directory."""
    fifo = site.dir / "reader.fifo"
    text = site.config.read_text().replace('source = "fifo"', f'source = "{fifo}"')
    site.config.write_text(text)
    return fifo


def bench_rss(sites: SiteFactory, *, taps: int) -> Result:
    rng = random.Random(6)
    site = sites.site(readers=[{"name": "door", "type": "simulated", "source": "fifo",
                                "hold_off_s": 0.5}])
    fifo = _fifo_path(site)
    p = DaemonProcess(site, site.dir / "notify.sock")
    members = sites.members_subscribers()
    cards = Cards(members, rng)
    try:
        p.wait_ready()
        after_start = p.status()
        deadline = time.monotonic() + 10
        while not fifo.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not create its FIFO")
            time.sleep(0.01)
        fd = os.open(fifo, os.O_WRONLY)
        try:
            for i in range(taps):
                uid = random_uid(rng) if i % 10 == 9 else cards.next()
                os.write(fd, (uid + "\n").encode())
                time.sleep(0.02)
        finally:
            os.close(fd)
        time.sleep(0.5)
        st = p.status()
        journal_rows = _count_events(site)
    finally:
        rc = p.stop()
    mib = st["VmHWM"] / 1024
    return Result("rss_mib", "peak RSS (VmHWM) of `accessd run`, 100k credentials, mock pins, "
                  f"after {taps} taps", round(mib, 1), "<= 45 MiB", mib <= 45.0,
                  note=(f"RSS after start {after_start['VmRSS'] / 1024:.1f} MiB, now "
                        f"{st['VmRSS'] / 1024:.1f} MiB; {journal_rows} events journaled; "
                        f"exit status {rc}"))


def _count_events(site: Site) -> Any:
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{site.storage / 'journal.db'}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT count(*) FROM events").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"? ({exc})"
