"""A real accessd daemon process for the scenarios: its site, its inputs, its log, its end.

Each `Daemon` is one life of `accessd --config X run` (mock pins, a reader fed through a FIFO or
a pseudo-terminal). Every life is registered in `LIVES` so that the unintended-release audit can
check, at the end of a run, every relay energisation of every scenario against the journal.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Journal event types that explain an energised relay; and the door modes (`door.mode`
# entries) that hold it energised: the unlock schedule and the host's hold, nothing else.
RELEASE_REASONS = ("access.granted", "exit.request", "lock.manual_release", "lock.remote_release")
RELEASE_MODES = ("unlocked", "held_open")


@dataclass
class Life:
    """What one daemon process left behind."""

    log_path: Path
    journal_path: Path
    killed_at: datetime | None = None  # SIGKILL: the tail may be uncommitted
    stimuli: list[datetime] = field(default_factory=list)  # suite inputs that should release
    reasons: dict[int, datetime] = field(default_factory=dict)  # journal seq -> ts, at its end

    def capture_reasons(self) -> None:
        """Read the journal's release reasons now, before retention or a scenario removes it."""
        from accessd.events import parse_ts

        if not self.journal_path.exists():
            return
        conn = sqlite3.connect(f"file:{self.journal_path}?mode=ro", uri=True, timeout=10)
        try:
            marks = ",".join("?" * len(RELEASE_REASONS))
            modes = ",".join("?" * len(RELEASE_MODES))
            rows = conn.execute(
                f"SELECT seq, ts FROM events WHERE type IN ({marks}) OR (type = 'door.mode' "
                f"AND json_extract(detail, '$.mode') IN ({modes}))",
                (*RELEASE_REASONS, *RELEASE_MODES)).fetchall()
        except sqlite3.Error:
            rows = []
        finally:
            conn.close()
        self.reasons.update((seq, parse_ts(ts)) for seq, ts in rows)


LIVES: list[Life] = []


class Site:
    """A door's directory: configuration, site key, rule cache and journal paths."""

    def __init__(self, root: Path, *, storage: Path | None = None, reader: str = "fifo",
                 serial_port: str = "", clock: str = 'trust = "always"',
                 security: str = "unknown_card_limit = 1000", release_s: float = 3,
                 extra: str = "", hold_off_s: float = 0.5, retention_days: int = 90) -> None:
        self.root = root
        self.retention_days = retention_days
        root.mkdir(parents=True, exist_ok=True)
        self.storage = storage or root / "state"
        self.fifo = root / "taps"
        self.socket = root / "control.sock"
        if reader == "fifo":
            readers = (f'[[readers]]\nname = "door"\ntype = "simulated"\n'
                       f'source = "{self.fifo}"\nhold_off_s = {hold_off_s}\n')
        else:
            readers = (f'[[readers]]\nname = "door"\ntype = "serial"\nport = "{serial_port}"\n'
                       f"hold_off_s = {hold_off_s}\n")
        self.config = root / "accessd.toml"
        self.config.write_text(f"""
[site]
id = "faults"
door = "front"
timezone = "Europe/Paris"
secret_file = "{root}/site.key"

{readers}
[lock]
release_s = {release_s}

[pins]
factory = "mock"

[clock]
{clock}

[security]
{security}

[storage]
dir = "{self.storage}"
control_socket = "{self.socket}"
retention_days = {retention_days}

{extra}
""")
        from accessd.credentials import CredentialHasher, load_or_create_site_secret

        self.hasher = CredentialHasher(load_or_create_site_secret(root / "site.key"))

    @property
    def journal_path(self) -> Path:
        return self.storage / "journal.db"

    @property
    def rules_path(self) -> Path:
        return self.storage / "rules.db"

    def enroll(self, uid: str, name: str, plan: str = "subscriber", **kw: Any) -> str:
        from accessd.decision import Plan
        from accessd.store.rules import RuleCache

        rules = RuleCache(self.rules_path)
        try:
            m = rules.enroll(name=name, plan=Plan(plan), credential_hash=self.hasher(uid), **kw)
        finally:
            rules.close()
        return m.id


