"""The daemon as a real process: FIFO taps in, mock relay pulsed, journal on disk, SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import write_config

from accessd.store.db import integrity_ok
from accessd.store.journal import Journal

ANA = "0A1B2C3D4E"


def cli(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "accessd", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout)


class DaemonProcess:
    def __init__(self, config: Path, tmp_path: Path) -> None:
        self.config, self.fifo = config, tmp_path / "taps"
        self.log_path = tmp_path / f"daemon-{time.monotonic_ns()}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "accessd", "--config", str(config), "run"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.wait_for("ready")

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, pattern: str, timeout: float = 20, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.text())) >= count:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {pattern!r}:\n{self.text()}")

    def tap(self, *uids: str) -> None:
        with self.fifo.open("w") as fh:
            fh.write("".join(u + "\n" for u in uids))

    def status(self) -> dict:
        r = cli(self.config, "status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(20)
        self.log.close()
        return code


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = write_config(tmp_path, "[lock]\nrelease_s = 3\n")
    r = cli(path, "enroll", "--name", "Ana", "--plan", "subscriber", "--card", ANA)
    assert r.returncode == 0, r.stderr
    return path


def test_tap_pulses_lock_and_journals_then_survives_sigkill(config: Path, tmp_path: Path
                                                            ) -> None:
    d = DaemonProcess(config, tmp_path)
    try:
        assert d.status()["lock"] == {"state": "locked", "type": "fail-secure",
                                      "relay_pin": "low"}
        d.tap(ANA)
        d.wait_for(r"lock RELEASED")
        assert d.status()["lock"] == {"state": "released", "type": "fail-secure",
                                      "relay_pin": "high"}
        d.wait_for(r"lock LOCKED", timeout=10)
        released = re.search(r"(\d\d:\d\d:\d\d,\d+) INFO +accessd: lock RELEASED", d.text())
        locked = re.search(r"(\d\d:\d\d:\d\d,\d+) INFO +accessd: lock LOCKED", d.text())
        assert released and locked

        def secs(m: re.Match[str]) -> float:
            h, mi, s = m.group(1).replace(",", ".").split(":")
            return int(h) * 3600 + int(mi) * 60 + float(s)

        assert 2.9 <= secs(locked) - secs(released) <= 3.5  # the configured 3 s pulse
        log = json.loads(cli(config, "log", "--json", "--type", "access.*").stdout)
        assert log["result"] == "granted" and log["member_name"] == "Ana"
        assert ANA not in d.text()  # raw card numbers never reach the logs

        # a burst of taps from another thread, killed in the middle
        burst = threading.Thread(target=lambda: [d.tap(f"{i:010X}") for i in range(400)])
        burst.start()
        d.wait_for(r"access denied", count=30, timeout=30)
        assert d.stop(signal.SIGKILL) == -signal.SIGKILL
        burst.join(30)
    finally:
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL)
    j = Journal(tmp_path / "state" / "journal.db", "test-site", "front")
    assert integrity_ok(j.db)
    seqs = [e.seq for e in j.iter_all()]
    assert seqs == list(range(1, len(seqs) + 1))
    denied_before = sum(1 for e in j.iter_all() if e.event.result == "denied")
    assert denied_before >= 30
    j.close()

    d2 = DaemonProcess(config, tmp_path)  # restart: locked, numbering continues
    try:
        st = d2.status()
        assert st["lock"]["state"] == "locked"
        assert st["journal"]["last_seq"] == len(seqs) + 1  # + daemon.started
    finally:
        assert d2.stop() == 0
    assert "stopped; door locked" in d2.text()


def test_cli_against_running_daemon(config: Path, tmp_path: Path) -> None:
    d = DaemonProcess(config, tmp_path)
    try:
        r = cli(config, "open", "--operator", "Claire")
        assert r.returncode == 0, r.stderr
        d.wait_for("lock RELEASED")
        entry = json.loads(cli(config, "log", "--json", "--type", "lock.*").stdout)
        assert entry["detail"]["operator"] == "Claire"

        # enrolment by presenting the card at the reader, while the daemon runs
        enrol = subprocess.Popen(
            [sys.executable, "-m", "accessd", "--config", str(config), "enroll", "--name",
             "Bea", "--plan", "subscriber", "--present", "--timeout", "20", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert enrol.stderr is not None
        assert "Present the card" in enrol.stderr.readline()
        time.sleep(0.3)
        d.tap("5566778899")
        out, _ = enrol.communicate(timeout=30)
        assert enrol.returncode == 0
        assert json.loads(out)["name"] == "Bea"
        time.sleep(0.8)  # past the reader's 0.5 s hold-off for the same card
        d.tap("5566778899")  # takes effect at once
        d.wait_for(r"access granted: subscriber", timeout=10)
        st = d.status()
        assert st["rules"]["members"] == 2 and st["clock"]["trusted"] is True
    finally:
        assert d.stop() == 0


def test_cli_errors_are_one_line(config: Path, tmp_path: Path) -> None:
    r = cli(config, "open", "--operator", "x")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "the daemon is not running" in r.stderr
    r = cli(config, "enroll", "--name", "X", "--plan", "subscriber", "--card", "zz")
    assert r.returncode == 1 and r.stderr.startswith("accessd: error:")
    r = cli(config, "suspend", "nobody")
    assert r.returncode == 1 and "no member 'nobody'" in r.stderr
    r = cli(config, "enroll", "--name", "Y", "--plan", "subscriber", "--card", ANA)
    assert r.returncode == 1 and "already enrolled" in r.stderr
    assert os.path.exists(tmp_path / "state" / "rules.db")
