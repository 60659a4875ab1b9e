"""The NXP constructions against the worked examples NXP published (no value computed here).

Sources, as quoted by public implementations that test against them (the PDFs were read in
excerpt only, so each vector names the table and the implementation it was cross-checked in):

- AN12196 rev. 1.8 (NTAG 424 DNA features and hints): 6.6 and 6.10, AuthenticateEV2First with
  keys 0 and 3 (lucianox777/nfc-ev2-crypto test_ev2.py); 5.3 CommMode.MAC, 5.4/6.12
  CommMode.Full WriteData, 7.3 GetCardUID (same file); Table 26 ChangeKey of key 0
  (drusifer/ntag424_sdm_provisioner tests); 3.3 Table 1 SDM session keys, 3.4.2.1 Table 2
  PICCData, 3.4.4.2.1 Table 4 SUN MAC, Table 5 SUN MAC over mirrored file data
  (nfc-developer/sdm-backend tests test_sun1/test_sun2, and several SDM verifiers).
- AN10922 section 2.2.1: AES-128 diversification (libfreefare test_mifare_key_deriver.c).
- RFC 4493 example 2 for the underlying AES-CMAC.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accessd.cards import crypto, sun
from accessd.cards.channel import Channel, Session

h = bytes.fromhex


class Script:
    """A transport that answers published responses and records what the host sent."""

    def __init__(self, *answers: str) -> None:
        self.answers = [h(a) for a in answers]
        self.sent: list[bytes] = []

    def exchange(self, apdu: bytes) -> bytes:
        self.sent.append(bytes(apdu))
        return self.answers.pop(0)


def test_rfc4493_cmac() -> None:
    assert crypto.cmac(h("2b7e151628aed2a6abf7158809cf4f3c"),
                       h("6bc1bee22e409f96e93d7e117393172a")) == h(
        "070a16b46b4d4144f79bdd9dd04a287c")


def test_an10922_aes128_diversification() -> None:
    master = h("00112233445566778899AABBCCDDEEFF")
    m = h("04782E21801D80") + h("3042F5") + b"NXP Abu"  # UID || AID || system identifier
    assert crypto.diversify(master, m) == h("A8DD63A3B89D54B37CA802473FDA9175")


def test_diversification_pads_short_inputs_to_32_bytes() -> None:
    """AN10922 pads D to two blocks: for M of 15 bytes or less it is not a plain CMAC, for 16
    to 31 bytes it is (the last block then needs K2 padding in both)."""
    key = h("00112233445566778899AABBCCDDEEFF")
    assert crypto.diversify(key, bytes(12)) != crypto.cmac(key, b"\x01" + bytes(12))
    for n in (16, 20, 30, 31):
        assert crypto.diversify(key, bytes(n)) == crypto.cmac(key, b"\x01" + bytes(n))
    with pytest.raises(ValueError):
        crypto.diversify(key, bytes(32))


def test_authenticate_ev2_first_key0() -> None:
    """AN12196 6.6: the APDUs, the TI and both session keys."""
    t = Script("A04C124213C186F22399D33AC2A3021591AF",
               "3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F081206639100")
    ch = Channel(t, random=lambda n: h("13C5DB8A5930439FC3DEF9A4C675360F"))
    s = ch.authenticate(0, bytes(16))
    assert t.sent[0] == h("9071000002000000")
    assert t.sent[1] == h("90AF00002035C3E05A752E0144BAC0DE51C1F22C56B34408A23D8AEA266CAB947EA8"
                          "E0118D00")
    assert s.ti == h("9D00C4DF") and s.counter == 0
    assert s.enc_key == h("1309C877509E5A215007FF0ED19CA564")
    assert s.mac_key == h("4C6626F5E72EA694202139295C7A7FC7")


def test_authenticate_ev2_first_key3() -> None:
    """AN12196 6.10."""
    t = Script("B875CEB0E66A6C5CD00898DC371F92D191AF",
               "0CC9A8094A8EEA683ECAAC5C7BF20584206D0608D477110FC6B3D5D3F65C3A6A9100")
    ch = Channel(t, random=lambda n: h("B98F4C50CF1C2E084FD150E33992B048"))
    s = ch.authenticate(0, bytes(16))
    assert t.sent[1] == h("90AF000020FF0306E47DFBC50087C4D8A78E88E62DE1E8BE457AA477C707E2F087"
                          "4916A8B100")
    assert (s.ti, s.enc_key, s.mac_key) == (h("7614281A"), h("7A93D6571E4B180FCA6AC90C9A7488D4"),
                                            h("FC4AF159B62E549B5812394CAB1918CC"))


def test_a_card_that_does_not_prove_the_key_is_refused() -> None:
    from accessd.errors import CardAuthenticationError

    t = Script("A04C124213C186F22399D33AC2A3021591AF",
               "3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F081206649100")
    ch = Channel(t, random=lambda n: h("13C5DB8A5930439FC3DEF9A4C675360F"))
    with pytest.raises(CardAuthenticationError):
        ch.authenticate(0, bytes(16))
    assert ch.session is None


def test_mact_and_commmode_mac() -> None:
    """AN12196 5.3: GetFileSettings in CommMode.MAC, command and response."""
    assert crypto.mact(h("8248134A386E86EB7FAF54A52E536CB6"), h("F500007A21085E02")) == h(
        "6597A457C8CD442C")
    t = Script("0040EEEE000100D1FE001F00004400004400002000006A00002A474282E7A479869100")
    ch = Channel(t)
    ch.session = Session(0, bytes(16), h("8248134A386E86EB7FAF54A52E536CB6"), h("7A21085E"))
    assert ch.mac(0xF5, h("02")) == h("0040EEEE000100D1FE001F00004400004400002000006A0000")
    assert t.sent == [h("90F5000009026597A457C8CD442C00")]
    assert ch.session.counter == 1


def test_commmode_full_write_of_a_whole_number_of_blocks() -> None:
    """AN12196 5.4: WriteData of 128 bytes gets a whole extra padding block."""
    plain_apdu = h(  # the same command in CommMode.Plain, as the note prints it
        "908D000087020000008000000051D1014D550463686F6F73652E75726C2E636F"
        "6D2F6E7461673432343F653D3030303030303030303030303030303030303030"
        "30303030303030303030303026633D3030303030303030303030303030303000"
        "0000000000000000000000000000000000000000000000000000000000000000"
        "00000000000000000000000000")
    data = plain_apdu[12:-1]
    assert len(data) == 128
    t = Script("FC222E5F7A5424529100")
    ch = Channel(t)
    ch.session = Session(0, h("1309C877509E5A215007FF0ED19CA564"),
                         h("4C6626F5E72EA694202139295C7A7FC7"), h("9D00C4DF"))
    ch.full(0x8D, h("02000000800000"), data)
    assert t.sent[0] == h(
        "908D00009F02000000800000421C73A27D827658AF481FDFF20A5025B559D0E3AA21E58D347F343CFFC7"
        "68BFE596C706BC00F2176781D4B0242642A0FF5A42C461AAF894D9A1284B8C76BCFA658ACD40555D362E"
        "08DB15CF421B51283F9064BCBE20E96CAE545B407C9D651A3315B27373772E5DA2367D2064AE054AF996"
        "C6F1F669170FA88CE8C4E3A4A7BBBEF0FD971FF532C3A802AF745660F2B4D1D9A8499661EBF300")


def test_commmode_full_write_after_authentication_with_key3() -> None:
    """AN12196 6.12."""
    t = Script("C26D236E4A7C046D9100")
    ch = Channel(t)
    ch.session = Session(3, h("7A93D6571E4B180FCA6AC90C9A7488D4"),
                         h("FC4AF159B62E549B5812394CAB1918CC"), h("7614281A"))
    ch.full(0x8D, h("030000000A0000"), h("0102030405060708090A"))
    assert t.sent == [h("908D00001F030000000A00006B5E6804909962FC4E3FF5522CF0F8436C0C53315B9C"
                        "73AA00")]


def test_get_card_uid_response_decrypts() -> None:
    """AN12196 7.3: GetCardUID in CommMode.Full (the UID ends with 0x80, like padding)."""
    t = Script("70756055688505B52A5E26E59E329CD6595F672298EA41B79100")
    ch = Channel(t)
    ch.session = Session(0, h("2B4D963C014DC36F24F69A50A394F875"),
                         h("379D32130CE61705DD5FD8C36B95D764"), h("DF055522"))
    assert ch.full(0x51) == h("04958CAA5C5E80")
    assert t.sent == [h("90510000088E2C155ADDA99BE300")]


def test_a_tampered_response_mac_ends_the_session() -> None:
    from accessd.errors import CardAuthenticationError

    t = Script("70756055688505B52A5E26E59E329CD6595F672298EA41B89100")
    ch = Channel(t)
    ch.session = Session(0, h("2B4D963C014DC36F24F69A50A394F875"),
                         h("379D32130CE61705DD5FD8C36B95D764"), h("DF055522"))
    with pytest.raises(CardAuthenticationError):
        ch.full(0x51)
    assert ch.session is None


def test_change_key_of_the_authenticated_key() -> None:
    """AN12196 Table 26: ChangeKey of key 0 at CmdCtr 3; the card ends the session."""
    t = Script("9100")
    ch = Channel(t)
    ch.session = Session(0, h("4CF3CB41A22583A61E89B158D252FC53"),
                         h("5529860B2FC5FB6154B7F28361D30BF9"), h("7614281A"), counter=3)
    ch.full(0xC4, b"\x00", h("5004BF991F408672B1EF00F08F9E8647") + b"\x01", mac_optional=True)
    assert t.sent == [h("90C400002900C0EB4DEEFEDDF0B513A03A95A75491818580503190D4D05053FF7566"
                        "8A01D6FDA6610234BDED643200")]
    assert ch.session is None


def test_sdm_session_keys() -> None:
    """AN12196 Table 1."""
    enc, mac = crypto.sdm_session_keys(h("5ACE7E50AB65D5D51FD5BF5A16B8205B"),
                                       h("04C767F2066180"), 1)
    assert enc == h("66DA61797E23DECA5D8ECA13BBADF7A9")
    assert mac == h("3A3E8110E05311F7A3FCF0D969BF2B48")


def test_sun_message_of_the_issue() -> None:
    """AN12196 Tables 2 and 4: all-zero keys, e and c only (empty MAC input)."""
    message = sun.parse_url("https://ntag.nxp.com/424?e=EF963FF7828658A599F3041510671E88"
                            "&c=94EED9EE65337086")
    assert crypto.cbc_decrypt(bytes(16), crypto.ZERO_IV, message.picc) == h(
        "C704DE5F1EACC0403D0000DA5CF60941")
    _, mac_key = crypto.sdm_session_keys(bytes(16), h("04DE5F1EACC040"), 61)
    assert mac_key == h("3FB5F6E3A807A03D5E3570ACE393776F")
    result = sun.verify(message, bytes(16), lambda uid: bytes(16))
    assert result == sun.SunResult(h("04DE5F1EACC040"), 61, True)


def test_sun_message_with_mirrored_file_data() -> None:
    """AN12196 page 18 / Table 5: the MAC covers "<enc>&cmac="."""
    message = sun.parse_url("https://www.my424dna.com/?picc_data=FD91EC264309878BE6345CBE53BADF40"
                            "&enc=CEE9A53E3E463EF1F459635736738962&cmac=ECC1E7F6C6C73BF6")
    assert message.mac_input == b"CEE9A53E3E463EF1F459635736738962&cmac="
    _, mac_key = crypto.sdm_session_keys(bytes(16), h("04958CAA5C5E80"), 8)
    assert mac_key == h("3ED0920E5E6A0320D823D5987FEAFBB1")
    assert sun.verify(message, bytes(16), lambda uid: bytes(16)) == sun.SunResult(
        h("04958CAA5C5E80"), 8, True)


@pytest.mark.parametrize("url", [
    "https://x/?e=EF963FF7828658A599F3041510671E88&c=94EED9EE65337087",  # MAC altered
    "https://x/?e=EF963FF7828658A599F3041510671E88&c=94EED9EE65337086&x=1&e=00",
])
def test_altered_sun_messages_are_not_valid(url: str) -> None:
    from accessd.errors import SunMessageError

    try:
        result = sun.verify(sun.parse_url(url), bytes(16), lambda uid: bytes(16))
    except SunMessageError:
        return
    assert result is not None and not result.mac_valid


@given(st.binary(max_size=64))
def test_padding_round_trips(data: bytes) -> None:
    padded = crypto.pad(data)
    assert len(padded) % 16 == 0 and len(padded) > len(data)
    assert crypto.unpad(padded) == data


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_session_vectors_differ_only_by_label(a: bytes, b: bytes) -> None:
    enc, mac = crypto.ev2_session_keys(bytes(16), a, b)
    assert enc != mac
