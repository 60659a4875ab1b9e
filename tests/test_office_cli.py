"""The office's own commands: web users (passwords from a prompt or stdin, never argv), a
member's export and erasure, retention with billing and usage kept apart."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from web_helpers import PASSWORD, event, make_store

from accessd.central import audit, retention, usage
from accessd.central.cli import main
from accessd.central.report import monthly_hours
from accessd.central.store import open_store
from accessd.central.users import Users
from accessd.cli.main import build_parser
from accessd.protocol.signing import OfficeKey


def run(monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["central", *argv])


def test_users_are_added_from_stdin_listed_changed_and_removed(tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    db = str(tmp_path / "c.db")
    assert run(monkeypatch, "user", "add", "Mona", "--role", "manager", "--site", "s1",
               "--store", db, "--password-stdin", stdin=PASSWORD + "\n") == 0
    assert "user mona added: manager of s1" in capsys.readouterr().out
    assert run(monkeypatch, "user", "add", "olga", "--role", "operator", "--store", db,
               "--password-stdin", stdin="short\n") == 1
    assert "at least 10 characters" in capsys.readouterr().err
    assert run(monkeypatch, "user", "add", "max", "--role", "manager", "--store", db,
               "--password-stdin", stdin=PASSWORD + "\n") == 1
    assert "name them (--site)" in capsys.readouterr().err
    assert run(monkeypatch, "user", "add", "mona", "--role", "viewer", "--store", db,
               "--password-stdin", stdin=PASSWORD + "\n") == 1
    # no terminal and no --password-stdin: refused, never a password in argv
    assert run(monkeypatch, "user", "add", "vic", "--role", "viewer", "--store", db) == 1
    assert "--password-stdin" in capsys.readouterr().err
    assert run(monkeypatch, "user", "list", "--json", "--store", db) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(u["username"], u["role"], u["sites"]) for u in listed] == [
        ("mona", "manager", ["s1"])]
    store = open_store(db)
    try:
        users = Users(store)
        assert users.verify("mona", PASSWORD) is not None
        token = users.open_session(users.get("mona"), "127.0.0.1", None)
        assert run(monkeypatch, "user", "passwd", "mona", "--store", db, "--password-stdin",
                   stdin="another long password\n") == 0
        assert users.verify("mona", PASSWORD) is None
        assert users.verify("mona", "another long password") is not None
        assert users.session(token) is None  # a new password ends the sessions
        assert run(monkeypatch, "user", "remove", "mona", "--store", db) == 0
        assert users.get("mona") is None
        assert [e["action"] for e in audit.entries(store)] == [
            "user.remove", "user.passwd", "user.add"]
        stored = store.rows("SELECT password_hash FROM web_users")
        assert stored == []
    finally:
        store.close()


def test_no_command_takes_a_password_on_the_command_line() -> None:
    from accessd.cli.main import UsageError

    parser = build_parser()
    for argv in (["add", "x", "--role", "operator"], ["passwd", "x"]):
        with pytest.raises(UsageError, match="unrecognized arguments"):
            parser.parse_args(["central", "user", *argv, "--password", PASSWORD])


def test_passwords_are_argon2_hashes(tmp_path: Path) -> None:
    store = open_store(tmp_path / "c.db")
    try:
        Users(store).add("olga", PASSWORD, "operator", [])
        (stored,), = store.rows("SELECT password_hash FROM web_users")
        assert stored.startswith("$argon2id$") and PASSWORD not in stored
    finally:
        store.close()


def test_member_export_and_erase_from_the_command_line(tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    db = tmp_path / "c.db"
    make_store(db).close()
    key = OfficeKey.generate()
    key.save(tmp_path / "office.key", tmp_path / "office.pub")
    out = tmp_path / "oscar.json"
    assert run(monkeypatch, "member", "export", "--store", str(db), "--site", "s1",
               "--member", "oscar", "--out", str(out)) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    data = json.loads(out.read_text())
    assert data["member"]["name"] == "Oscar" and len(data["events"]) == 3
    assert run(monkeypatch, "member", "export", "--store", str(db), "--site", "s1",
               "--member", "oscar", "--format", "csv") == 0
    assert capsys.readouterr().out.startswith("record,ts,site,door,type")
    assert run(monkeypatch, "member", "export", "--store", str(db), "--site", "s1",
               "--member", "nobody") == 1
    assert "holds nothing about 'nobody'" in capsys.readouterr().err
    # no terminal: erasing needs --yes
    assert run(monkeypatch, "member", "erase", "--store", str(db), "--site", "s1",
               "--member", "oscar", "--key", str(tmp_path / "office.key"), "--no-send") == 1
    assert run(monkeypatch, "member", "erase", "--store", str(db), "--site", "s1",
               "--member", "oscar", "--key", str(tmp_path / "office.key"), "--no-send",
               "--yes") == 0
    said = capsys.readouterr().out
    assert "3 events now say erased-" in said and "rules version 1 signed" in said
    store = open_store(db)
    try:
        assert not store.rows("SELECT 1 FROM members WHERE id = 'oscar'")
        assert not store.rows("SELECT 1 FROM events WHERE member_id = 'oscar' OR "
                              "member_name = 'Oscar'")
        actions = {e["action"]: e for e in audit.entries(store)}
        assert actions["member.erase"]["target"].startswith("erased-")
        assert actions["member.export"]["target"].startswith("erased-")
    finally:
        store.close()


def test_retention_freezes_billing_and_usage_then_deletes_old_movement_logs(
        tmp_path: Path, monkeypatch, capsys) -> None:
    db = tmp_path / "c.db"
    store = make_store(db)  # events of 2026-03
    try:
        store.store_events([event("s1", "d1", 6, "2026-06-10T08:00:00.000Z", "oscar",
                                  plan="occasional", reason="opening_hours")])
        before = monthly_hours(store, "s1", "2026-03")
        figures = usage.compute(store, "s1", "2026-03")
        assert before and figures["occasional"]["visits"] == 2
        # 2026-07-05: March ended long ago, June ended 5 days ago (not frozen yet)
        now = datetime(2026, 7, 5, 12, tzinfo=UTC)
        run_ = retention.apply(store, now=now)
        assert run_.cutoff == "2026-04-05T12:00:00.000Z"
        assert run_.deleted["events"] == 6
        assert store.count_events("s1") == 1  # June's stays
        assert retention.billing(store, "s1", "2026-03") == before
        kept = usage.figures(store, "s1", "2026-03")
        assert kept["final"] and {k: kept[k] for k in figures} == figures
        assert monthly_hours(store, "s1", "2026-03") == []  # the log itself is gone
        # one month only: June's events stay until June's billing is frozen
        retention.set_months(store, 1)
        assert retention.apply(store, now=now).deleted["events"] == 0
        later = datetime(2026, 7, 12, 12, tzinfo=UTC)  # June frozen; cut-off June 12
        assert retention.apply(store, now=later).deleted["events"] == 1
        assert retention.is_frozen(store, "s1", "2026-06")
    finally:
        store.close()
    assert run(monkeypatch, "retention", "--store", str(db), "--months", "0") == 1
    assert run(monkeypatch, "retention", "--store", str(db), "--months", "4",
               "--dry-run") == 0
    assert "movement logs kept 4 months" in capsys.readouterr().out
    assert run(monkeypatch, "report", "--store", str(db), "--site", "s1", "--month",
               "2026-03", "--csv") == 0
    assert "s1,2026-03,oscar,Oscar,2," in capsys.readouterr().out


def test_retention_runs_in_one_worker_an_hour(tmp_path: Path) -> None:
    store = open_store(tmp_path / "c.db")
    other = open_store(tmp_path / "c.db")
    try:
        now = datetime(2026, 7, 5, 12, tzinfo=UTC)
        assert retention.claim(store, now)
        assert not retention.claim(other, now)
        assert not retention.claim(other, now.replace(minute=30))
        assert retention.claim(other, now.replace(hour=13, minute=1))
    finally:
        store.close()
        other.close()


def test_the_web_unit_runs_a_command_line_the_parser_takes_and_is_sandboxed() -> None:
    import re
    import shutil
    import subprocess

    unit = Path(__file__).resolve().parent.parent / "systemd" / "accessd-web.service"
    text = unit.read_text(encoding="utf-8")
    exec_start = re.search(r"^ExecStart=(.*?)(?<!\\)$", text, re.M | re.S).group(1)
    argv = exec_start.replace("\\\n", " ").split()[1:]  # without the program
    argv = [{"${WEB_WORKERS}": "4", "${BROKER_HOST}": "broker.example",
             "${BROKER_PORT}": "8883"}.get(a, a) for a in argv]
    args = build_parser().parse_args(argv)
    assert (args.central_command, args.listen, args.workers) == ("web", "127.0.0.1:8080", 4)
    assert args.key == Path("/etc/accessd-central/office.key") and not args.no_tls
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    proc = subprocess.run([analyze, "security", "--offline=yes", str(unit)],
                          capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    if found is None:
        pytest.skip(f"no offline security check here: {proc.stderr[:200]}")
    assert float(found.group(1)) <= 1.6, proc.stdout[-2000:]
