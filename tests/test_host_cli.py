"""The host's day through the real `accessd`: members by name, `log --since` in words, `why`,
one-line errors for every command, readable `status` and `log` in the site's time."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import write_config

from accessd.cli.main import main
from accessd.events import Event, EventType
from accessd.store.journal import Journal

PARIS = ZoneInfo("Europe/Paris")
LOUIS, BOB, BOBBY, ZOE = "04A22B1C", "0A1B2C3D4E", "0A1B2C3D4F", "11223344"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def run(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", str(config), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def cli(config: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """The real entry point, in its own process."""
    return subprocess.run([sys.executable, "-m", "accessd", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, env=env)


def enrol(capsys, config, name: str, card: str | None, plan: str = "subscriber",
          *extra: str) -> str:
    src = ["--card", card] if card else ["--no-card"]
    code, out, err = run(capsys, config, "enroll", "--name", name, "--plan", plan, *src,
                         *extra, "--json")
    assert code == 0, err
    return json.loads(out)["id"]


def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "state" / "journal.db", "test-site", "front")


def one_line_error(err: str) -> bool:
    return err.startswith("accessd: error: ") and err.count("\n") == 1 and "Traceback" not in err


# -- members by name -------------------------------------------------------------------------
@pytest.fixture
def people(capsys, config) -> dict[str, str]:
    return {"louis": enrol(capsys, config, "Louis Martin", LOUIS, "occasional"),
            "bob": enrol(capsys, config, "Bob Durand", BOB),
            "bobby": enrol(capsys, config, "Bobby Tables", BOBBY),
            "zoe": enrol(capsys, config, "Zoé Faure", ZOE, "occasional")}


@pytest.mark.parametrize(("typed", "who"), [
    ("louis", "louis"), ("LOUIS MARTIN", "louis"), ("lou", "louis"), ("martin", "louis"),
    ("zoe", "zoe"), ("ZOÉ", "zoe"), ("faure", "zoe"), ("bob", "bob"), ("bobby", "bobby"),
    ("tab", "bobby"), ("  Bob   Durand ", "bob"),
])
def test_suspend_finds_one_member_by_name(capsys, config, people, typed, who):
    code, out, err = run(capsys, config, "suspend", typed)
    assert code == 0, err
    assert out.startswith(f"suspended {people[who]} ")


def test_a_member_id_or_its_start_is_a_name_too(capsys, config, people):
    assert run(capsys, config, "suspend", people["louis"])[0] == 0
    code, out, _ = run(capsys, config, "resume", people["louis"][:6])
    assert code == 0 and out.startswith(f"resumed {people['louis']}")


def test_several_matches_are_listed_with_their_ids_and_nothing_is_done(capsys, config, people,
                                                                       tmp_path):
    before = journal(tmp_path).last_seq
    code, out, err = run(capsys, config, "suspend", "bo")
    assert code == 1 and one_line_error(err) and not out
    assert f"Bob Durand ({people['bob']}, active)" in err
    assert f"Bobby Tables ({people['bobby']}, active)" in err and "give the id" in err
    assert journal(tmp_path).last_seq == before
    code, _, err = run(capsys, config, "show", "nobody")
    assert code == 1 and "no member 'nobody'" in err


def test_card_works_on_suspend_resume_revoke_and_show(capsys, config, people, tmp_path):
    code, out, _ = run(capsys, config, "suspend", "--card", "0a:1b:2c:3d:4e")
    assert code == 0 and out.startswith(f"suspended {people['bob']}")
    code, out, _ = run(capsys, config, "resume", "--card", BOB)
    assert code == 0 and out.startswith(f"resumed {people['bob']}")
    code, out, _ = run(capsys, config, "show", "--card", BOB)
    assert code == 0 and "Bob Durand" in out
    code, out, _ = run(capsys, config, "revoke", "--card", BOB)
    assert code == 0 and out.startswith("revoked one card of")
    code, out, _ = run(capsys, config, "revoke", "zoé")
    assert code == 0 and out.startswith(f"revoked member {people['zoe']}")
    code, _, err = run(capsys, config, "suspend", "--card", "5566778899")
    assert code == 1 and "this card is not enrolled" in err


def test_suspend_twice_says_so_and_journals_nothing(capsys, config, people, tmp_path):
    assert run(capsys, config, "suspend", "bob")[0] == 0
    before = journal(tmp_path).last_seq
    code, out, err = run(capsys, config, "suspend", "bob")
    assert code == 0 and not err
    assert out == (f"Bob Durand ({people['bob']}) is already suspended: nothing changed, "
                   "nothing journalled\n")
    assert journal(tmp_path).last_seq == before


def test_enroll_member_by_name(capsys, config, people):
    code, out, err = run(capsys, config, "enroll", "--name", "Louis Martin", "--plan",
                         "occasional", "--card", "5566778899", "--member", "louis", "--json")
    assert code == 0, err
    assert json.loads(out)["id"] == people["louis"]
    assert len(json.loads(out)["credentials"]) == 2


# -- the refusals ----------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "says"), [
    (["enroll", "--name", "", "--plan", "subscriber", "--no-card"], "needs a name"),
    (["enroll", "--name", "   ", "--plan", "subscriber", "--no-card"], "needs a name"),
    (["enroll", "--name", "A", "--plan", "subscriber", "--card", ""], "card number is empty"),
    (["enroll", "--name", "A", "--plan", "subscriber", "--card", "0A1B2C3D4"], "odd number"),
    (["enroll", "--name", "A", "--plan", "subscriber", "--no-card", "--from", "2027-01-01",
      "--until", "2026-12-31"], "is before --from"),
    (["enroll", "--name", "A", "--plan", "subscriber", "--no-card", "--until",
      "2020-01-31"], "--until 2020-01-31 is in the past"),
    (["enroll", "--name", "A", "--plan", "vip", "--no-card"], "invalid choice: 'vip'"),
    (["enroll", "--name", "A", "--plan", "subscriber", "--no-card", "--until",
      "31/12/2026"], "expected a date as YYYY-MM-DD"),
    (["log", "--limit", "0"], "must be at least 1"),
    (["log", "--limit", "-5"], "must be at least 1"),
    (["log", "--limit", "many"], "expected a whole number"),
    (["log", "--since", "tomorrow"], "is not a time"),
    (["suspend"], "one of the arguments member --card is required"),
    (["open", "--operator", ""], "needs a name"),
])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(capsys, config, tmp_path,
                                                              args, says):
    code, out, err = run(capsys, config, *args)
    assert code in (1, 2) and one_line_error(err), err
    assert says in err and not out
    code, listed, _ = run(capsys, config, "list", "--json")
    assert code == 0 and listed == ""  # nobody was enrolled


def test_a_past_until_is_accepted_with_force(capsys, config):
    code, out, err = run(capsys, config, "enroll", "--name", "Old", "--plan", "subscriber",
                         "--no-card", "--until", "2020-01-31", "--force", "--json")
    assert code == 0, err
    assert json.loads(out)["valid_until"] == "2020-01-31"


def every_command() -> list[list[str]]:
    from accessd.cli.host import subcommands
    from accessd.cli.main import build_parser

    found = []

    def walk(parser, path):
        subs = subcommands(parser)
        if not subs:
            found.append(path)
        for name, child in subs.items():
            walk(child, [*path, name])

    walk(build_parser(), [])
    return found


@pytest.mark.parametrize("command", every_command(), ids=" ".join)
def test_every_command_refuses_an_unknown_option_in_one_line(capsys, config, command):
    code, out, err = run(capsys, config, *command, "--no-such-option")
    assert code == 2 and one_line_error(err), err
    assert "--help" in err and "usage:" not in err


def test_bad_input_never_prints_a_traceback(tmp_path):
    """The real entry point, each command with input it cannot use."""
    config = write_config(tmp_path)
    cases = [
        ["enroll", "--from", "2027-01-01", "--until", "2026-12-31", "--name", "A", "--plan",
         "subscriber", "--no-card"],
        ["enroll", "--name", "A", "--plan", "subscriber", "--card", "zz"],
        ["enroll", "--name", "A", "--plan", "subscriber", "--no-card", "--member", "nobody"],
        ["show", "nobody"], ["revoke", "--credential", "ffff"], ["why", "nobody"],
        ["log", "--since", "2026-02-30"], ["log", "--until", "25:00"], ["log", "--limit", "0"],
        ["open", "--operator", "x", "--seconds", "nan"], ["status", "--json", "extra"],
        ["resume", "--card", "not-a-card"], ["door-key", "--new", "x"],
        ["card", "retire-key", "seven"], ["card", "verify-sun", "https://x/?e=zz",
                                          "--meta-key", "00", "--file-key", "00"],
        ["central", "report", "--store", str(tmp_path / "c.db"), "--site", "nowhere",
         "--month", "2026-11"],
        ["central", "report", "--store", str(tmp_path / "c.db"), "--site", "s",
         "--month", "November"],
        ["central", "entries", "--store", str(tmp_path / "c.db"), "--site", "s", "--limit",
         "0"],
        ["--config"], [],
    ]
    for args in cases:
        r = subprocess.run([sys.executable, "-m", "accessd",
                            *(["--config", str(config)] if args[:1] != ["--config"] else []),
                            *args], capture_output=True, text=True, timeout=60)
        assert r.returncode in (1, 2), (args, r.stdout, r.stderr)
        assert one_line_error(r.stderr), (args, r.stderr)


def test_a_bug_is_one_line_too_and_debug_shows_the_traceback(tmp_path):
    """A journal whose events table is gone: `log` fails in a way nobody planned for."""
    import sqlite3

    config = write_config(tmp_path)
    assert cli(config, "enroll", "--name", "A", "--plan", "subscriber", "--no-card"
               ).returncode == 0
    db = sqlite3.connect(tmp_path / "state" / "journal.db")
    db.execute("DROP TABLE events")
    db.execute("CREATE TABLE events (seq INTEGER)")
    db.commit()
    db.close()
    r = cli(config, "log")
    assert r.returncode == 1 and one_line_error(r.stderr), r.stderr


# -- secrets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["list"], ["log"], ["why"], ["status"], ["door-key"],
                                     ["show", "x"], ["suspend", "x"], ["card", "keys"]])
def test_every_command_reports_a_loose_secret_as_the_docs_promise(tmp_path, command):
    config = write_config(tmp_path)
    key = tmp_path / "site.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o644)
    config.write_text(config.read_text().replace("[site]\n",
                                                 f'[site]\nsecret_file = "{key}"\n'))
    r = cli(config, *command)
    assert r.returncode == 1 and one_line_error(r.stderr), r.stderr
    assert f"{config}: site.secret_file: {key}: " in r.stderr and f"chmod 600 {key}" in r.stderr


def test_doctor_names_a_loose_door_key_in_its_configuration_line(tmp_path):
    config = write_config(tmp_path)
    assert cli(config, "door-key").returncode == 0
    door_key = tmp_path / "state" / "door.key"
    door_key.chmod(0o640)
    r = cli(config, "doctor")
    assert r.returncode == 1
    first = r.stdout.splitlines()[0]
    assert first.startswith("ACTION configuration:")
    assert f"{config}: site.door_key_file: {door_key}: " in first
    r = cli(config, "door-key")
    assert one_line_error(r.stderr) and "site.door_key_file" in r.stderr


# -- log --since, --member -------------------------------------------------------------------
NOW = datetime(2026, 11, 4, 10, 30, tzinfo=PARIS)  # a Wednesday


@pytest.mark.parametrize(("typed", "meant"), [
    ("today", datetime(2026, 11, 4, 0, 0, tzinfo=PARIS)),
    ("yesterday", datetime(2026, 11, 3, 0, 0, tzinfo=PARIS)),
    ("monday", datetime(2026, 11, 2, 0, 0, tzinfo=PARIS)),
    ("Wed", datetime(2026, 11, 4, 0, 0, tzinfo=PARIS)),
    ("thursday", datetime(2026, 10, 29, 0, 0, tzinfo=PARIS)),
    ("2026-10-25", datetime(2026, 10, 25, 0, 0, tzinfo=PARIS)),
    ("2026-10-25 02:30", datetime(2026, 10, 25, 2, 30, tzinfo=PARIS)),  # the first 02:30
    ("2026-11-02T08:00", datetime(2026, 11, 2, 8, 0, tzinfo=PARIS)),
    ("2026-11-02T08:00+00:00", datetime(2026, 11, 2, 8, 0, tzinfo=UTC)),
    ("2026-11-02T08:00Z", datetime(2026, 11, 2, 8, 0, tzinfo=UTC)),
    ("08:15", datetime(2026, 11, 4, 8, 15, tzinfo=PARIS)),
    ("24h", NOW - timedelta(hours=24)),
    ("30m", NOW - timedelta(minutes=30)),
    ("1h30m", NOW - timedelta(minutes=90)),
    ("2w", NOW - timedelta(weeks=2)),
])
def test_since_understands_what_a_host_types(typed, meant):
    from accessd.cli.timeparse import parse_when

    # in UTC: an ambiguous wall time (02:30 when clocks go back) never equals another zone's
    assert parse_when(typed).resolve(PARIS, NOW) == meant.astimezone(UTC)


@pytest.mark.parametrize("typed", ["tomorrow", "2026-02-30", "25:00", "7x", "", "mon day"])
def test_since_refuses_what_it_cannot_read(typed):
    import argparse

    from accessd.cli.timeparse import parse_when

    with pytest.raises(argparse.ArgumentTypeError, match="is not a time"):
        parse_when(typed)


def test_log_since_today_and_yesterday_in_site_time(capsys, config, tmp_path, people):
    """Events at known instants; the site is in Paris, whatever the machine's zone."""
    now = datetime.now(PARIS)
    today = datetime.combine(now.date(), time(0, 30), tzinfo=PARIS)
    yesterday = today - timedelta(days=1)
    j = journal(tmp_path)
    for ts, who in ((yesterday - timedelta(hours=1), "day before"), (yesterday, "yesterday"),
                    (today, "today")):
        j.append(Event(EventType.ACCESS_DENIED, ts=ts.astimezone(UTC), reader="door",
                       member_name=who, result="denied", reason="expired"))
    j.close()

    def names(*args: str) -> list[str]:
        code, out, err = run(capsys, config, "log", "--type", "access.*", "--json", *args)
        assert code == 0, err
        return [json.loads(line)["member_name"] for line in out.splitlines()]

    assert names("--since", "today") == ["today"]
    assert names("--since", "yesterday") == ["yesterday", "today"]
    assert names("--since", "yesterday", "--until", "today") == ["yesterday"]
    code, out, _ = run(capsys, config, "log", "--since", "today", "--type", "access.*")
    zone = today.strftime("%Z")
    assert out == (f"{7:>6}  {today:%Y-%m-%d %H:%M:%S} {zone}  access.denied        "
                   "today refused at door: membership ended\n")