def until(pred: Any, timeout: float = 10.0) -> bool:
    """Poll `pred` every 50 ms until it is true (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def log_time(line: str) -> datetime | None:
    """The instant of a daemon log line: site time with its offset (UTC without one)."""
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})(?: ([+-]\d\d:\d\d))? ", line)
    if not m:
        return None
    return datetime.fromisoformat(f"{m.group(1)}.{m.group(2)}{m.group(3) or '+00:00'}"
                                  ).astimezone(UTC)


class Daemon:
    def __init__(self, site: Site, *, wait_ready: bool = True, env: dict[str, str] | None = None
                 ) -> None:
        self.site = site
        self.log_path = site.root / f"daemon-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        self.life = Life(self.log_path, site.journal_path)
        LIVES.append(self.life)
        self._writer: Any = None
        self._ended = False  # no input may reach a later life of the daemon through the FIFO
        full_env = {**os.environ, "TZ": "UTC", **(env or {})}  # log times in UTC, as the journal
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "accessd", "--config", str(site.config), "run"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=ROOT, env=full_env)
        if wait_ready:
            self.wait_for(r"ready: site")

    # -- observing --------------------------------------------------------------------
    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 20, count: int = 1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.text())) >= count:
                return True
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.text()[-3000:]}")
            time.sleep(0.02)
        return False

    def status(self, timeout: float = 10) -> dict[str, Any]:
        from accessd.daemon.control import call

        return call(self.site.socket, {"op": "status"}, timeout=timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    # -- inputs -----------------------------------------------------------------------
    def tap(self, *uids: str, grants: bool = False) -> None:
        """Write card numbers to the reader's FIFO (kept open between calls)."""
        if self._ended:
            raise BrokenPipeError("this daemon life has ended")
        if self._writer is None:
            fd = os.open(self.site.fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO if no reader
            os.set_blocking(fd, True)
            self._writer = os.fdopen(fd, "w", buffering=1)
        if grants:
            self.life.stimuli.append(datetime.now(UTC))
        self._writer.write("".join(u + "\n" for u in uids))
        self._writer.flush()

    def open_door(self, operator: str = "faults", seconds: float = 3) -> None:
        from accessd.daemon.control import call

        self.life.stimuli.append(datetime.now(UTC))
        call(self.site.socket, {"op": "open", "operator": operator, "seconds": seconds})

    # -- ending -----------------------------------------------------------------------
    def _close_writer(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError, ValueError):
                self._writer.close()
            self._writer = None

    def kill(self) -> None:
        """A power cut as far as the process can tell: SIGKILL, no clean-up runs."""
        self._ended = True
        if self.proc.poll() is None:
            self.life.killed_at = datetime.now(UTC)
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(20)
        self._close_writer()
        self._log.close()
        self.life.capture_reasons()

    def stop(self) -> int:
        self._ended = True
        self._close_writer()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
        self._log.close()
        self.life.capture_reasons()
        return code


def committed(journal: Path) -> dict[int, tuple[str, str, str]]:
    """seq -> (id, type, ts) of every event a reader sees committed right now."""
    if not journal.exists():
        return {}
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT seq, id, type, ts FROM events").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def check_journal(journal: Path, before: dict[int, tuple[str, str, str]],
                  purgeable_upto: int = 0) -> list[str]:
    """After a crash: integrity ok, every event seen committed before still there unchanged
    (except a purged prefix up to `purgeable_upto`), numbers contiguous."""
    problems = []
    conn = sqlite3.connect(str(journal), timeout=10)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            problems.append(f"journal integrity_check: {ok}")
        rows = {r[0]: (r[1], r[2], r[3]) for r in
                conn.execute("SELECT seq, id, type, ts FROM events")}
        meta = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
    finally:
        conn.close()
    lost = [s for s, row in before.items() if s > purgeable_upto and rows.get(s) != row]
    if lost:
        problems.append(f"{len(lost)} committed events lost or changed (first seq {min(lost)})")
    if rows:
        lo, hi = min(rows), max(rows)
        if len(rows) != hi - lo + 1:
            problems.append(f"gap in sequence: {len(rows)} rows for {lo}..{hi}")
        if meta is None or int(meta[0]) != hi:
            problems.append(f"meta last_seq {meta} but last row {hi}")
        if purgeable_upto and lo > purgeable_upto + 1:
            problems.append(f"purge removed {lo - 1 - purgeable_upto} recent events")
    return problems


def release_times(log_text: str) -> list[datetime]:
    """When the relay was energised, from the lock module's own line (written in release())."""
    out = []
    for line in log_text.splitlines():
        if "door released (BCM" in line:
            t = log_time(line)
            if t is not None:
                out.append(t)
    return out
