"""Configuration: defaults, and one clear error naming the file and the key."""

from __future__ import annotations

import subprocess
import sys
from datetime import time
from pathlib import Path

import pytest

from accessd.config import load_config, parse_config
from accessd.errors import ConfigError

READER = '[[readers]]\nname = "door"\ntype = "simulated"\n'


def test_defaults() -> None:
    cfg = parse_config(READER)
    assert cfg.site.timezone == "Europe/Paris"
    assert (cfg.schedule.opens, cfg.schedule.closes) == (time(9), time(18))
    assert cfg.lock.release_s == 5.0 and cfg.lock.type == "fail-secure"
    assert cfg.storage.retention_days == 90
    assert cfg.pins.factory == "default"  # the mock is never chosen silently


@pytest.mark.parametrize(("text", "key", "words"), [
    ("[lock]\nrelease_s = 2\n", "lock.release_s", "at least 3"),
    ("[lock]\ntype = \"magnetic\"\n", "lock.type", "fail-secure, fail-safe"),
    ("[site]\ntimezone = \"Mars/Olympus\"\n", "site.timezone", "unknown time zone"),
    ("[site]\nid = \"Bad Site\"\n", "site.id", "lower-case"),
    ("[schedule]\nopens = \"9h\"\n", "schedule.opens", "HH:MM"),
    ("[schedule]\nopens = \"18:00\"\ncloses = \"09:00\"\n", "schedule.closes", "after"),
    ("[schedule]\ndays = [\"monday\"]\n", "schedule.days", "unknown day"),
    ("[schedule]\nclosures = [\"25/12\"]\n", "schedule.closures", "YYYY-MM-DD"),
    ("[pins]\nlock_relay = 40\n", "pins.lock_relay", "0..27"),
    ("[pins]\ndoor_contact = 17\n", "pins.lock_relay", "share"),
    ("[door]\nheld_open_prealarm_s = 40\n", "door.held_open_prealarm_s", "shorter"),
    ("[mqtt]\nport = \"x\"\n", "mqtt.port", "an integer"),
    ("[mqtt]\ntopic_prefix = \"a/b\"\n", "mqtt.topic_prefix", "one topic level"),
    ("[clock]\ntrust = \"maybe\"\n", "clock.trust", "auto"),
    ("[lock]\nrelease = 5\n", "lock.release", "unknown key"),
    ("colour = \"blue\"\n", "colour", "unknown key"),
])
def test_errors_name_the_key(text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text + "\n" + READER, "site.toml")
    message = str(err.value)
    assert message.startswith(f"site.toml: {key}:"), message
    assert words in message


def test_reader_errors() -> None:
    with pytest.raises(ConfigError, match="readers: configure at least one"):
        parse_config("")
    with pytest.raises(ConfigError, match=r"readers\[0\].port: a serial reader needs a port"):
        parse_config('[[readers]]\nname = "a"\ntype = "serial"\n')
    with pytest.raises(ConfigError, match=r"readers\[1\].name: duplicate"):
        parse_config(READER + READER)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[site\n")
    with pytest.raises(ConfigError, match=f"{bad}: not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "missing.toml")


def test_env_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text(READER + '[storage]\ndir = "state"\n')
    monkeypatch.setenv("ACCESSD_CONFIG", str(path))
    cfg = load_config(None)
    assert cfg.storage.dir == tmp_path / "state"
    assert cfg.storage.control_socket == tmp_path / "state" / "control.sock"


def test_daemon_refuses_bad_config_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(READER + "[lock]\nrelease_s = 1\n")
    for cmd in ("run", "check-config"):
        r = subprocess.run([sys.executable, "-m", "accessd", "--config", str(path), cmd],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1
        assert r.stderr.strip().splitlines() == [
            f"accessd: error: {path}: lock.release_s: must be at least 3 s (IEC 60839-11-1)"]