def test_log_member_by_name_and_the_words_of_a_line(capsys, config, tmp_path, people):
    assert run(capsys, config, "suspend", "bob")[0] == 0
    code, out, _ = run(capsys, config, "log", "--member", "bob")
    lines = out.splitlines()
    assert len(lines) == 2 and all("Bob Durand" in line for line in lines)
    assert "Bobby" not in out and lines[1].endswith("Bob Durand: suspended by " +
                                                    lines[1].rsplit(" ", 1)[-1])
    code, _, err = run(capsys, config, "log", "--member", "bo")
    assert code == 1 and "matches 2 members" in err
    j = journal(tmp_path)  # someone the rules forgot: the journal's names still match
    j.append(Event(EventType.ACCESS_GRANTED, reader="door", member_id="m-gone",
                   member_name="Ghislaine Old", result="granted", reason="subscriber"))
    j.close()
    code, out, _ = run(capsys, config, "log", "--member", "ghislaine")
    assert code == 0 and "Ghislaine Old let in at door (subscriber)" in out


@pytest.mark.parametrize(("zone", "shown"), [("Europe/Paris", r"CES?T"),
                                             ("America/Sao_Paulo", r"-03:00"),
                                             ("Asia/Kolkata", r"IST")])
def test_times_a_person_reads_carry_the_zone(zone, shown):
    from accessd.cli.timeparse import local_time

    text = local_time(datetime(2026, 11, 2, 17, 2, 11, tzinfo=UTC), ZoneInfo(zone))
    assert re.fullmatch(r"2026-11-02 \d\d:\d\d:11 " + shown, text), text


