"""The master key file: permissions, format, rollover, and the keys derived from it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from accessd.cards import keys
from accessd.cards.keys import Keyring, MasterKey
from accessd.errors import ConfigError, SecretPermissionError


def test_keygen_creates_0600_then_adds_versions(tmp_path: Path) -> None:
    path = tmp_path / "cards.keys"
    first = keys.new_version(path)
    assert first.version == 1 and stat.S_IMODE(path.stat().st_mode) == 0o600
    second = keys.new_version(path)
    ring = Keyring.load(path, "site")
    assert (second.version, ring.current.version) == (2, 2)
    assert ring.get(1).key == first.key and first.key != second.key  # type: ignore[union-attr]
    assert first.key.hex() not in repr(ring) and first.key.hex() not in repr(first)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610])
def test_looser_modes_are_refused_naming_the_key_and_path(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "cards.keys"
    keys.new_version(path)
    os.chmod(path, mode)
    with pytest.raises(SecretPermissionError) as err:
        Keyring.load(path, "site")
    message = str(err.value)
    assert "cards.master_key_file" in message and str(path) in message
    assert "\n" not in message and "chmod 600" in message


def test_retire_and_current(tmp_path: Path) -> None:
    path = tmp_path / "cards.keys"
    keys.new_version(path)
    with pytest.raises(ConfigError, match="last one"):
        keys.retire(path, 1)
    keys.new_version(path)
    keys.retire(path, 1)
    ring = Keyring.load(path, "site")
    assert ring.get(1).retired and ring.current.version == 2  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="no version 7"):
        keys.retire(path, 7)


@pytest.mark.parametrize(("text", "why"), [
    ("", "no key"),
    ("1 00112233\n", "line 1"),
    ("0 " + "00" * 16 + "\n", "version must be"),
    ("1 " + "00" * 16 + "\n1 " + "11" * 16 + "\n", "once"),
    ("1 " + "zz" * 16 + "\n", "line 1"),
])
def test_malformed_files(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "cards.keys"
    path.write_text(text)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match=why) as err:
        Keyring.load(path, "site")
    assert "cards.master_key_file" in str(err.value)


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="accessd card keygen"):
        Keyring.load(tmp_path / "nope.keys", "site")


def test_derived_keys() -> None:
    ring = Keyring({1: MasterKey(1, bytes(range(16))), 2: MasterKey(2, bytes(16))}, "morez")
    uid = bytes.fromhex("04A1B2C3D4E5F6")
    a = ring.card_key(1, b"424", 0, uid)
    assert a != ring.card_key(1, b"424", 1, uid)  # per key number
    assert a != ring.card_key(1, b"424", 0, bytes.fromhex("04A1B2C3D4E5F7"))  # per card
    assert a != ring.card_key(2, b"424", 0, uid)  # per version
    assert a != Keyring(ring.keys, "annecy").card_key(1, b"424", 0, uid)  # per site
    assert ring.card_key(0, b"424", 0, uid) == bytes(16)  # version 0: the factory's key
    assert ring.site_key(1, b"424", 1) != ring.site_key(1, b"424", 2)
    with pytest.raises(KeyError):
        ring.card_key(3, b"424", 0, uid)
