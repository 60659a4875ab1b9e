"""The host's commands against a real daemon process: the simulated reader on a FIFO,
gpiozero's mock pins, the journal on disk."""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_config
from test_daemon_e2e import DaemonProcess, cli

LOUIS, STRANGER = "04A22B1C", "5566778899"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    readers = (f'[[readers]]\nname = "door"\ntype = "simulated"\n'
               f'source = "{tmp_path}/taps"\nhold_off_s = 0\n')
    path = write_config(tmp_path, "[lock]\nrelease_s = 3\n\n[security]\nunknown_card_limit = 2\n"
                                  "lockout_s = 1\n", readers=readers)
    path.write_text(path.read_text().replace('[pins]\nfactory = "mock"\n',
                                             '[pins]\nfactory = "mock"\ndoor_contact = 0\n'))
    return path


def test_a_host_s_morning_against_the_running_door(config: Path, tmp_path: Path) -> None:
    d = DaemonProcess(config, tmp_path)
    try:
        # enrol at the reader, by name afterwards
        enrol = subprocess.Popen(
            [sys.executable, "-m", "accessd", "--config", str(config), "enroll", "--name",
             "Louis Martin", "--plan", "subscriber", "--present", "--timeout", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        d.wait_for(r"taken for enrolment")
        d.tap(LOUIS)
        out, err = enrol.communicate(timeout=30)
        assert enrol.returncode == 0, err
        assert "Louis Martin" in out and re.search(r"enrolled \d{4}-\d\d-\d\d \d\d:\d\d CES?T",
                                                   out)
        d.tap(LOUIS)
        d.wait_for(r"access granted: subscriber")
        d.wait_for(r"lock LOCKED")  # the 3 s release is over
        r = cli(config, "why", "louis")
        assert re.fullmatch(r"Louis Martin was let in at \d\d:\d\d CES?T because subscribers "
                            r"enter at any hour, every day\n", r.stdout), r.stdout
        assert cli(config, "suspend", "louis").returncode == 0
        d.tap(LOUIS)
        d.wait_for(r"access denied: member_suspended")
        r = cli(config, "why", "Louis Martin")
        assert r.stdout.endswith("because Louis Martin is suspended ('accessd resume' lifts "
                                 "it)\n"), r.stdout

        # the status a person reads
        r = cli(config, "status")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        for expected in ("Reader door: online (simulated, entry)",
                         "Lock: locked (fail-secure, relay pin low)",
                         "Clock: trusted (by configuration: [clock] trust = \"always\")",
                         "Alarms: none",
                         "Office link: off ([mqtt] enabled = false)"):
            assert expected in lines, r.stdout
        assert any(re.fullmatch(r"Journal: \d+ events kept here \(no office link: \[mqtt\] "
                                r"enabled = false\)", line) for line in lines), r.stdout
        assert "Decisions since start: 1 let in, 1 refused" in lines
        assert not re.search(r"\{'|\bNone\b|\bTrue\b|\bFalse\b", r.stdout)

        # the doctor, daemon running
        r = cli(config, "doctor")
        assert r.returncode == 0, r.stdout
        assert re.search(r"^ok     reader door: online \(simulated\); last card read \d+ s ago$",
                         r.stdout, re.M), r.stdout
        assert "ok     lock relay: GPIO 17 low: locked (fail-secure)" in r.stdout
        assert r.stdout.splitlines()[-1] == "nothing to fix"

        # a manual release names who ordered it: in the journal, the log and the console
        r = cli(config, "open", "--operator", "Claire H")
        assert r.returncode == 0, r.stderr
        me = pwd.getpwuid(os.getuid()).pw_name
        d.wait_for(rf"manual release for 3 s ordered by {me}")
        r = cli(config, "log", "--type", "lock.*")
        assert r.stdout.rstrip().endswith(
            f"lock.manual_release  door released for 3 s by {me} (name given: Claire H)")
        r = cli(config, "doctor", "--json")
        lock = [c for c in json.loads(r.stdout)["checks"] if c["name"] == "lock relay"][0]
        assert lock["message"] == "GPIO 17 high: released (fail-secure)"
    finally:
        assert d.stop() == 0
    # the console a host watches: the site's time with its zone
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \+0[12]:00 INFO +accessd: ",
                     d.text(), re.M), d.text()


def test_alarm_lines_name_the_alarm(config: Path, tmp_path: Path) -> None:
    d = DaemonProcess(config, tmp_path)
    try:
        d.tap(STRANGER, "5566778800")  # two unknown cards: the reader is locked out for 1 s
        d.wait_for(r"alarm on: reader door locked out after unknown cards")
        d.wait_for(r"alarm off: reader door locked out after unknown cards")
        r = cli(config, "log", "--type", "alarm.*")
        assert "alarm: reader door locked out after unknown cards" in r.stdout
    finally:
        assert d.stop() == 0
    assert "cleared" not in d.text()
