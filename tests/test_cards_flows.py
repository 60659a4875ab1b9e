"""Issue, identify, re-key and wipe on the card models, including a card pulled away after
every single command of each flow."""

from __future__ import annotations

import contextlib
import os

import pytest

from accessd.cards.channel import Channel
from accessd.cards.desfire import DesfireProfile
from accessd.cards.keys import Keyring, MasterKey
from accessd.cards.ntag424 import Ntag424Profile
from accessd.cards.reader import SecureCards
from accessd.cards.secure import CardProfile
from accessd.cards.testing import Desfire, DirectTransport, Ntag424
from accessd.decision import Proof
from accessd.errors import CardError, CardRemovedError

KINDS = [(Ntag424, Ntag424Profile), (Desfire, DesfireProfile)]
IDS = ["ntag424", "desfire"]


def ring(*versions: int, retired: tuple[int, ...] = (), site: str = "morez") -> Keyring:
    return Keyring({v: MasterKey(v, bytes([v]) * 16, v in retired) for v in versions}, site)


def keys_of(card: Ntag424 | Desfire) -> list:
    if isinstance(card, Ntag424):
        return card.app.keys
    return next(iter(card.apps.values())).keys if card.apps else []


def issued(model: type, profile: CardProfile, keys: Keyring, **kw: bool) -> Ntag424 | Desfire:
    card = model(**kw)
    profile.personalise(Channel(DirectTransport(card)), keys, "m-ana")
    card.power_up()
    return card


def identify(profile: CardProfile, card: Ntag424 | Desfire, keys: Keyring):
    card.power_up()
    return profile.identify(Channel(DirectTransport(card)), keys, card.anticollision_uid)


@pytest.mark.parametrize(("model", "profile_type"), KINDS, ids=IDS)
def test_issue_then_identify(model: type, profile_type: type) -> None:
    keys, profile = ring(1), profile_type()
    card = issued(model, profile, keys)
    found = identify(profile, card, keys)
    assert found is not None and found.proof is Proof.AUTHENTICATED
    assert (found.uid, found.key_version, found.member_ref) == (card.uid, 1, "m-ana")


@pytest.mark.parametrize(("model", "profile_type"), KINDS, ids=IDS)
def test_every_key_is_diversified_per_card_and_per_site(model: type, profile_type: type
                                                        ) -> None:
    keys, profile = ring(1), profile_type()
    a, b = issued(model, profile, keys), issued(model, profile, keys)
    for slot, (ka, kb) in enumerate(zip(keys_of(a), keys_of(b), strict=True)):
        assert ka.value != bytes(16) and ka.version == 1
        shared = slot in profile.site_slots
        assert (ka.value == kb.value) is shared, f"slot {slot}"
    other_site = ring(1, site="annecy")
    found = identify(profile, a, other_site)
    assert found is not None and found.proof is Proof.FAILED


@pytest.mark.parametrize(("model", "profile_type"), KINDS, ids=IDS)
def test_random_id_card_identifies_by_its_real_uid(model: type, profile_type: type) -> None:
    keys, profile = ring(1), profile_type()
    card = issued(model, profile, keys, random_uid=True)
    found = identify(profile, card, keys)
    assert card.anticollision_uid[0] == 0x08
    assert found is not None and found.uid == card.uid


@pytest.mark.parametrize(("model", "profile_type"), KINDS, ids=IDS)
def test_blank_card_is_not_an_accessd_card(model: type, profile_type: type) -> None:
    assert identify(profile_type(), model(), ring(1)) is None


@pytest.mark.parametrize(("model", "profile_type"), KINDS, ids=IDS)
def test_versions_unknown_and_retired(model: type, profile_type: type) -> None:
    profile = profile_type()
    card = issued(model, profile, ring(3))
    unknown = identify(profile, card, ring(1, 2))
    assert unknown is not None and unknown.proof is Proof.FAILED
    assert "version 3" in unknown.why
    retired = identify(profile, card, ring(3, 4, retired=(3,)))
    assert retired is not None and retired.proof is Proof.KEY_RETIRED


@pytest.mark.parametrize(("model", "profile_type"), KINDS, ids=IDS)
def test_rekey_and_wipe(model: type, profile_type: type) -> None:
    profile = profile_type()
    card = issued(model, profile, ring(1))
    keys = ring(1, 2)
    card.power_up()
    uid, version = profile.rekey(Channel(DirectTransport(card)), keys, card.anticollision_uid)
    assert (uid, version) == (card.uid, 2) and {k.version for k in keys_of(card)} == {2}
    card.power_up()
    assert profile.wipe(Channel(DirectTransport(card)), keys, card.anticollision_uid) == card.uid
    assert all(k.value == bytes(16) and k.version == 0 for k in keys_of(card))
    card.power_up()
    profile.personalise(Channel(DirectTransport(card)), keys, "m-bob")  # reusable
    assert identify(profile, card, keys).member_ref == "m-bob"  # type: ignore[union-attr]


@pytest.mark.parametrize(("model", "profile_type"), KINDS, ids=IDS)
def test_rekey_pulled_away_at_any_command_finishes_next_time(model: type,
                                                             profile_type: type) -> None:
    profile = profile_type()
    keys = ring(1, 2)
    for cut in range(12):
        card = issued(model, profile, ring(1))
        card.power_up()
        t = DirectTransport(card)
        t.remove_after(cut)
        with contextlib.suppress(CardRemovedError):
            profile.rekey(Channel(t), keys, card.anticollision_uid)
        card.power_up()  # mixed versions now: the next presentation finishes the job
        profile.rekey(Channel(DirectTransport(card)), keys, card.anticollision_uid)
        assert {k.version for k in keys_of(card)} == {2}, f"cut after {cut}"
        assert identify(profile, card, keys).proof is Proof.AUTHENTICATED  # type: ignore


