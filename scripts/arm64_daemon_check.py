"""The installed daemon decides taps on a pseudo-terminal reader (run by scripts/arm64-check).

Runs as root inside the arm64 root, with the installed venv's python. The daemon is started
the way systemd/accessd.service starts it (user and group accessd, the groups gpio, dialout
and plugdev, umask 0027, working directory /var/lib/accessd, READY=1 on a NOTIFY_SOCKET), with
the installed configuration changed only where a chroot is not a Pi:

- the reader's port is a pseudo-terminal, root:dialout 0660 as udev gives /dev/ttyAMA0;
  RDM6300 frames are written to its master side;
- `[pins] factory = "mock"` (gpiozero's MockFactory): the relay pin's level is read back
  through `accessd status` (`lock.relay_pin`);
- a scratch state directory, so every run starts from an empty journal.

The host's commands (enroll, check-config, log) go through the installed wrapper
/usr/local/bin/accessd, i.e. sudo -u accessd, as on a Pi. Startup time and RSS measured here
are those of an emulated process (qemu user mode): only comparable with each other.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import tty
from pathlib import Path
from typing import Any

from accessd.daemon.control import call
from accessd.errors import ControlError
from accessd.readers.em4100 import encode_frame

INSTALLED_CONFIG = Path("/etc/accessd/accessd.toml")
CHECK_CONFIG = Path("/etc/accessd/arm64-check.toml")
STATE = Path("/var/lib/accessd-arm64-check")
RUN = Path("/run/arm64-check")
VENV_ACCESSD = "/opt/accessd/venv/bin/accessd"
WRAPPER = "/usr/local/bin/accessd"
ENROLLED, UNKNOWN = "0A1B2C3D4E", "1122334455"
MEMBER = "Ana Pi"
# qemu user mode: a Python start takes seconds; these bound a hang, not a measurement.
READY_TIMEOUT_S = 180.0
DECISION_TIMEOUT_S = 60.0


class CheckFailed(Exception):
    """A check inside the arm64 root did not hold."""


def host_cli(*args: str) -> str:
    """Run the host's CLI (the wrapper: sudo -u accessd) on the check's configuration."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "ACCESSD_CONFIG": str(CHECK_CONFIG),
           "LANG": "C.UTF-8"}
    proc = subprocess.run([WRAPPER, *args], capture_output=True, text=True, env=env,
                          timeout=300)
    if proc.returncode != 0:
        raise CheckFailed(f"accessd {' '.join(args)}: exit {proc.returncode}: "
                          f"{proc.stderr.strip()}")
    return proc.stdout


def derive_config(pty_path: str) -> None:
    """The installed configuration with the pty, the mock pins and the scratch state dir."""
    text = INSTALLED_CONFIG.read_text(encoding="utf-8")
    for key, value in (("port", pty_path), ("factory", "mock"), ("dir", str(STATE))):
        text, n = re.subn(rf'^{key} = "[^"]*"', f'{key} = "{value}"', text, flags=re.M)
        if n != 1:
            raise CheckFailed(f"{INSTALLED_CONFIG}: expected one `{key} = ...` line, found {n}")
    CHECK_CONFIG.write_text(text, encoding="utf-8")
    os.chown(CHECK_CONFIG, 0, grp.getgrnam("accessd").gr_gid)
    CHECK_CONFIG.chmod(0o640)


