"""`accessd doctor`: the door's health, one line per check, each problem with its fix.

A host runs it when something seems wrong. It works with the daemon running (what the daemon
says through its control socket: readers, relay, rules) or stopped (then it looks for itself:
opens the reader's port briefly, claims the GPIO pins under the daemon's storage lock, so that
a daemon cannot start half-way through). Whatever the daemon's state it checks the
configuration, the clock and its source, the disk and the stores, the broker (a real TLS
connection and login), the office's acknowledgements and the rules' age.

Each check is `ok`, `info` (worth knowing, nothing to do) or `action` (something to fix);
the exit status is 1 when any check needs action. The hardware's checks are in
`doctor_door`, the broker's and the office's in `doctor_net`.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from accessd.cli.main import print_json
from accessd.cli.timeparse import local_time
from accessd.config import Config, load_config
from accessd.errors import AccessdError, ControlError
from accessd.events import parse_ts

OK, INFO, ACTION = "ok", "info", "action"
MIN_FREE_BYTES = 200 * 1024 * 1024
MIN_FREE_RATIO = 0.05
MAX_WAL_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | info | action
    message: str
    fix: str = ""

    def line(self) -> str:
        label = {OK: "ok", INFO: "info", ACTION: "ACTION"}[self.status]
        return f"{label:<7}{self.name}: {self.message}" + (f" — fix: {self.fix}"
                                                            if self.fix else "")


def ago(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 90:
        return f"{s} s ago"
    if s < 5400:
        return f"{s // 60} min ago"
    if s < 2 * 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


# -- the daemon ------------------------------------------------------------------------------
def daemon_status(cfg: Config) -> tuple[dict[str, Any] | None, str]:
    from accessd.daemon.control import call

    try:
        return call(cfg.storage.control_socket, {"op": "status"}, timeout=5), ""
    except ControlError as exc:
        return None, str(exc)


def check_daemon(cfg: Config, status: dict[str, Any] | None, why: str) -> list[Check]:
    if status is not None:
        up = float(status.get("uptime_s") or 0)
        return [Check("daemon", OK, f"running (accessd {status.get('version')}, started "
                                    f"{ago(up)})")]
    return [Check("daemon", ACTION, why.removeprefix("the daemon is "),
                  "start it: sudo systemctl start accessd (its log: journalctl -u accessd)")]


# -- the clock -------------------------------------------------------------------------------
def _timedatectl(*args: str) -> dict[str, str]:
    exe = shutil.which("timedatectl")
    if exe is None:
        return {}
    try:
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=3,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def check_clock(cfg: Config) -> list[Check]:
    from accessd.clock import ClockTrust, kernel_synchronised, sync_source

    trust = cfg.clock.trust
    state = _timedatectl("show")
    server = _timedatectl("show-timesync").get("ServerName")
    source = sync_source()
    kernel = kernel_synchronised()
    said = ("synchronised" if source else "not synchronised") + (
        f" ({source}{', server ' + server if server else ''})" if source else "")
    if trust == "always":
        return [Check("clock", INFO, f"trusted by configuration ([clock] trust = \"always\"); "
                                     f"the system says {said}",
                      "on a Raspberry Pi use trust = \"auto\" (no battery clock)")]
    if trust == "never":
        return [Check("clock", ACTION, "never trusted ([clock] trust = \"never\"): occasional "
                                       "members are always refused",
                      "set [clock] trust = \"auto\"")]
    if ClockTrust(trust, cfg.clock.not_before).trusted():
        return [Check("clock", OK, said)]
    if source or kernel:
        return [Check("clock", ACTION, f"{said}, but earlier than [clock] not_before "
                                       f"{cfg.clock.not_before}", "check the date and NTP")]
    ntp = state.get("NTP")
    fix = ("turn NTP on: sudo timedatectl set-ntp true" if ntp == "no" else
           "check the network and the time server: timedatectl timesync-status")
    return [Check("clock", ACTION, "not synchronised: occasional members are refused until "
                                   "it is", fix)]


# -- storage ---------------------------------------------------------------------------------
def check_disk(cfg: Config) -> list[Check]:
    folder = cfg.storage.dir
    probe = folder if folder.exists() else folder.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError as exc:
        return [Check("disk", ACTION, f"{folder}: {exc}", "check the storage folder")]
    free = usage.free
    text = f"{_size(free)} free of {_size(usage.total)} ({100 * free / usage.total:.0f} %)"
    if free < MIN_FREE_BYTES or free < usage.total * MIN_FREE_RATIO:
        return [Check("disk", ACTION, f"{text} on {probe}",
                      "free space (old logs: journalctl --vacuum-size=100M); the journal "
                      "needs room to keep events")]
    return [Check("disk", OK, text)]


def _quick_check(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows[:3])


def check_stores(cfg: Config) -> list[Check]:
    out = []
    for label, path in (("journal", cfg.storage.journal_db), ("rule cache", cfg.storage.rules_db)):
        if not path.exists():
            out.append(Check(label, INFO, f"{path} not made yet (the daemon makes it)"))
            continue
        try:
            verdict = _quick_check(path)
        except sqlite3.Error as exc:
            out.append(Check(label, ACTION, f"{path} cannot be read: {exc}",
                             "check its owner and mode (the service user, 0600)"))
            continue
        wal = Path(f"{path}-wal")
        wal_size = wal.stat().st_size if wal.exists() else 0
        if verdict != "ok":
            out.append(Check(label, ACTION, f"{path} is damaged: {verdict}",
                             "stop accessd, keep a copy of the file, see docs/operations.md"))
        elif wal_size > MAX_WAL_BYTES:
            out.append(Check(label, ACTION, f"healthy, but its write-ahead log is "
                                            f"{_size(wal_size)}",
                             "restart accessd (the log is folded back at stop)"))
        else:
            out.append(Check(label, OK, f"healthy (quick_check ok, write-ahead log "
                                        f"{_size(wal_size)})"))
    return out


# -- the rules ----------------------------------------------------------------
def check_rules(cfg: Config, status: dict[str, Any] | None) -> list[Check]:
    from accessd.store.rules import RuleCache

    if not cfg.storage.rules_db.exists():
        return [Check("rules", INFO, "no rule cache yet")]
    rules = RuleCache(cfg.storage.rules_db, readonly=True)
    try:
        version = rules.version
        issued = rules.get_meta("rule_issued_at")
        counts = rules.counts()
    except (ValueError, sqlite3.Error) as exc:
        return [Check("rules", ACTION, f"the stored rule version cannot be read: {exc}",
                      "ask the office for a snapshot (it republishes on the door's request)")]
    finally:
        rules.close()
    held = f"{counts['members']} members, {counts['credentials']} cards"
    out = []
    for key, problem in ((status or {}).get("rules") or {}).get("problems", {}).items():
        out.append(Check("rules", ACTION, f"{key}: {problem}",
                         "enrol the member again, or ask the office to publish"))
    if not version:
        if cfg.mqtt.enabled:
            return [*out, Check("rules", ACTION, f"none from the office yet ({held} enrolled "
                                                 "here)",
                                "publish the site's rules at the office (accessd central "
                                "publish) and check the broker")]
        return [*out, Check("rules", INFO, f"none from the office (no office link): {held} "
                                           "enrolled here")]
    when = ""
    if issued:
        ts = parse_ts(issued)
        when = (f", issued {local_time(ts, cfg.site.tz, '%Y-%m-%d %H:%M')} "
                f"({ago((datetime.now(UTC) - ts).total_seconds())})")
    return [*out, Check("rules", OK, f"version {version}{when}; {held}")]


# -- all of it -------------------------------------------------------------------------------
def run_checks(config_path: str | None) -> list[Check]:
    from accessd.daemon.service import check_startup

    try:
        cfg = load_config(config_path)
        check_startup(cfg)
    except AccessdError as exc:
        return [Check("configuration", ACTION, str(exc),
                      "correct the file, then run: accessd check-config")]
    checks = [Check("configuration", OK, f"{cfg.path} is valid (site {cfg.site.id}, door "
                                         f"{cfg.site.door}, {cfg.site.timezone})")]
    status, why = daemon_status(cfg)
    from accessd.cli.doctor_door import (
        check_gpio_running,
        check_gpio_stopped,
        check_readers_running,
        check_readers_stopped,
    )
    from accessd.cli.doctor_net import check_broker, check_office

    steps: list[Callable[[], list[Check]]] = [
        lambda: check_daemon(cfg, status, why),
        (lambda: check_readers_running(cfg, status)) if status else
        (lambda: check_readers_stopped(cfg)),
        (lambda: check_gpio_running(cfg, status)) if status else
        (lambda: check_gpio_stopped(cfg)),
        lambda: check_clock(cfg),
        lambda: check_disk(cfg),
        lambda: check_stores(cfg),
        lambda: check_broker(cfg),
        lambda: check_office(cfg, status),
        lambda: check_rules(cfg, status),
    ]
    for step in steps:
        try:
            checks += step()
        except (AccessdError, OSError, ValueError, sqlite3.Error) as exc:
            checks.append(Check("doctor", ACTION, f"a check failed: {exc}",
                                "run it again; if it persists, report it"))
    return checks


def print_checks(checks: list[Check], *, as_json: bool) -> int:
    needs_action = any(c.status == ACTION for c in checks)
    if as_json:
        print_json({"ok": not needs_action, "checks": [asdict(c) for c in checks]})
    else:
        for c in checks:
            print(c.line())
        n = sum(c.status == ACTION for c in checks)
        print(f"{n} thing{'s' if n != 1 else ''} to fix" if n else "nothing to fix")
    return 1 if needs_action else 0