@pytest.mark.parametrize(("model", "profile_type"), KINDS, ids=IDS)
def test_issue_pulled_away_at_any_command_can_be_wiped_and_issued_again(
        model: type, profile_type: type) -> None:
    profile, keys = profile_type(), ring(1)
    completed_at = None
    for cut in range(40):
        card = model()
        t = DirectTransport(card)
        t.remove_after(cut)
        try:
            profile.personalise(Channel(t), keys, "m-ana")
            completed_at = cut
        except CardRemovedError:
            card.power_up()
            try:  # whatever state it was left in, wipe brings it back
                profile.wipe(Channel(DirectTransport(card)), keys, card.anticollision_uid)
            except CardError as exc:
                assert "not issued" in str(exc) or "no accessd application" in str(exc)
            card.power_up()
            profile.personalise(Channel(DirectTransport(card)), keys, "m-ana")
        assert identify(profile, card, keys).member_ref == "m-ana"  # type: ignore[union-attr]
        if completed_at is not None:
            break
    assert completed_at is not None


def test_sun_mode_at_the_door() -> None:
    keys, profile = ring(1), Ntag424Profile("https://door.example/t")
    card = issued(Ntag424, profile, keys)
    counters = []
    for _ in range(3):
        card.power_up()
        found = profile.identify_sun(Channel(DirectTransport(card)), keys)
        assert found is not None and found.proof is Proof.AUTHENTICATED and found.uid == card.uid
        counters.append(found.sun_counter)
    assert counters == [1, 2, 3]
    card.power_up()
    retired = profile.identify_sun(Channel(DirectTransport(card)), ring(1, 2, retired=(1,)))
    assert retired is not None and retired.proof is Proof.KEY_RETIRED


def test_a_sun_message_under_another_file_key_fails() -> None:
    keys, profile = ring(1), Ntag424Profile()
    card = issued(Ntag424, profile, keys)
    card.app.keys[2].value = os.urandom(16)  # the MAC key no longer matches the UID's
    card.power_up()
    found = profile.identify_sun(Channel(DirectTransport(card)), keys)
    assert found is not None and found.proof is Proof.FAILED and "MAC" in found.why


class NotAccessd:
    """An ISO 14443-4 card that is neither chip (a bank card, a phone)."""

    uid = anticollision_uid = bytes.fromhex("08A1B2C3")
    commands = 0

    def power_up(self) -> None:
        pass

    def apdu(self, apdu: bytes) -> bytes:
        return b"\x6a\x82" if apdu[0] == 0x00 else b"\x6e\x00"


def test_secure_cards_present() -> None:
    keys = ring(1)
    secure = SecureCards(keys)
    assert secure.present(DirectTransport(NotAccessd()), NotAccessd.uid) is None
    card = issued(Desfire, secure.desfire, keys)
    t = DirectTransport(card)
    t.remove_after(3)
    _, proof = secure.present(t, card.anticollision_uid)  # type: ignore[misc]
    assert (proof.proof, proof.card) == (Proof.INCOMPLETE, "desfire")
    card.power_up()
    uid, proof = secure.present(DirectTransport(card), card.anticollision_uid)  # type: ignore
    assert (uid, proof.proof, proof.rekey_to) == (card.uid, Proof.AUTHENTICATED, None)
    rolled = SecureCards(ring(1, 2))
    card.power_up()
    t = DirectTransport(card)
    uid, proof = rolled.present(t, card.anticollision_uid)  # type: ignore[misc]
    assert proof.rekey_to == 2
    assert rolled.rekey_after(t, card.anticollision_uid, uid, proof)
    assert {k.version for k in keys_of(card)} == {2}


def test_record_format() -> None:
    from accessd.cards.secure import decode_record, encode_record

    assert decode_record(encode_record("m-0123456789")) == "m-0123456789"
    with pytest.raises(CardError):
        encode_record("x" * 40)
    with pytest.raises(CardError):
        decode_record(bytes(32))


class DfOnly:
    """Answers the NTAG's DF name (as any ISO 7816 app could), then nothing it knows."""

    uid = anticollision_uid = bytes.fromhex("04112233445566")
    commands = 0

    def power_up(self) -> None:
        pass

    def apdu(self, apdu: bytes) -> bytes:
        return b"\x90\x00" if apdu[:2] == b"\x00\xa4" else b"\x91\x1c"


def test_odd_cards_never_crash_the_reader() -> None:
    secure = SecureCards(ring(1))
    assert secure.present(DirectTransport(DfOnly()), DfOnly.uid) is None  # read by its UID
    sun = SecureCards(ring(1), ntag424_mode="sun")
    assert sun.present(DirectTransport(DfOnly()), DfOnly.uid) is None
    card = issued(Desfire, secure.desfire, ring(1))
    card.apdu = lambda apdu: b"\x91\x00" if apdu[1] == 0x5A else b"\x91\x1c"  # type: ignore
    _, proof = secure.present(DirectTransport(card), card.uid)  # type: ignore[misc]
    assert proof.proof is Proof.FAILED  # it has accessd's application: it claims to be ours
