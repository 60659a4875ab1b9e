"""The daemon as a real process, configured as a door runs: `accessd --config X run`.

The door's configuration is a real site's: 100,000 credentials in the rule cache, the MQTT
uplink on, over TLS, logged in to a private Mosquitto with the door's own login and ACL, the
office's public key for signed rules and commands; mock pins and a simulated reader fed
through a FIFO stand in for the hardware.

- startup_s: from just before the process is spawned to READY=1 arriving on a NOTIFY_SOCKET
  datagram socket the benchmark binds itself (what systemd's Type=notify waits for). Median
  of several cold-ish starts (the files are in the page cache after the first, as they are
  on a Pi that restarts the service). A run counts only once the door has also logged in to
  the broker (reported beside it); one that never does is lost, counted at the timeout.
- rss_mib: the same door, the office's collector running (so events are acknowledged as at
  a site), after a series of taps written to its FIFO (enrolled and unknown cards), once
  every tap's event is acknowledged by the office: peak resident memory, VmHWM from
  /proc/<pid>/status. A tap whose event is not acknowledged in time is lost.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Cards,
    Result,
    Site,
    SiteFactory,
    Unmeasurable,
    accessd_cmd,
    measured,
    random_uid,
    terminate,
)

READY_WAIT_S = 30.0  # spawn -> READY=1 and logged in to the broker, at most
ACK_WAIT_S = 60.0  # the last tap -> every event acknowledged by the office, at most


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

    def wait_ready(self, timeout: float = READY_WAIT_S) -> float | None:
        """Seconds from spawn to READY=1, or None if it never came."""
        deadline = time.perf_counter() + timeout
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self.proc.poll() is not None:
                return None
            self.sock.settimeout(min(remaining, 0.5))
            try:
                msg = self.sock.recv(4096)
            except TimeoutError:
                continue
            t = time.perf_counter()
            if b"READY=1" in msg.split(b"\n"):
                return t - self.t0

    def status(self) -> dict[str, Any]:
        """`accessd status` as the daemon answers it on its control socket."""
        from accessd.daemon.control import call

        return call(self.site.storage / "control.sock", {"op": "status"}, timeout=5)

    def wait_logged_in(self, timeout: float) -> float | None:
        """Seconds from spawn to the uplink connected (polled every 20 ms), or None."""
        from accessd.errors import AccessdError

        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline and self.proc.poll() is None:
            with contextlib.suppress(AccessdError):
                if self.status()["uplink"].get("connected"):
                    return time.perf_counter() - self.t0
            time.sleep(0.02)
        return None

    def memory(self) -> dict[str, int]:
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


@dataclass
class Uplink:
    """What a running door talks to: the private broker, the office's key, its collector."""

    broker: Any
    config: str  # the [mqtt] table of the door's configuration
    work: Path


@contextlib.contextmanager
def office(sites: SiteFactory, name: str) -> Iterator[Uplink]:
    """A private Mosquitto (TLS, one login per door, ACLs) and the office's signing key."""
    from benchmarks.network import DOOR, SITE, door_mqtt, missing_infrastructure, start_broker

    why = missing_infrastructure()
    if why:
        raise Unmeasurable(why)
    work = sites.root / name
    work.mkdir(exist_ok=True)
    broker = start_broker(work / "broker", ((SITE, DOOR),))
    try:  # the door trusts the office's key (work/office), which signs the collector's acks
        yield Uplink(broker, door_mqtt(broker), work)
    finally:
        broker.stop()


def _door_site(sites: SiteFactory, uplink: Uplink, **reader: Any) -> tuple[Site, Path]:
    site = sites.site(readers=[{"name": "door", "type": "simulated", "source": "fifo",
                                **reader}], extra=uplink.config)
    return site, _fifo_path(site)