# -- why -------------------------------------------------------------------------------------
def _decision(tmp_path: Path, reason: str, *, ts: datetime | None = None,
              member: tuple[str, str, str] | None = None, credential: str | None = None,
              trusted: bool = True, reader: str = "door") -> None:
    from accessd.decision import GRANT_REASONS, Reason

    granted = Reason(reason) in GRANT_REASONS
    mid, name, plan = member or (None, None, None)
    j = journal(tmp_path)
    j.append(Event(EventType.ACCESS_GRANTED if granted else EventType.ACCESS_DENIED,
                   ts=ts or datetime.now(UTC), reader=reader, member_id=mid, member_name=name,
                   plan=plan, result="granted" if granted else "denied", reason=reason,
                   credential=credential, clock_trusted=trusted))
    j.close()


def test_every_reason_has_words():
    from accessd.decision import Reason
    from accessd.words import REASON_WORDS, SHORT_REASONS

    assert set(REASON_WORDS) == set(Reason)
    assert set(SHORT_REASONS) >= {str(r) for r in Reason}


def test_every_reason_is_explained_in_one_sentence(capsys, config, tmp_path, people):
    """Each reason of docs/decision.md, as `why` says it: a sentence in words, no code."""
    from accessd.decision import GRANT_REASONS, Reason

    for reason in Reason:
        _decision(tmp_path, str(reason), member=(people["louis"], "Louis Martin",
                                                 "occasional"))
        code, out, err = run(capsys, config, "why", "louis")
        assert code == 0, err
        sentence = out.strip()
        assert "\n" not in sentence
        verb = "was let" if reason in GRANT_REASONS else "was refused"
        assert sentence.startswith(f"Louis Martin {verb} "), sentence
        assert " because " in sentence, sentence
        assert not re.search(r"\b[a-z]+_[a-z_]+\b", sentence), sentence  # no code left


