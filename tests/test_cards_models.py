"""The software cards answer as the datasheets say: status words, counters, access rights.

These are the fakes every other card test stands on, so they are tested on their own: a model
that accepted a wrong MAC or a wrong key would make every authentication test worthless.
"""

from __future__ import annotations

import pytest

from accessd.cards import crypto
from accessd.cards.channel import Channel, native
from accessd.cards.testing import Desfire, DirectTransport, Ntag424
from accessd.errors import CardAuthenticationError, CardError

SELECT_NTAG = bytes.fromhex("00A4040C07D276000085010100")


def ntag() -> tuple[Ntag424, Channel]:
    card = Ntag424()
    ch = Channel(DirectTransport(card))
    assert ch.exchange(SELECT_NTAG)[1] == 0x9000
    return card, ch


def test_factory_state_of_the_ntag() -> None:
    card, ch = ntag()
    assert [ch.mac(0x64, bytes([n]))[0] for n in range(5)] == [0] * 5
    assert card.app.files[3].read == 2 and card.app.files[3].comm == 0x03


def test_native_commands_need_the_application_selected() -> None:
    card = Ntag424()
    assert card.apdu(native(0x64, b"\x00")) == b"\x91\x1c"


def test_wrong_key_is_authentication_error_91ae() -> None:
    _, ch = ntag()
    with pytest.raises(CardAuthenticationError) as err:
        ch.authenticate(0, bytes.fromhex("00" * 15 + "01"))
    assert err.value.status == 0x91AE


def test_auth_with_no_such_key_is_9140() -> None:
    _, ch = ntag()
    with pytest.raises(CardAuthenticationError) as err:
        ch.authenticate(7, bytes(16))
    assert err.value.status == 0x9140


def test_length_error_917e() -> None:
    card, _ = ntag()
    assert card.apdu(native(0x71, b"\x00")) == b"\x91\x7e"  # KeyNo without LenCap
    card.apdu(native(0x71, b"\x00\x00"))
    assert card.apdu(native(0xAF, bytes(31))) == b"\x91\x7e"  # half a token


def test_additional_frame_without_a_pending_step_is_aborted() -> None:
    card, _ = ntag()
    assert card.apdu(native(0xAF, bytes(32))) == b"\x91\xca"


def test_tampered_command_mac_is_integrity_error_and_ends_the_session() -> None:
    card, ch = ntag()
    session = ch.authenticate(0, bytes(16))
    mac = bytearray(session.command_mac(0x64, b"\x00", b""))
    mac[0] ^= 1
    assert card.apdu(native(0x64, b"\x00" + bytes(mac))) == b"\x91\x1e"
    assert card.app.session is None


def test_replayed_command_fails_because_of_the_counter() -> None:
    card, ch = ntag()
    ch.authenticate(0, bytes(16))
    transport = ch.transport
    assert isinstance(transport, DirectTransport)
    ch.mac(0x64, b"\x01")
    replay = transport.sent[-1]
    assert card.apdu(replay) == b"\x91\x1e"  # CmdCtr moved on: the old MAC no longer fits


def test_command_counter_advances_on_both_sides() -> None:
    card, ch = ntag()
    ch.authenticate(0, bytes(16))
    for n in range(1, 6):
        ch.mac(0x64, b"\x02")
        assert ch.session is not None and card.app.session is not None
        assert ch.session.counter == card.app.session.counter == n


def test_file_access_rights() -> None:
    card, ch = ntag()
    # file 3 is read with key 2 (factory): not free, not key 0
    assert card.apdu(native(0xAD, bytes([3, 0, 0, 0, 16, 0, 0]))) == b"\x91\x9d"
    ch.authenticate(2, bytes(16))
    assert ch.full(0xAD, bytes([3, 0, 0, 0, 16, 0, 0])) == bytes(16)
    with pytest.raises(CardError) as err:
        ch.full(0x8D, bytes([3, 0, 0, 0, 4, 0, 0]), b"abcd")  # write needs key 3
    assert err.value.status == 0x919D


def test_boundary_error() -> None:
    _, ch = ntag()
    ch.authenticate(2, bytes(16))
    with pytest.raises(CardError) as err:
        ch.full(0xAD, bytes([3, 120, 0, 0, 16, 0, 0]))
    assert err.value.status == 0x91BE


