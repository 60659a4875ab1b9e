"""NfcReader with authenticated cards, on nfcpy's real frontend over a `Field` of card models."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from readers_helpers import Recorder

pytest.importorskip("nfc.clf.device")

from accessd.cards.channel import Channel
from accessd.cards.keys import Keyring, MasterKey
from accessd.cards.reader import SecureCards
from accessd.cards.testing import Desfire, DirectTransport, Ntag424
from accessd.cards.testing.field import Field, UidOnlyCard
from accessd.config import ReaderConfig
from accessd.decision import Proof
from accessd.errors import CardError
from accessd.readers.nfc_reader import NfcReader

KEYS = Keyring({1: MasterKey(1, bytes(range(16)))}, "site")


@pytest.fixture
def field(monkeypatch: pytest.MonkeyPatch) -> Field:
    f = Field()
    f.install(monkeypatch.setattr)
    return f


@pytest.fixture
def running(field: Field) -> Iterator[tuple[NfcReader, Recorder]]:
    cfg = ReaderConfig(name="lobby", type="nfc", port="usb", hold_off_s=0.5)
    reader = NfcReader(cfg, reconnect_min_s=0.02, reconnect_max_s=0.1, poll_interval_s=0.02,
                       secure=SecureCards(KEYS))
    rec = Recorder()
    reader.start(rec.on_card, rec.on_status)
    rec.wait_online(True)
    yield reader, rec
    reader.stop()


def issued(card: Ntag424 | Desfire) -> Ntag424 | Desfire:
    SecureCards(KEYS).issue(DirectTransport(card), card.anticollision_uid, "m-ana")
    card.power_up()
    return card


def polls(field: Field, n: int) -> None:
    """Wait until the reader has polled the field `n` more times."""
    target = field.senses + n
    deadline = time.monotonic() + 5
    while field.senses < target:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_non_iso_dep_cards_are_still_read_by_uid(running: tuple[NfcReader, Recorder],
                                                 field: Field) -> None:
    _, rec = running
    field.put(UidOnlyCard(bytes.fromhex("5A3C9E21")))
    read = rec.next_card()
    assert (read.uid, read.technology, read.proof) == ("5A3C9E21", "iso14443a", None)


def test_blank_chips_are_read_by_uid(running: tuple[NfcReader, Recorder], field: Field) -> None:
    _, rec = running
    card = Desfire()
    field.put(card)
    read = rec.next_card()
    assert (read.uid, read.proof) == (card.uid.hex().upper(), None)


def test_a_card_resting_on_the_reader_is_authenticated_once(
        running: tuple[NfcReader, Recorder], field: Field) -> None:
    _, rec = running
    card = issued(Ntag424())
    field.put(card)
    read = rec.next_card()
    assert read.technology == "ntag424" and read.proof and read.proof.member_ref == "m-ana"
    commands = card.commands
    polls(field, 10)
    assert card.commands == commands, "a resting card must not be re-authenticated each poll"
    assert len(rec.cards) == 1


def test_failures_of_a_resting_random_id_card_are_held_off(
        running: tuple[NfcReader, Recorder], field: Field) -> None:
    _, rec = running
    forged = Ntag424(random_uid=True)  # claims to be issued, has no keys of ours
    for key in forged.app.keys:
        key.version = 1
    field.put(forged)
    assert rec.next_card().proof.proof is Proof.FAILED  # type: ignore[union-attr]
    polls(field, 8)  # a new random ID at each poll, and a new failure: one presentation
    assert len(rec.cards) == 1


def test_pulling_the_card_away_is_reported_quietly(running: tuple[NfcReader, Recorder],
                                                   field: Field,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    _, rec = running
    card = issued(Desfire())
    caplog.set_level(logging.DEBUG)
    field.put(card)
    field.leave_after(3)
    read = rec.next_card()
    assert read.proof is not None and read.proof.proof is Proof.INCOMPLETE
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert card.uid.hex().upper() not in caplog.text.upper()


def test_uids_stay_out_of_the_log_at_debug(running: tuple[NfcReader, Recorder], field: Field,
                                          caplog: pytest.LogCaptureFixture) -> None:
    _, rec = running
    card = issued(Ntag424())
    caplog.set_level(logging.DEBUG)
    field.put(card)
    rec.next_card()
    assert card.uid.hex().upper() not in caplog.text.upper()


def test_a_job_takes_the_next_card_instead_of_the_door(running: tuple[NfcReader, Recorder],
                                                      field: Field) -> None:
    reader, rec = running
    card = Ntag424()
    field.put(card)
    rec.next_card()  # blank: read by its UID once, then held off while it rests
    secure = SecureCards(KEYS)
    issued_card = reader.run_on_next_card(secure.job("issue", "m-bob"), timeout=10)
    assert issued_card.uid == card.uid and issued_card.key_version == 1
    assert len(rec.cards) == 1  # the job's card made no decision
    card.power_up()
    found = secure.ntag.identify(Channel(DirectTransport(card)), KEYS, card.uid)
    assert found is not None and found.member_ref == "m-bob"


def test_a_job_with_no_card_times_out(running: tuple[NfcReader, Recorder]) -> None:
    reader, _ = running
    with pytest.raises(CardError, match="no card was presented"):
        reader.run_on_next_card(lambda t, seen: None, timeout=0.2)
    assert reader.pending_jobs == 0
