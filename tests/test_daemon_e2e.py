"""The daemon as a real process: FIFO taps in, mock relay pulsed, journal on disk, SIGKILL."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
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
    # no hold-off: the same card presented twice in a row is decided twice
    readers = (f'[[readers]]\nname = "door"\ntype = "simulated"\n'
               f'source = "{tmp_path}/taps"\nhold_off_s = 0\n')
    path = write_config(tmp_path, "[lock]\nrelease_s = 3\n", readers=readers)
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
        released = re.search(r"(\d\d:\d\d:\d\d,\d+) \S+ INFO +accessd: lock RELEASED", d.text())
        locked = re.search(r"(\d\d:\d\d:\d\d,\d+) \S+ INFO +accessd: lock LOCKED", d.text())
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
        me = pwd.getpwuid(os.getuid()).pw_name  # the socket's peer, not the typed name
        assert entry["detail"]["operator"] == me, entry
        assert entry["detail"]["operator_typed"] == "Claire"

        # enrolment by presenting the card at the reader, while the daemon runs
        enrol = subprocess.Popen(
            [sys.executable, "-m", "accessd", "--config", str(config), "enroll", "--name",
             "Bea", "--plan", "subscriber", "--present", "--timeout", "20", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert enrol.stderr is not None
        assert "Present the card" in enrol.stderr.readline()
        d.wait_for(r"enrolment: the next card on any reader is taken")
        d.tap("5566778899")
        out, _ = enrol.communicate(timeout=30)
        assert enrol.returncode == 0
        assert json.loads(out)["name"] == "Bea"
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
    assert r.returncode == 2 and r.stderr.startswith("accessd: error:")  # a usage mistake
    r = cli(config, "suspend", "nobody")
    assert r.returncode == 1 and "no member 'nobody'" in r.stderr
    r = cli(config, "enroll", "--name", "Y", "--plan", "subscriber", "--card", ANA)
    assert r.returncode == 1 and "already enrolled" in r.stderr
    assert os.path.exists(tmp_path / "state" / "rules.db")


def test_a_second_daemon_on_the_same_storage_is_refused(config: Path, tmp_path: Path) -> None:
    """Two real processes: the second exits at once with one line naming the folder and the
    holder's PID, before touching the relay, the control socket or the broker."""
    d = DaemonProcess(config, tmp_path)
    try:
        sock = tmp_path / "state" / "control.sock"
        inode = sock.stat().st_ino
        second = cli(config, "run", timeout=15)
        assert second.returncode == 1, second.stderr
        assert second.stderr.startswith("accessd: error:") and second.stderr.count("\n") == 1
        assert str(tmp_path / "state") in second.stderr
        assert f"PID {d.proc.pid}" in second.stderr
        assert sock.stat().st_ino == inode  # the first daemon's socket is still its own
        assert d.status()["lock"]["state"] == "locked"
    finally:
        assert d.stop() == 0
    d2 = DaemonProcess(config, tmp_path)  # the lock went with the first daemon
    assert d2.stop() == 0


def test_a_control_socket_another_daemon_answers_on_is_left_alone(tmp_path: Path) -> None:
    from accessd.daemon.control import ControlServer, call
    from accessd.errors import ControlError

    path = tmp_path / "control.sock"
    first = ControlServer(path, {"status": lambda req, peer: {"who": "first"}})
    first.start()
    try:
        second = ControlServer(path, {"status": lambda req, peer: {"who": "second"}})
        with pytest.raises(ControlError, match="another daemon answers"):
            second.start()
        second.stop()
        assert call(path, {"op": "status"})["who"] == "first"
    finally:
        first.stop()
    assert not path.exists()


def released_by(config: Path) -> dict:
    r = cli(config, "log", "--json", "--type", "lock.manual_release", "--limit", "1")
    return json.loads(r.stdout)["detail"]


def test_a_manual_release_names_the_sudo_user_of_the_wrapper(config: Path, tmp_path: Path
                                                              ) -> None:
    """Through sudo the CLI runs as the service user (here: the daemon's own user): the
    person is SUDO_USER, which sudo sets and the caller cannot choose."""
    d = DaemonProcess(config, tmp_path)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "accessd", "--config", str(config), "open", "--operator",
             "Someone Else"], capture_output=True, text=True, timeout=30,
            env={**os.environ, "SUDO_USER": "claire"})
        assert r.returncode == 0, r.stderr
        assert "journalled as claire" in r.stdout
        detail = released_by(config)
        assert detail["operator"] == "claire" and detail["operator_typed"] == "Someone Else"
        assert detail["peer_uid"] == os.getuid()
    finally:
        assert d.stop() == 0


