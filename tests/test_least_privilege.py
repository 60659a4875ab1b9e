"""Least privilege at the door: secrets only for the service user, fixed file modes, the host's
fixed commands through the sudo wrapper, and an isolated child for large rule documents."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_config

ROOT = Path(__file__).resolve().parents[1]


def cli(config: Path, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "accessd", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, **kw)


# -- secrets ---------------------------------------------------------------------------------
SECRETS = {
    "site.secret_file": ("[site]", "secret_file", "site.key", "ab" * 32),
    "mqtt.password_file": ("[mqtt]", "password_file", "mqtt.pw", "hunter2"),
    "mqtt.key_file": ("[mqtt]", "key_file", "client.key", "-----BEGIN PRIVATE KEY-----"),
}


def config_with_secret(tmp_path: Path, key: str, mode: int) -> tuple[Path, Path]:
    section, name, filename, content = SECRETS[key]
    secret = tmp_path / "secrets" / filename
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(content + "\n")
    secret.chmod(mode)
    config = write_config(tmp_path)
    text = config.read_text()
    if section in text:
        text = text.replace(f"{section}\n", f'{section}\n{name} = "{secret}"\n', 1)
    else:
        text += f'\n{section}\n{name} = "{secret}"\n'
    config.write_text(text)
    return config, secret


@pytest.mark.parametrize("key", sorted(SECRETS))
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o660])
def test_a_secret_others_or_the_group_can_reach_is_refused_in_one_line(tmp_path, key, mode):
    config, secret = config_with_secret(tmp_path, key, mode)
    r = cli(config, "check-config")
    assert r.returncode == 1, r.stdout
    line = r.stderr
    assert line.count("\n") == 1 and line.startswith("accessd: error: ")
    assert f"{config}: {key}: {secret}:" in line  # the file, the key, the secret
    assert f"chmod 600 {secret}" in line  # and the fix


@pytest.mark.parametrize("key", sorted(SECRETS))
def test_a_secret_only_its_owner_can_read_is_accepted(tmp_path, key):
    config, _ = config_with_secret(tmp_path, key, 0o600)
    r = cli(config, "check-config")
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_a_secret_another_account_owns_is_refused(tmp_path):
    config, secret = config_with_secret(tmp_path, "site.secret_file", 0o600)
    os.chown(secret, 65534, 65534)  # nobody: could rewrite the key the door trusts
    r = cli(config, "check-config")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert f"{config}: site.secret_file: {secret}:" in r.stderr
    assert "nobody" in r.stderr and "chown" in r.stderr


def test_the_daemon_refuses_a_group_readable_site_key_before_touching_anything(tmp_path):
    config, secret = config_with_secret(tmp_path, "site.secret_file", 0o640)
    r = cli(config, "run")
    assert r.returncode == 1 and "site.secret_file" in r.stderr
    assert not (tmp_path / "state" / "control.sock").exists()


def test_the_host_commands_report_a_loose_secret_the_same_way(tmp_path):
    config, secret = config_with_secret(tmp_path, "site.secret_file", 0o640)
    r = cli(config, "list")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert f"{config}: site.secret_file: {secret}:" in r.stderr


# -- file modes ------------------------------------------------------------------------------
def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """The most permissive umask: every mode seen below is the code's, not the umask's."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_door_databases_are_private_whatever_the_umask(tmp_path, open_umask):
    from accessd.decision import Plan
    from accessd.events import Event, EventType
    from accessd.store.journal import Journal
    from accessd.store.rules import RuleCache

    state = tmp_path / "state"
    rules = RuleCache(state / "rules.db")
    journal = Journal(state / "journal.db", "s", "d")
    try:
        rules.enroll(name="Ana", plan=Plan.SUBSCRIBER, credential_hash="ab" * 32)
        journal.append(Event(EventType.DAEMON_STARTED))
        files = sorted(state.iterdir())
        names = {p.name for p in files}
        assert {"rules.db", "rules.db-wal", "rules.db-shm", "journal.db", "journal.db-wal",
                "journal.db-shm"} <= names
        assert {p.name: mode_of(p) for p in files} == dict.fromkeys(names, 0o600)
        assert mode_of(state) == 0o750
    finally:
        rules.close()
        journal.close()


def test_a_database_left_readable_by_an_older_version_is_tightened(tmp_path):
    from accessd.store.rules import RuleCache

    RuleCache(tmp_path / "rules.db").close()
    (tmp_path / "rules.db").chmod(0o644)
    RuleCache(tmp_path / "rules.db").close()
    assert mode_of(tmp_path / "rules.db") == 0o600


def test_the_office_store_is_private_whatever_the_umask(tmp_path, open_umask):
    """It holds each site's card key (`central site --key-file`)."""
    from accessd.central.store import open_store

    store = open_store(tmp_path / "office" / "central.db")
    try:
        store.set_site("s1", name="Morez", timezone="Europe/Paris", credential_key="11" * 32)
        files = list((tmp_path / "office").iterdir())
        assert {p.name for p in files} >= {"central.db", "central.db-wal", "central.db-shm"}
        assert {mode_of(p) for p in files} == {0o600}
    finally:
        store.close()


