"""`accessd card ...` black-box: exit statuses, one-line errors, nothing secret printed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import write_config

from accessd.cards import keys
from accessd.cli.main import main
from accessd.config import load_config
from accessd.store.rules import RuleCache

ZERO = "00" * 16
AN12196 = "https://ntag.nxp.com/424?e=EF963FF7828658A599F3041510671E88&c=94EED9EE65337086"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_verify_sun_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "card", "verify-sun", AN12196, "--meta-key", ZERO,
                       "--file-key", ZERO)
    assert code == 0
    assert out.splitlines() == ["uid: 04DE5F1EACC040", "read counter: 61", "mac: valid"]


def test_verify_sun_wrong_mac_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "card", "verify-sun", AN12196[:-1] + "7", "--meta-key", ZERO,
                       "--file-key", ZERO, "--json")
    assert code == 1
    assert json.loads(out) == {"uid": "04DE5F1EACC040", "read_counter": 61,
                               "mac_valid": False}


def test_verify_sun_wrong_file_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "card", "verify-sun", AN12196, "--meta-key", ZERO,
                       "--file-key", "11" * 16)
    assert code == 1 and "mac: INVALID" in out


@pytest.mark.parametrize(("url", "meta", "needle"), [
    ("https://x/?e=zz&c=00", ZERO, "not hexadecimal"),
    ("https://x/?c=94EED9EE65337086", ZERO, "no SUN parameters"),
    (AN12196, "00" * 8, "--meta-key"),
    (AN12196, "11" * 16, "does not decrypt"),
])
def test_verify_sun_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], url: str,
                                         meta: str, needle: str) -> None:
    code, out, err = run(capsys, "card", "verify-sun", url, "--meta-key", meta,
                         "--file-key", ZERO)
    assert code == 1 and out == ""
    assert err.startswith("accessd: error:") and needle in err and err.count("\n") == 1


def test_keygen_keys_retire(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path))
    code, out, _ = run(capsys, "--config", config, "card", "keygen")
    path = load_config(config).cards.master_key_file
    assert code == 0 and "version 1" in out and str(path) in out
    run(capsys, "--config", config, "card", "keygen")
    secret = path.read_text().split()
    code, out, _ = run(capsys, "--config", config, "card", "keys", "--json")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"version": 1, "state": "accepted", "cards": 0},
        {"version": 2, "state": "current", "cards": 0}]
    assert not any(len(word) == 32 and word in out for word in secret)
    code, out, _ = run(capsys, "--config", config, "card", "retire-key", "1")
    assert code == 0 and "retired" in out
    code, out, _ = run(capsys, "--config", config, "card", "keys")
    assert "retired" in out.splitlines()[1]


def test_loose_master_key_file_is_refused_at_check_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, "[cards]\nenabled = true\n")
    path = load_config(config).cards.master_key_file
    keys.new_version(path)
    os.chmod(path, 0o640)
    code, _, err = run(capsys, "--config", str(config), "check-config")
    assert code == 1 and err.count("\n") == 1
    assert "cards.master_key_file" in err and str(path) in err and "chmod 600" in err


def test_missing_master_key_file_is_refused_at_check_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, "[cards]\nenabled = true\n")
    code, _, err = run(capsys, "--config", str(config), "check-config")
    assert code == 1 and "accessd card keygen" in err


def test_issue_without_daemon_or_device(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, "[cards]\nenabled = true\n"))
    code, _, err = run(capsys, "--config", config, "card", "issue", "--name", "Ana", "--plan",
                       "subscriber")
    assert code == 1 and "daemon is not running" in err
    code, _, err = run(capsys, "--config", config, "card", "issue", "--plan", "subscriber")
    assert code == 1 and "--name and --plan" in err


def test_issue_and_wipe_on_a_device_of_its_own(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The host's desk reader, daemon stopped: the card is issued and enrolled."""
    pytest.importorskip("nfc.clf.device")
    from accessd.cards.testing import Ntag424
    from accessd.cards.testing.field import Field

    field = Field()
    field.install(monkeypatch.setattr)
    config = str(write_config(tmp_path, "[cards]\nenabled = true\n"))
    run(capsys, "--config", config, "card", "keygen")
    card = Ntag424()
    field.put(card)  # the host lays the card on the desk reader, then types the command
    for action in (["issue", "--name", "Ana", "--plan", "subscriber", "--json"],
                   ["wipe", "--json"]):
        code, out, err = run(capsys, "--config", config, "card", *action, "--device", "usb",
                             "--timeout", "20")
        assert code == 0, err
        result = json.loads(out)
        if action[0] == "issue":
            assert result["issued"]["card"] == "ntag424" and result["name"] == "Ana"
            assert {k.version for k in card.app.keys} == {1}
        else:
            assert result["revoked_from"] and {k.version for k in card.app.keys} == {0}
    rules = RuleCache(load_config(config).storage.rules_db, readonly=True)
    (member,) = rules.members()
    assert [c["status"] for c in rules.member(member.id).credentials] == ["revoked"]
    rules.close()
