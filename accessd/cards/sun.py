"""SUN messages of NTAG 424 DNA (Secure Dynamic Messaging): decode, verify, and the NDEF file.

At each unauthenticated read of its NDEF file, an NTAG 424 DNA configured for SDM writes two
fields into the URL it carries (AN12196 section 3):

* `e`: 16 bytes, AES-CBC (zero IV) under the SDM meta-read key of
  PICCDataTag (0xC7: UID and counter mirrored, 7-byte UID) || UID || SDMReadCtr (3 bytes, LSB
  first) || 5 random bytes;
* `c`: MACt(SesSDMFileReadMACKey, the URL text from SDMMACInputOffset up to the MAC), the
  session key being CMAC(SDM file-read key, 3C C3 00 01 00 80 || UID || SDMReadCtr).

The read counter increases at every read, so a message seen once must never be accepted
again: the door keeps the highest counter per card (accessd/store/cards.py).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from accessd.cards import crypto
from accessd.errors import SunMessageError

PICC_TAG_AES_UID7 = 0xC7
E_PARAMS, C_PARAMS, ENC_PARAMS = ("e", "picc_data"), ("c", "cmac"), ("enc", "m")
URI_PREFIXES = {0x00: "", 0x01: "http://www.", 0x02: "https://www.", 0x03: "http://",
                0x04: "https://"}


@dataclass(frozen=True)
class SunMessage:
    picc: bytes  # the encrypted PICC data (e)
    mac: bytes  # the truncated MAC (c)
    mac_input: bytes  # what the MAC covers


@dataclass(frozen=True)
class SunResult:
    uid: bytes
    counter: int
    mac_valid: bool


def _hex(value: str, size: int, name: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise SunMessageError(f"parameter {name} is not hexadecimal") from None
    if len(raw) != size:
        raise SunMessageError(f"parameter {name} must be {size} bytes ({2 * size} hex digits), "
                              f"got {len(raw)}")
    return raw


def parse_url(url: str) -> SunMessage:
    """The SUN fields of a URL (`e`/`c`, or `picc_data`/`cmac`; `enc`/`m` when file data is
    mirrored too). The MAC input is the text from the start of the `enc` value to the start
    of the MAC value, or nothing when only `e` and `c` are there (AN12196's layouts)."""
    query = urlsplit(url.strip()).query
    params = parse_qs(query, keep_blank_values=True)

    def one(names: tuple[str, ...]) -> tuple[str, str] | None:
        for name in names:
            values = params.get(name)
            if values:
                if len(values) > 1:
                    raise SunMessageError(f"parameter {name} appears more than once")
                return name, values[0]
        return None

    e, c, enc = one(E_PARAMS), one(C_PARAMS), one(ENC_PARAMS)
    if e is None or c is None:
        raise SunMessageError("the URL has no SUN parameters (e= and c=, or picc_data= and "
                              "cmac=)")
    mac_input = b""
    if enc is not None:
        start = query.find(f"{enc[0]}={enc[1]}") + len(enc[0]) + 1
        end = query.find(f"{c[0]}={c[1]}") + len(c[0]) + 1
        if not 0 < start <= end:
            raise SunMessageError(f"parameter {enc[0]} must come before {c[0]}")
        mac_input = query[start:end].encode("ascii")
    return SunMessage(_hex(e[1], 16, e[0]), _hex(c[1], 8, c[0]), mac_input)


def decrypt_picc(meta_key: bytes, picc: bytes) -> tuple[bytes, int] | None:
    """(UID, read counter), or None when the data does not decrypt to an AES PICC record with
    UID and counter (the wrong key, or another configuration)."""
    plain = crypto.cbc_decrypt(meta_key, crypto.ZERO_IV, picc)
    if plain[0] != PICC_TAG_AES_UID7:
        return None
    return plain[1:8], int.from_bytes(plain[8:11], "little")


def verify(message: SunMessage, meta_key: bytes,
           file_key: Callable[[bytes], bytes]) -> SunResult | None:
    """Decrypt with `meta_key`, then check the MAC with `file_key(uid)`. None when the PICC
    data is not readable with `meta_key`."""
    decoded = decrypt_picc(meta_key, message.picc)
    if decoded is None:
        return None
    uid, counter = decoded
    _, mac_key = crypto.sdm_session_keys(file_key(uid), uid, counter)
    expected = crypto.mact(mac_key, message.mac_input)
    return SunResult(uid, counter, hmac.compare_digest(expected, message.mac))


# -- the NDEF file that carries the message --------------------------------------------------


@dataclass(frozen=True)
class SunTemplate:
    """The NDEF file content accessd writes, and where the card mirrors e and c."""

    data: bytes
    picc_offset: int
    mac_offset: int


def template(base_url: str) -> SunTemplate:
    """An NDEF file (NLEN + one short URI record) for `base_url?e=<32 zeros>&c=<16 zeros>`."""
    sep = "&" if "?" in base_url else "?"
    url = f"{base_url}{sep}e={'0' * 32}&c={'0' * 16}"
    code = next((c for c, p in sorted(URI_PREFIXES.items(), key=lambda i: -len(i[1]))
                 if p and url.startswith(p)), 0x00)
    payload = bytes([code]) + url[len(URI_PREFIXES[code]):].encode("ascii")
    if len(payload) > 200:
        raise SunMessageError("the SUN URL is too long for the NDEF file")
    record = bytes([0xD1, 0x01, len(payload)]) + b"U" + payload
    data = len(record).to_bytes(2, "big") + record
    head = 2 + 4 + 1  # NLEN, record header (4 bytes), prefix code
    rest = url[len(URI_PREFIXES[code]):]
    picc = head + rest.index("e=") + 2
    mac = head + rest.index("&c=") + 3
    return SunTemplate(data, picc, mac)


def uri_from_ndef(data: bytes) -> str | None:
    """The URI of the first record of an NDEF file, or None when there is none."""
    if len(data) < 7:
        return None
    nlen = int.from_bytes(data[:2], "big")
    record = data[2:2 + nlen]
    if len(record) < 5 or record[0] & 0x1F != 0x11 or record[1] != 1 or record[3:4] != b"U":
        return None  # not a short well-known record of type U
    payload = record[4:4 + record[2]]
    if not payload or payload[0] not in URI_PREFIXES:
        return None
    try:
        return URI_PREFIXES[payload[0]] + payload[1:].decode("ascii")
    except UnicodeDecodeError:
        return None