class ReadOnlyDisk:
    """A journal whose filesystem refuses every write."""

    def append_many(self, events):
        from accessd.errors import JournalFullError

        raise JournalFullError("read-only file system")

    def latest_trusted_ts(self):
        return None


def test_spooled_events_and_the_daemon_lock_are_private_whatever_the_umask(tmp_path,
                                                                          open_umask):
    from gpiozero.pins.mock import MockFactory
    from test_controller import SCHEDULE

    from accessd.clock import ClockTrust
    from accessd.credentials import CredentialHasher
    from accessd.daemon.controller import DoorController
    from accessd.daemon.storagelock import StorageLock
    from accessd.door.lock import LockRelay
    from accessd.events import EventType
    from accessd.guard import UnknownCardGuard
    from accessd.store.rules import RuleCache

    factory = MockFactory()
    relay = LockRelay(17, release_s=5, pin_factory=factory)
    rules = RuleCache(tmp_path / "rules.db")
    try:
        c = DoorController(
            site="s", door="d", rules=rules, journal=ReadOnlyDisk(),  # type: ignore[arg-type]
            hasher=CredentialHasher(b"k" * 32), clock=ClockTrust("always"), schedule=SCHEDULE,
            lock=relay, release_s=5, guard_factory=lambda: UnknownCardGuard(3, 30, 60))
        c.record(c.event(EventType.DAEMON_STOPPED))
        spool = c.spool([tmp_path / "spool"])
        assert spool is not None and mode_of(spool) == 0o600
        assert mode_of(tmp_path / "spool") == 0o700
    finally:
        relay.close()
        rules.close()
        factory.close()
    with StorageLock(tmp_path / "storage") as lock:
        assert mode_of(lock.path) == 0o640 and mode_of(tmp_path / "storage") == 0o750


