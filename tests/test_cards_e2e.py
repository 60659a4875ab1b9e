"""Authenticated cards end to end: the real Daemon (gpiozero MockFactory pins, real SQLite
files, the control socket, `accessd card` in process) with an NFC reader on nfcpy's real
ContactlessFrontend, whose radio is a `Field` holding software NTAG 424 DNA / DESFire cards.

Each tap presents the card for one activation (`Field.tap`), as a member does; the journal,
the relay and the card's own keys are the oracles.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config

pytest.importorskip("nfc.clf.device")

from accessd.cards import keys
from accessd.cards.testing import Desfire, Ntag424
from accessd.cards.testing.field import Field, UidOnlyCard
from accessd.cli.main import main
from accessd.config import load_config
from accessd.store.rules import RuleCache

READER = '[[readers]]\nname = "door"\ntype = "nfc"\nport = "usb"\nhold_off_s = 0\n'


class Door:
    """The daemon of one door, in this process, and what it journals."""

    def __init__(self, config: Path) -> None:
        from accessd.daemon.service import Daemon

        self.config = config
        self.cfg = load_config(config)
        self.daemon = Daemon(self.cfg)
        self.entries: queue.Queue[Any] = queue.Queue()
        self.daemon.start()
        assert self.daemon.controller is not None
        self.controller = self.daemon.controller
        self.controller.listeners.append(self.entries.put)
        self.reader = self.daemon.readers[0]
        deadline = time.monotonic() + 10
        while not self.reader.online:
            assert time.monotonic() < deadline, "the NFC reader did not come online"
            time.sleep(0.01)

    @property
    def relay(self) -> Any:
        return self.daemon.hardware.relay

    def access(self, timeout: float = 10.0) -> Any:
        """The next access event journalled."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.entries.get(timeout=max(0.01, deadline - time.monotonic()))
            if str(entry.event.type).startswith("access."):
                return entry.event

    def cli(self, *args: str) -> int:
        return main(["--config", str(self.config), *args])

    def cli_with_card(self, field: Field, card: Any, *args: str) -> int:
        """Run `accessd card ...` against the running daemon, presenting `card` once the
        daemon waits for it."""
        result: dict[str, int] = {}
        thread = threading.Thread(target=lambda: result.setdefault("rc", self.cli(*args)))
        thread.start()
        deadline = time.monotonic() + 10
        while self.reader.pending_jobs == 0:
            assert thread.is_alive() and time.monotonic() < deadline, "no job reached the door"
            time.sleep(0.005)
        field.tap(card)
        thread.join(30)
        return result["rc"]

    def stop(self) -> None:
        self.daemon.stopping.set()
        self.daemon.stop()


@pytest.fixture
def field(monkeypatch: pytest.MonkeyPatch) -> Field:
    f = Field()
    f.install(monkeypatch.setattr)
    return f


def make_config(tmp_path: Path, cards: str = "") -> Path:
    path = write_config(tmp_path, f"[lock]\nrelease_s = 3\n\n[cards]\nenabled = true\n{cards}",
                        readers=READER)
    keys.new_version(load_config(path).cards.master_key_file)
    return path


@pytest.fixture
def door(tmp_path: Path, field: Field) -> Iterator[Door]:
    d = Door(make_config(tmp_path))
    yield d
    d.stop()


def issue(door: Door, field: Field, card: Any, name: str = "Ana",
          plan: str = "subscriber") -> None:
    assert door.cli_with_card(field, card, "card", "issue", "--name", name, "--plan", plan,
                              "--timeout", "20") == 0