def bench_startup(sites: SiteFactory, *, runs: int) -> Result:
    ready: list[float] = []  # a lost run counts at READY_WAIT_S
    logged_in: list[float] = []
    lost: list[str] = []
    with office(sites, "startup") as uplink:
        for _ in range(runs):
            site, _ = _door_site(sites, uplink)
            p = DaemonProcess(site, site.dir / "notify.sock")
            try:
                t_ready = p.wait_ready()
                t_login = None if t_ready is None else p.wait_logged_in(READY_WAIT_S)
            finally:
                p.stop()
            if t_ready is None or t_login is None:
                lost.append("never ready" if t_ready is None else "never logged in")
                ready.append(READY_WAIT_S)
                continue
            ready.append(t_ready)
            logged_in.append(t_login)
    med = statistics.median(ready)
    login = (f"; logged in to the broker {statistics.median(logged_in):.3f} s after the spawn "
             "(median)" if logged_in else "")
    return Result("startup_s", "process spawn -> READY=1 on NOTIFY_SOCKET (accessd run, "
                  "100k credentials, uplink on over TLS, mock pins), median",
                  measured(round(med, 3), samples=runs, lost=len(lost), timeout=READY_WAIT_S,
                           runs=[round(t, 3) for t in ready],
                           logged_in_s=[round(t, 3) for t in logged_in]),
                  "<= 1.0 s", med <= 1.0,
                  note=(f"{runs} runs, min {min(ready):.3f} max {max(ready):.3f} s{login}"
                        + "".join(f"; {x}" for x in lost)))


def _fifo_path(site: Site) -> Path:
    """Point the simulated reader's `source` at a FIFO in the site directory."""
    fifo = site.dir / "reader.fifo"
    text = site.config.read_text().replace('source = "fifo"', f'source = "{fifo}"')
    site.config.write_text(text)
    return fifo


def bench_rss(sites: SiteFactory, *, taps: int) -> Result:
    from benchmarks.network import CollectorProc, register_door_key

    rng = random.Random(6)
    members = sites.members_subscribers()
    cards = Cards(members, rng)
    with office(sites, "rss") as uplink:
        site, fifo = _door_site(sites, uplink, hold_off_s=0.5)
        store = str(uplink.work / "central.db")
        register_door_key(store, site.config)  # the office takes only events signed by it
        collector = CollectorProc(uplink.broker, store, uplink.work,
                                  client_id="bench-collector-rss")
        p = DaemonProcess(site, site.dir / "notify.sock")
        try:
            collector.wait_ready()
            if p.wait_ready() is None or p.wait_logged_in(READY_WAIT_S) is None:
                raise RuntimeError(f"the door did not start and log in (see {p.stderr.name})")
            after_start = p.memory()
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
                    time.sleep(0.02)  # a tap every 20 ms: a busy door, not a flood
            finally:
                os.close(fd)
            acked = _wait_acknowledged(p, taps)
            st = p.memory()
            journal = p.status()["journal"]
        finally:
            rc = p.stop()
            collector.stop()
    decided = _access_events(site, upto=acked)
    mib = st["VmHWM"] / 1024
    return Result("rss_mib", "peak RSS (VmHWM) of `accessd run`, 100k credentials, uplink on "
                  f"over TLS with the office acknowledging, mock pins, after {taps} taps",
                  measured(round(mib, 1), samples=taps, lost=max(0, taps - decided),
                           timeout=ACK_WAIT_S),
                  "<= 45 MiB", mib <= 45.0,
                  note=(f"RSS after start (logged in) {after_start['VmRSS'] / 1024:.1f} MiB, "
                        f"at the end {st['VmRSS'] / 1024:.1f} MiB; {decided} taps decided and "
                        f"acknowledged by the office (journal last {journal['last_seq']}, "
                        f"acknowledged {journal['acked_seq']}); exit status {rc}"))


def _wait_acknowledged(p: DaemonProcess, taps: int) -> int:
    """Wait until the office has acknowledged every tap's event; the acknowledged number."""
    deadline = time.monotonic() + ACK_WAIT_S
    journal = p.status()["journal"]
    while time.monotonic() < deadline:
        journal = p.status()["journal"]
        if journal["acked_seq"] >= journal["last_seq"] and _access_events(
                p.site, upto=journal["acked_seq"]) >= taps:
            break
        time.sleep(0.1)
    return int(journal["acked_seq"])


def _access_events(site: Site, *, upto: int) -> int:
    """Access decisions journaled with a number up to `upto`."""
    conn = sqlite3.connect(f"file:{site.storage / 'journal.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM events WHERE seq <= ? AND type IN "
                                "('access.granted', 'access.denied')", (upto,)).fetchone()[0])
    finally:
        conn.close()