def test_why_says_the_hours_for_an_occasional_member_refused_at_18_02(capsys, config,
                                                                      tmp_path, people):
    now = datetime.now(PARIS)
    at = datetime.combine(now.date(), time(18, 2), tzinfo=PARIS)
    when = "at 18:02"
    if at > now:
        at -= timedelta(days=1)
        when = "yesterday at 18:02"
    _decision(tmp_path, "outside_opening_hours", ts=at.astimezone(UTC),
              member=(people["louis"], "Louis Martin", "occasional"))
    code, out, _ = run(capsys, config, "why", "Louis")
    assert out == (f"Louis Martin was refused {when} {at:%Z} because occasional members "
                   "enter 09:00–18:00 Monday to Friday\n")
    code, out, _ = run(capsys, config, "why", "--json", "louis")
    answer = json.loads(out)
    assert answer["member_id"] == people["louis"]
    assert answer["event"]["reason"] == "outside_opening_hours"
    assert answer["event"]["ts"].endswith("Z")  # UTC in JSON only


def test_why_for_a_card_an_old_day_a_closed_day_and_no_argument(capsys, config, tmp_path,
                                                                people):
    from accessd.admin import Site
    from accessd.config import load_config
    from accessd.credentials import short

    with Site.open(load_config(config)) as site:
        stranger = short(site.hasher("5566778899"))
    saturday = datetime(2026, 11, 7, 10, 0, tzinfo=PARIS)
    _decision(tmp_path, "closed_day", ts=saturday.astimezone(UTC),
              member=(people["zoe"], "Zoé Faure", "occasional"), trusted=False)
    code, out, _ = run(capsys, config, "why", "zoe")
    assert out == ("Zoé Faure was refused on 2026-11-07 at 10:00 CET because occasional members "
                   "do not enter on Saturdays (they enter 09:00–18:00 Monday to Friday) (the "
                   "door's clock was not synchronised then)\n")
    _decision(tmp_path, "unknown_credential", credential=stranger)
    code, out, _ = run(capsys, config, "why", "55:66:77:88:99")
    assert out.startswith(f"This card ({stranger}) was refused at ")
    assert out.endswith("because this card is not enrolled (enrol it with 'accessd enroll')\n")
    code, out, _ = run(capsys, config, "why")
    assert out.startswith(f"Card {stranger} was refused at ")