def test_change_key_checks_the_crc_of_the_new_key() -> None:
    card, ch = ntag()
    ch.authenticate(0, bytes(16))
    new = bytes(range(16))
    bad = crypto.xor(new, bytes(16)) + b"\x01" + b"\x00\x00\x00\x00"
    with pytest.raises(CardError) as err:
        ch.full(0xC4, b"\x02", bad)
    assert err.value.status == 0x911E
    ch.authenticate(0, bytes(16))
    ch.full(0xC4, b"\x02", crypto.xor(new, bytes(16)) + b"\x01" + crypto.crc32(new))
    assert (card.app.keys[2].value, card.app.keys[2].version) == (new, 1)


def test_changing_the_session_key_ends_the_session_without_a_mac() -> None:
    card, ch = ntag()
    ch.authenticate(0, bytes(16))
    ch.full(0xC4, b"\x00", bytes(range(16)) + b"\x05", mac_optional=True)
    assert ch.session is None and card.app.session is None
    assert card.app.keys[0].version == 5
    ch.authenticate(0, bytes(range(16)))


def test_get_card_uid_needs_authentication() -> None:
    card, ch = ntag()
    assert card.apdu(native(0x51)) == b"\x91\x9d"
    ch.authenticate(3, bytes(16))
    assert ch.full(0x51) == card.uid


def test_random_id_changes_at_each_power_up_but_not_the_uid() -> None:
    card = Ntag424(random_uid=True)
    first = card.anticollision_uid
    card.power_up()
    assert first[0] == 0x08 and len(first) == 4 and card.anticollision_uid != first
    assert len(card.uid) == 7


def test_sdm_read_counter_increases_once_per_activation() -> None:
    from accessd.cards.ntag424 import Ntag424Profile
    from accessd.cards.sun import parse_url, uri_from_ndef, verify

    profile = Ntag424Profile()
    card, ch = ntag()
    ch.authenticate(0, bytes(16))
    ch.plain(0x8D, bytes([2, 0, 0, 0]) + len(profile.sun.data).to_bytes(3, "little"),
             profile.sun.data)
    ch.full(0x5F, b"\x02", profile.sdm_settings())

    def read() -> bytes:
        ch.iso(bytes.fromhex("00A4000C02E10400"))
        return ch.iso(bytes.fromhex("00B0000000"))[0]

    def counter(data: bytes) -> int:
        message = parse_url(uri_from_ndef(data) or "")
        result = verify(message, bytes(16), lambda uid: bytes(16))
        assert result is not None and result.mac_valid
        return result.counter

    card.power_up()
    ch.iso(SELECT_NTAG)
    first, again = read(), read()
    assert counter(first) == counter(again) == card.sdm_read_counter == 1
    assert first != again  # the PICC data is padded with fresh random bytes
    card.power_up()
    ch.iso(SELECT_NTAG)
    assert counter(read()) == card.sdm_read_counter == 2


def test_sdm_settings_outside_the_model_are_refused() -> None:
    _, ch = ntag()
    ch.authenticate(0, bytes(16))
    plain_mirror = bytes([0x40, 0x00, 0xE0, 0xC1, 0xFF, 0xEF]) + bytes(6)  # meta read free
    with pytest.raises(CardError) as err:
        ch.full(0x5F, b"\x02", plain_mirror)
    assert err.value.status == 0x919E


def test_desfire_application_lifecycle_and_errors() -> None:
    card = Desfire()
    ch = Channel(DirectTransport(card))
    aid = bytes.fromhex("CDA0F5")
    assert ch.exchange(native(0x5A, aid))[1] == 0x91A0  # application not found
    assert ch.exchange(native(0x5A, bytes(3)))[1] == 0x9100
    assert ch.exchange(native(0x71, b"\x00\x00"))[1] == 0x91AE  # PICC key is not AES
    assert ch.exchange(native(0xCA, aid + b"\x0b\x83"))[1] == 0x9100
    assert ch.exchange(native(0xCA, aid + b"\x0b\x83"))[1] == 0x91DE  # duplicate
    assert ch.exchange(native(0xCA, aid + b"\x0b\x03"))[1] == 0x919E  # DES keys: not modelled
    assert ch.exchange(native(0x5A, aid))[1] == 0x9100
    assert ch.exchange(native(0xCD, bytes([1, 3, 0, 0x20, 32, 0, 0])))[1] == 0x919D
    ch.authenticate(0, bytes(16))
    ch.mac(0xCD, bytes([1, 3, 0, 0x20, 32, 0, 0]))
    assert card.apps[aid].files[1].read == 2
    ch.mac(0xDA, aid, mac_optional=True)
    assert aid not in card.apps and card.selected == bytes(3)