SYSTEM_PYTHON = "/usr/bin/python3"  # one the account `nobody` may run (not under /root)


@pytest.mark.skipif(os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK),
                    reason="needs root (to connect as another account) and /usr/bin/python3")
def test_another_account_cannot_claim_a_sudo_user(tmp_path: Path) -> None:
    """An account that is neither root nor the service user is named by its own uid, whatever
    SUDO_USER or name it sends."""
    import tempfile

    public = Path(tempfile.mkdtemp(prefix="accessd-sock-"))
    try:
        public.chmod(0o755)
        path = write_config(tmp_path, "[lock]\nrelease_s = 3\n")
        path.write_text(path.read_text().replace(
            "[storage]\n", f'[storage]\ncontrol_socket = "{public}/control.sock"\n'))
        d = DaemonProcess(path, tmp_path)
        try:
            (public / "control.sock").chmod(0o666)
            nobody = pwd.getpwnam("nobody")
            request = json.dumps({"op": "open", "operator": "Boss", "sudo_user": "root"})
            r = subprocess.run(
                [SYSTEM_PYTHON, "-I", "-c",
                 "import socket, sys; s = socket.socket(socket.AF_UNIX); "
                 f"s.connect({str(public / 'control.sock')!r}); "
                 f"s.sendall({request!r}.encode() + b'\\n'); print(s.recv(4096).decode())"],
                capture_output=True, text=True, timeout=30, user=nobody.pw_uid,
                group=nobody.pw_gid, cwd="/")
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["operator"] == "nobody"
            detail = released_by(path)
            assert detail["operator"] == "nobody" and detail["operator_typed"] == "Boss"
            assert detail["peer_uid"] == nobody.pw_uid
        finally:
            assert d.stop() == 0
    finally:
        shutil.rmtree(public, ignore_errors=True)


def test_bad_stored_rules_do_not_stop_the_running_door(config: Path, tmp_path: Path) -> None:
    """An office typo stored by an older version (unknown zone), a version written as 6.0 and
    a member row with 2026-02-30: every tap is still decided and journalled, status answers."""
    import sqlite3

    conn = sqlite3.connect(tmp_path / "state" / "rules.db")
    conn.execute("INSERT INTO meta(key, value) VALUES ('schedule', ?), ('rule_version', '6.0')",
                 (json.dumps({"timezone": "Europe/Pariss", "opens": "09:00", "closes": "18:00",
                              "days": ["mon"], "closures": ["2026-02-30"]}),))
    conn.commit()
    conn.close()
    r = cli(config, "enroll", "--name", "Bob", "--plan", "occasional", "--card", "5566778899")
    assert r.returncode == 0, r.stderr
    conn = sqlite3.connect(tmp_path / "state" / "rules.db")
    conn.execute("UPDATE members SET valid_until = '2026-02-30' WHERE name = 'Bob'")
    conn.commit()
    conn.close()
    d = DaemonProcess(config, tmp_path)
    try:
        d.tap(ANA)
        d.wait_for(r"access granted: subscriber")
        d.tap("5566778899")
        d.wait_for(r"access denied: invalid_record")
        st = d.status()
        assert st["rules"]["version"] is None
        assert set(st["rules"]["problems"]) == {"unusable_schedule", "invalid_version",
                                                "invalid_record"}
    finally:
        assert d.stop() == 0
    entries = [json.loads(line) for line in cli(config, "log", "--json", "--limit", "100")
               .stdout.splitlines()]
    reasons = {(e["type"], e["reason"]) for e in entries}
    assert {("access.granted", "subscriber"), ("access.denied", "invalid_record"),
            ("alarm.rule_cache", "unusable_schedule"), ("alarm.rule_cache", "invalid_record"),
            ("alarm.rule_cache", "invalid_version")} <= reasons


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a read-only filesystem")
def test_the_daemon_lock_holds_on_a_read_only_storage_folder(tmp_path: Path) -> None:
    """An SD card the kernel turned read-only: the lock still excludes a second daemon (no
    traceback), so that the daemon reaches the stores' own one-line error."""
    from accessd.daemon.storagelock import StorageLock
    from accessd.errors import AlreadyRunning

    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with StorageLock(folder):
            pass  # leaves daemon.lock behind, as a daemon does
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        with StorageLock(folder), pytest.raises(AlreadyRunning):
            StorageLock(folder).acquire()
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)