def test_why_for_a_member_without_decisions_or_card(capsys, config, people):
    code, out, _ = run(capsys, config, "why", "bob")
    assert code == 0
    assert out.startswith(f"Bob Durand ({people['bob']}) has no decision in the journal")
    enrol(capsys, config, "Nina Nocard", None)
    code, out, _ = run(capsys, config, "why", "nina")
    assert "Nina Nocard has no card yet (accessd enroll --member" in out


def test_why_explains_an_expired_member_with_the_date(capsys, config, tmp_path):
    mid = enrol(capsys, config, "Claire Petit", "5A3C9E0012", "subscriber", "--until",
                "2025-12-31", "--force")
    _decision(tmp_path, "expired", member=(mid, "Claire Petit", "subscriber"))
    code, out, _ = run(capsys, config, "why", "claire")
    assert out.endswith("because their membership ended on 2025-12-31\n")


def test_words_for_days():
    from accessd.words import days_words

    assert days_words({"mon", "tue", "wed", "thu", "fri"}) == "Monday to Friday"
    assert days_words({"mon", "wed", "fri"}) == "Monday, Wednesday and Friday"
    assert days_words({"sat", "sun"}) == "Saturday and Sunday"
    assert days_words(set(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))) == "every day"
    assert days_words({"mon", "tue", "wed", "fri", "sat"}) == \
        "Monday to Wednesday and Friday and Saturday"


def test_alarm_words():
    from accessd.words import alarm_words

    assert alarm_words("door.held_open") == "door held open"
    assert alarm_words("door.forced") == "door forced open"
    assert alarm_words("reader_lockout:door") == "reader door locked out after unknown cards"
    assert alarm_words("journal_unavailable").startswith("journal cannot be written")


# -- status ----------------------------------------------------------------------------------
REPRS = re.compile(r"\{'|'\}|\bNone\b|\bTrue\b|\bFalse\b|\[\]|\['")


def test_status_without_the_daemon_says_so_once(config, people):
    r = cli(config, "status")
    assert r.returncode == 3
    assert r.stdout.lower().count("not running") == 1
    assert not REPRS.search(r.stdout), r.stdout
    assert r.stdout.splitlines() == [
        f"Daemon: not running (no control socket at {config.parent}/state/control.sock)",
        "Journal: 4 events kept here (no office link: [mqtt] enabled = false)",
        "Rules: none from the office yet, 4 members, 4 cards enrolled here"]
    assert json.loads(cli(config, "status", "--json").stdout)["daemon"] == "not running"