@pytest.mark.parametrize("model", [Ntag424, Desfire], ids=["ntag424", "desfire"])
def test_issued_card_opens_the_door(door: Door, field: Field, model: type,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    card = model()
    issue(door, field, card)
    assert "issued" in capsys.readouterr().out
    assert [k.version for k in _keys(card)] == [1] * len(_keys(card))  # no factory key left
    rules = RuleCache(door.cfg.storage.rules_db, readonly=True)
    (listed,) = rules.members()
    (credential,) = rules.member(listed.id).credentials
    rules.close()
    assert credential["technology"] == model.__name__.lower()

    field.tap(card)
    event = door.access()
    assert (event.result, event.reason, event.member_name) == ("granted", "subscriber", "Ana")
    assert event.detail["proof"] == "authenticated" and event.detail["key_version"] == 1
    assert door.relay.released and door.relay.pin_level is not None
    assert card.uid.hex().upper() not in str(event.detail)


def test_random_id_card_is_known_by_its_authenticated_uid(door: Door, field: Field) -> None:
    card = Ntag424(random_uid=True)
    issue(door, field, card)
    for _ in range(2):  # a new random ID at each tap, the same member
        field.tap(card)
        event = door.access()
        assert (event.result, event.member_name) == ("granted", "Ana")
        door.relay.lock()


def test_uid_clone_is_refused_not_authenticated(door: Door, field: Field) -> None:
    card = Ntag424()
    issue(door, field, card)
    field.tap(UidOnlyCard(card.uid))  # the same UID, from an emulator or a cloned tag
    event = door.access()
    assert (event.result, event.reason, event.member_name) == (
        "denied", "not_authenticated", "Ana")
    assert not door.relay.released


def test_a_forged_card_fails_authentication_and_never_falls_back_to_its_uid(
        door: Door, field: Field) -> None:
    card = Ntag424()
    issue(door, field, card)
    forged = Ntag424(uid=card.uid)  # answers like an issued card, without the keys
    for key in forged.app.keys:
        key.version = 1
    field.tap(forged)
    event = door.access()
    assert (event.result, event.reason) == ("denied", "authentication_failed")
    assert event.member_id is None and event.credential is None


def test_card_removed_mid_authentication_is_a_denial_and_the_reader_carries_on(
        door: Door, field: Field) -> None:
    card = Desfire()
    issue(door, field, card)
    field.put(card)
    field.leave_after(2)  # select and GetKeyVersion, then gone
    event = door.access()
    assert (event.result, event.reason) == ("denied", "authentication_incomplete")
    assert door.reader.online
    field.tap(card)
    assert door.access().result == "granted"


def test_wrong_key_version_is_refused_then_rekeyed(door: Door, field: Field,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    card = Ntag424()
    issue(door, field, card)
    path = door.cfg.cards.master_key_file
    keys.new_version(path)
    keys.retire(path, 1)  # the door reloads the keyring when the file changes
    field.tap(card)
    event = door.access()
    assert (event.result, event.reason) == ("denied", "key_version_retired")
    assert door.cli_with_card(field, card, "card", "rekey", "--timeout", "20") == 0
    assert "key version 2" in capsys.readouterr().out
    assert {k.version for k in card.app.keys} == {2}
    field.tap(card)
    event = door.access()
    assert (event.result, event.detail["key_version"]) == ("granted", 2)


def test_older_accepted_version_is_rekeyed_as_the_card_is_presented(door: Door,
                                                                   field: Field) -> None:
    card = Desfire()
    issue(door, field, card)
    keys.new_version(door.cfg.cards.master_key_file)  # rollover: version 1 still accepted
    field.tap(card)
    event = door.access()
    assert (event.result, event.detail["key_version"]) == ("granted", 1)
    app = card.apps[bytes.fromhex("F5A0CD")[::-1]]
    assert {k.version for k in app.keys} == {2}  # re-keyed while still in the field
    door.relay.lock()
    field.tap(card)
    assert door.access().detail["key_version"] == 2
    assert door.cli("card", "keys") == 0


def test_wipe_returns_the_card_to_factory_and_revokes_it(door: Door, field: Field,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    card = Ntag424()
    issue(door, field, card)
    assert door.cli_with_card(field, card, "card", "wipe", "--timeout", "20") == 0
    assert "revoked" in capsys.readouterr().out
    assert {k.version for k in card.app.keys} == {0}
    assert all(k.value == bytes(16) for k in card.app.keys) and card.sdm is None
    rules = RuleCache(door.cfg.storage.rules_db, readonly=True)
    (listed,) = rules.members()
    assert [c["status"] for c in rules.member(listed.id).credentials] == ["revoked"]
    rules.close()
    field.tap(card)  # a blank card is read by its UID: it proves nothing
    event = door.access()
    assert (event.result, event.reason) == ("denied", "not_authenticated")
    # a revoked card stays revoked: issuing it again is refused before anything is written
    assert door.cli_with_card(field, card, "card", "issue", "--name", "Bob", "--plan",
                              "occasional", "--timeout", "20") == 1
    assert "already enrolled" in capsys.readouterr().err
    assert {k.version for k in card.app.keys} == {0}


def test_issuing_an_issued_card_is_refused(door: Door, field: Field,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    card = Desfire()
    issue(door, field, card)
    assert door.cli_with_card(field, card, "card", "issue", "--name", "Eve", "--plan",
                              "subscriber", "--timeout", "20") == 1
    assert "already issued" in capsys.readouterr().err


def test_replayed_sun_message_is_refused(tmp_path: Path, field: Field) -> None:
    d = Door(make_config(tmp_path, 'ntag424_mode = "sun"\n'))
    try:
        card = Ntag424()
        issue(d, field, card)
        skimmer = Recorder(card)
        field.tap(skimmer)  # the message is captured on its way to the door: it opens once
        first = d.access()
        assert (first.result, first.detail["proof"]) == ("granted", "authenticated")
        d.relay.lock()
        field.tap(skimmer.replay())  # the same bytes again
        event = d.access()
        assert (event.result, event.reason, event.member_name) == ("denied", "replayed", "Ana")
        assert not d.relay.released
        field.tap(card)  # the real card's next message has a higher counter
        assert d.access().result == "granted"
    finally:
        d.stop()
    # the counter is on disk: after a restart the old message is still a replay
    d = Door(tmp_path / "accessd.toml")
    try:
        field.tap(skimmer.replay())
        assert d.access().reason == "replayed"
    finally:
        d.stop()


def test_policy_requires_authenticated_cards_for_a_plan(tmp_path: Path, field: Field) -> None:
    d = Door(make_config(tmp_path, 'require_authenticated_plans = ["subscriber"]\n'))
    try:
        assert d.cli("enroll", "--name", "Old", "--plan", "subscriber", "--card",
                     "04A1B2C3D4E5F6") == 0
        assert d.cli("enroll", "--name", "Occ", "--plan", "occasional", "--card",
                     "04A1B2C3D4E5F7") == 0
        field.tap(UidOnlyCard(bytes.fromhex("04A1B2C3D4E5F6")))
        assert d.access().reason == "not_authenticated"
        field.tap(UidOnlyCard(bytes.fromhex("04A1B2C3D4E5F7")))
        assert d.access().reason != "not_authenticated"  # migration: still on its UID card
    finally:
        d.stop()


class Recorder:
    """Sits between a card and the reader and keeps what the card answered: replaying it is
    what a relay or a skimmer can do with a SUN message."""

    sel_res = 0x20

    def __init__(self, card: Ntag424) -> None:
        self.card = card
        self.answers: list[tuple[bytes, bytes]] = []
        self.commands = 0

    @property
    def uid(self) -> bytes:
        return self.card.uid

    @property
    def anticollision_uid(self) -> bytes:
        return self.card.anticollision_uid

    def power_up(self) -> None:
        self.card.power_up()

    def apdu(self, apdu: bytes) -> bytes:
        answer = self.card.apdu(apdu)
        self.answers.append((apdu, answer))
        return answer

    def replay(self) -> Replay:
        return Replay(self.card.uid, dict(self.answers))


class Replay(UidOnlyCard):
    """An ISO 14443-4 emulator answering each command with what the card once answered."""

    sel_res = 0x20

    def __init__(self, uid: bytes, answers: dict[bytes, bytes]) -> None:
        super().__init__(uid)
        self.answers = answers

    def apdu(self, apdu: bytes) -> bytes:
        return self.answers.get(apdu, b"\x6d\x00")


def _keys(card: Any) -> list[Any]:
    if isinstance(card, Ntag424):
        return card.app.keys
    (app,) = card.apps.values()
    return app.keys


def test_enroll_present_refuses_a_card_that_failed_authentication(
        door: Door, field: Field, capsys: pytest.CaptureFixture[str]) -> None:
    forged = Ntag424()
    for key in forged.app.keys:
        key.version = 1
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", door.cli(
        "enroll", "--name", "Eve", "--plan", "subscriber", "--present", "--timeout", "20")))
    thread.start()
    deadline = time.monotonic() + 10
    while not door.controller.capturing:
        assert time.monotonic() < deadline, "the capture did not reach the door"
        time.sleep(0.005)
    field.tap(forged)
    thread.join(30)
    assert result["rc"] == 1 and "failed authentication" in capsys.readouterr().err
    rules = RuleCache(door.cfg.storage.rules_db, readonly=True)
    assert rules.members() == []
    rules.close()