# -- the child that applies large rule documents ---------------------------------------------
def test_the_apply_child_imports_nothing_from_its_folder_or_the_environment(tmp_path,
                                                                             monkeypatch):
    """`python -I`: no working directory on sys.path, no PYTHON* variables. A module planted
    where the child runs (the storage folder, the caller's folder) or named by PYTHONPATH
    must not run; the document is still checked by the real code."""
    from accessd.protocol.codec import encode
    from accessd.protocol.rules import make_snapshot
    from accessd.protocol.signing import OfficeKey, public_line
    from accessd.uplink.apply import apply_in_child

    folder = tmp_path / "state"
    marker = tmp_path / "planted-code-ran"
    plant = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    for name in ("accessd/__init__.py", "accessd/uplink/__init__.py", "json.py",
                 "argparse.py", "sitecustomize.py", "usercustomize.py"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(plant)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("PYTHONPATH", str(folder))
    monkeypatch.setenv("PYTHONSTARTUP", str(folder / "json.py"))
    key = OfficeKey.generate()
    pub = tmp_path / "office.pub"
    pub.write_text(public_line(key.public) + "\n")
    doc = encode(make_snapshot(key, site="s1", version=1,
                               members=[{"id": "a", "name": "A", "plan": "subscriber",
                                         "status": "active"}], credentials=[]))
    out = apply_in_child(doc, "snapshot", rules=folder / "rules.db", journal=None, keys=pub,
                         site="s1", door="d1", max_bytes=1 << 20)
    assert not marker.exists(), marker.read_text()
    assert out.get("applied"), out


def test_the_apply_child_gets_a_minimal_environment(monkeypatch):
    from accessd.uplink.apply import child_environment

    monkeypatch.setenv("MQTT_PASSWORD", "hunter2")
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    env = child_environment()
    assert set(env) <= {"PATH", "LANG", "LC_ALL", "TZ"} and "PATH" in env


# -- the host's sudo wrapper -----------------------------------------------------------------
def host(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """What `sudo -u accessd /usr/local/sbin/accessd-host ARGS` runs."""
    return subprocess.run([sys.executable, "-I", "-m", "accessd.cli.host", str(config), *args],
                          capture_output=True, text=True, timeout=60, cwd="/")


@pytest.mark.parametrize("args", [
    ["central", "site", "--store", "/tmp/x.db", "--site", "s", "--key-file", "/k"],
    ["run"],
    ["check-config"],
    ["--config", "/tmp/other.toml", "list"],
    ["list", "--config", "/tmp/other.toml"],
    ["list", "--config=/tmp/other.toml"],
    ["list", "--conf", "/tmp/other.toml"],  # an abbreviation argparse would accept
    ["enroll", "--name", "X", "--plan", "subscriber", "--no-card", "--", "--config"],
    ["open", "--operator", "x", "--store", "/tmp/x.db"],
    ["status", "-c", "/tmp/x"],
    [],
])
def test_the_wrapper_refuses_anything_beyond_the_host_commands(args):
    from accessd.cli.host import filter_args
    from accessd.cli.main import build_parser
    from accessd.errors import HostCommandRefused

    with pytest.raises(HostCommandRefused):
        filter_args(args, build_parser())


@pytest.mark.parametrize("args", [
    ["enroll", "--name", "Bea", "--plan", "occasional", "--card", "0A1B2C3D4E",
     "--until=2026-12-31", "--operator", "claire"],
    ["list", "--status", "active", "--json"],
    ["log", "--since", "24h", "--result", "denied", "--limit", "5"],
    ["open", "--operator", "Claire", "--seconds", "5"],
    ["suspend", "m-1"], ["resume", "m-1"], ["revoke", "--credential", "ab12"],
    ["show", "m-1", "--json"], ["status", "--json"], ["status", "--help"],
    ["suspend", "--card", "0A1B2C3D4E"], ["resume", "bob"], ["why", "louis"], ["why"],
    ["why", "04A22B1C", "--json"], ["doctor"], ["doctor", "--json"],
    ["enroll", "--name", "Old", "--plan", "subscriber", "--no-card", "--until=2020-01-31",
     "--force"],
])
def test_the_wrapper_passes_the_host_commands_unchanged(args):
    from accessd.cli.host import filter_args
    from accessd.cli.main import build_parser

    assert filter_args(args, build_parser()) == args


def test_every_option_of_a_host_command_is_classified():
    """A new option on a host command must be added to the wrapper's list on purpose (and
    must not name a file): this fails until someone decides."""
    import argparse

    from accessd.cli.host import HOST_COMMANDS, HOST_REFUSED, subcommands
    from accessd.cli.main import build_parser

    commands = subcommands(build_parser())
    for verb, allowed in HOST_COMMANDS.items():
        if verb not in commands:
            continue  # not in this version yet: the wrapper refuses it cleanly
        options = {o for a in commands[verb]._actions for o in a.option_strings
                   if o not in ("-h", "--help")}
        classified = allowed | HOST_REFUSED.get(verb, frozenset())
        assert options == classified, f"{verb}: classify {options ^ classified}"
        for action in commands[verb]._actions:
            assert not isinstance(action.type, argparse.FileType), (verb, action.dest)
            assert action.metavar not in ("PATH", "FILE", "DIR"), (verb, action.dest)


def test_the_wrapper_runs_the_host_commands_with_the_installed_config(tmp_path):
    config = write_config(tmp_path)
    r = host(config, "enroll", "--name", "Bea", "--plan", "subscriber", "--card",
             "0A1B2C3D4E", "--json")
    assert r.returncode == 0, r.stderr
    r = host(config, "list", "--json")
    assert r.returncode == 0 and '"Bea"' in r.stdout
    r = host(config, "central", "site", "--store", str(tmp_path / "copy.db"), "--site", "s",
             "--key-file", str(tmp_path / "state" / "site.key"))
    assert r.returncode == 2 and r.stderr.startswith("accessd: error:")
    assert r.stderr.count("\n") == 1 and "central" in r.stderr
    assert not (tmp_path / "copy.db").exists()
    r = host(config, "list", "--config", str(tmp_path / "other.toml"))
    assert r.returncode == 2 and "--config" in r.stderr


def test_the_wrapper_refuses_commands_this_version_lacks_cleanly(tmp_path):
    from accessd.cli.host import HOST_COMMANDS, subcommands
    from accessd.cli.main import build_parser

    missing = sorted(set(HOST_COMMANDS) - set(subcommands(build_parser())))
    for verb in missing:
        r = host(write_config(tmp_path), verb)
        assert r.returncode == 2 and r.stderr.count("\n") == 1
        assert "not available in this version" in r.stderr


def test_the_wrapper_help_lists_the_host_commands(tmp_path):
    r = host(write_config(tmp_path), "--help")
    assert r.returncode == 0 and "enroll" in r.stdout and "central" not in r.stdout


def test_the_host_prints_the_door_key_but_cannot_roll_it():
    from accessd.cli.host import filter_args
    from accessd.cli.main import build_parser
    from accessd.errors import HostCommandRefused

    assert filter_args(["door-key"], build_parser()) == ["door-key"]
    with pytest.raises(HostCommandRefused, match="--new"):
        filter_args(["door-key", "--new"], build_parser())


def test_the_host_asks_why_and_runs_the_doctor_through_the_wrapper(tmp_path):
    config = write_config(tmp_path)
    assert host(config, "enroll", "--name", "Bea Martin", "--plan", "subscriber", "--card",
                "0A1B2C3D4E").returncode == 0
    r = host(config, "why", "bea")
    assert r.returncode == 0 and r.stdout.startswith("Bea Martin (")
    r = host(config, "doctor", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["checks"][0]["status"] == "ok"
    r = host(config, "doctor", "--config", str(tmp_path / "other.toml"))
    assert r.returncode == 2 and "--config" in r.stderr