class Pty:
    """The reader's serial line: the daemon opens `path`, the check writes RDM6300 frames."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        os.chown(self.path, 0, grp.getgrnam("dialout").gr_gid)
        os.chmod(self.path, 0o660)

    def tap(self, uid: str) -> None:
        os.write(self.master, encode_frame(uid))


class Daemon:
    """`accessd run` as the unit runs it, and the READY=1 it sends."""

    def __init__(self, n: int) -> None:
        RUN.mkdir(mode=0o755, exist_ok=True)
        sock_path = RUN / "notify"
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(sock_path))
        shutil.chown(sock_path, "accessd", "accessd")
        self.log_path = RUN / f"daemon-{n}.log"
        self.log = self.log_path.open("wb")
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
               "PYTHONDONTWRITEBYTECODE": "1", "NOTIFY_SOCKET": str(sock_path)}
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [VENV_ACCESSD, "--config", str(CHECK_CONFIG), "run"], env=env,
            user="accessd", group="accessd", extra_groups=["gpio", "dialout", "plugdev"],
            umask=0o027, cwd="/var/lib/accessd", stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> float:
        deadline = self.t0 + READY_TIMEOUT_S
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self.proc.poll() is not None:
                raise CheckFailed(f"the daemon did not send READY=1:\n{self.tail()}")
            self.sock.settimeout(min(remaining, 0.5))
            try:
                msg = self.sock.recv(4096)
            except TimeoutError:
                continue
            if b"READY=1" in msg.split(b"\n"):
                return time.perf_counter() - self.t0

    def status(self) -> dict[str, Any]:
        return call(STATE / "control.sock", {"op": "status"}, timeout=30)

    def wait_status(self, what: str, ok: Any) -> dict[str, Any]:
        """Poll the control socket until `ok(status)`; the decision is the daemon's own."""
        deadline = time.monotonic() + DECISION_TIMEOUT_S
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CheckFailed(f"the daemon exited {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(ControlError):
                last = self.status()
                if ok(last):
                    return last
            time.sleep(0.02)
        raise CheckFailed(f"timed out waiting for {what}; last status: {last}\n{self.tail()}")

    def memory_kib(self) -> dict[str, int]:
        return memory_kib(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise CheckFailed(f"the daemon did not stop on SIGTERM:\n{self.tail()}") from None
        finally:
            self.sock.close()
            self.log.close()
        if code != 0 or "stopped; door locked" not in self.log_path.read_text():
            raise CheckFailed(f"the daemon stopped with exit {code}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of the qemu process running `pid`, and how its resident memory splits.

    - tcg_cache: qemu's translated-code buffer, the one anonymous mapping that is writable and
      executable (guest code is mapped r-- on the host, so nothing of the guest is rwx);
    - guest: mappings at the guest's addresses, i.e. below the host's own heap (qemu 7 maps a
      64-bit guest at its own addresses, low in the address space), minus qemu's binary. An
      estimate of what the daemon itself holds, the closest this root has to a Pi's RSS;
    - the rest is qemu: its binary, heap and per-thread state.
    """
    out = {"tcg_cache": 0, "guest": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    if "qemu" not in os.readlink(f"/proc/{pid}/exe"):  # a real arm64 machine: no emulator
        out["guest"] = out["VmRSS"]
        return out
    maps: list[tuple[int, str, str, int]] = []
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+$", fields[0]):
            path = fields[5] if len(fields) > 5 else ""
            maps.append((int(fields[0].split("-")[0], 16), fields[1], path, 0))
        elif fields[0] == "Rss:" and maps:
            start, perms, path, _ = maps[-1]
            maps[-1] = (start, perms, path, int(fields[1]))
    host_heap = min((start for start, _, path, _ in maps if path == "[heap]"), default=None)
    if host_heap is None:
        raise CheckFailed(f"/proc/{pid}/smaps: no host heap; is this qemu user mode?")
    for start, perms, path, rss in maps:
        if perms.startswith("rwx") and not path:
            out["tcg_cache"] += rss
        elif start < host_heap and "qemu" not in path:
            out["guest"] += rss
    return out


def taps(daemon: Daemon, pty: Pty) -> dict[str, Any]:
    """One enrolled and one unknown card: decisions from the journal, levels from the pin."""
    before = daemon.wait_status("the control socket", lambda s: True)
    if before["lock"] != {"state": "locked", "type": "fail-secure", "relay_pin": "low"}:
        raise CheckFailed(f"not locked with the relay pin low at start: {before['lock']}")
    if not all(r["online"] for r in before["readers"].values()):
        daemon.wait_status("the pty reader online",
                           lambda s: all(r["online"] for r in s["readers"].values()))
    pty.tap(ENROLLED)
    released = daemon.wait_status("the release of the enrolled card",
                                  lambda s: s["lock"]["relay_pin"] == "high")
    if released["lock"]["state"] != "released":
        raise CheckFailed(f"relay pin high but lock not released: {released['lock']}")
    relocked = daemon.wait_status("the lock to re-lock after release_s",
                                  lambda s: s["lock"]["state"] == "locked")
    if relocked["lock"]["relay_pin"] != "low":
        raise CheckFailed(f"locked but the relay pin is not low: {relocked['lock']}")
    pty.tap(UNKNOWN)
    denied = daemon.wait_status("the unknown card's decision",
                                lambda s: s["decisions"]["denied"] >= 1)
    if denied["lock"]["relay_pin"] != "low" or denied["decisions"]["granted"] != 1:
        raise CheckFailed(f"after the unknown card: {denied['lock']}, {denied['decisions']}")

    entries = [json.loads(line) for line in host_cli("log", "--json", "--type", "access.*")
               .splitlines() if line.strip()]
    granted = [e for e in entries if e.get("result") == "granted"]
    refused = [e for e in entries if e.get("result") == "denied"]
    if len(granted) != 1 or granted[0].get("member_name") != MEMBER:
        raise CheckFailed(f"journal: expected one grant to {MEMBER!r}, got {entries}")
    if len(refused) != 1 or refused[0].get("member_name"):
        raise CheckFailed(f"journal: expected one denial of an unknown card, got {entries}")
    log_text = daemon.log_path.read_text(errors="replace")
    if ENROLLED in log_text or UNKNOWN in log_text:
        raise CheckFailed("a raw card number reached the daemon's log")
    return {"granted": granted[0], "denied": refused[0]}


def idle_python_memory_kib() -> dict[str, int]:
    """The venv's python doing nothing, under the same emulator: how much of the daemon's
    figures is qemu and the bare interpreter."""
    proc = subprocess.Popen(
        ["/opt/accessd/venv/bin/python", "-c", "print('up', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        if proc.stdout.readline().strip() != "up":
            raise CheckFailed("the idle python3 did not start")
        return memory_kib(proc.pid)
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()

    pty = Pty()
    derive_config(pty.path)
    print(host_cli("check-config").strip())
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir(mode=0o750)
    shutil.chown(STATE, "accessd", "accessd")
    host_cli("enroll", "--name", MEMBER, "--plan", "subscriber", "--card", ENROLLED,
             "--operator", "arm64-check")

    startups: list[float] = []
    result: dict[str, Any] = {}
    for n in range(1, args.starts + 1):
        daemon = Daemon(n)
        try:
            startups.append(round(daemon.wait_ready(), 2))
            print(f"start {n}: READY=1 after {startups[-1]:.2f} s (emulated)")
            if n == args.starts:  # the last start: caches as warm as a restart on a Pi
                journal = taps(daemon, pty)
                mem = daemon.memory_kib()
                result = {"journal": journal, "rss_kib": mem["VmRSS"], "hwm_kib": mem["VmHWM"],
                          "tcg_cache_kib": mem["tcg_cache"], "guest_kib": mem["guest"]}
        finally:
            if daemon.proc.poll() is None:
                daemon.stop()
    g, d = result["journal"]["granted"], result["journal"]["denied"]
    result.update({
        "emulated": "qemu-aarch64 user mode on the build machine, not a Pi; RSS is the "
                    "whole qemu process's, emulator and translated code included",
        "machine": os.uname().machine,
        "startup_s": startups,
        "startup_s_median": statistics.median(startups),
        "rss_mib": result["rss_kib"] / 1024, "hwm_mib": result["hwm_kib"] / 1024,
        "tcg_cache_mib": result["tcg_cache_kib"] / 1024,
        "guest_mib": result["guest_kib"] / 1024,
        "idle_python_mib": {k: v / 1024 for k, v in idle_python_memory_kib().items()},
        "taps": 2,
        "decisions": f"{g['type']} {g['result']} ({g['member_name']}), "
                     f"{d['type']} {d['result']} ({d.get('reason')})",
        "relay_pin": "low -> high while released -> low after release_s; low on the denial",
    })
    args.result.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "journal"}, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as exc:
        print(f"arm64-check: {exc}", file=sys.stderr)
        sys.exit(1)
