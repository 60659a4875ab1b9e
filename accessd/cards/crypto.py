"""The NXP AES constructions used by NTAG 424 DNA and MIFARE DESFire EV2/EV3, in one place.

Pure functions over bytes, built on `cryptography`'s AES and CMAC. What NXP adds on top of the
standard primitives, and where it is published:

* MACt, the 8-byte MAC of secure messaging: the *odd-numbered* bytes (1, 3, ... 15) of the
  AES-CMAC (NTAG 424 DNA datasheet, AN12196 section 5).
* Padding: ISO/IEC 9797-1 method 2 (0x80 then zeros), always added to encrypted data.
* AuthenticateEV2First session keys: CMAC over SV1/SV2 mixing RndA and RndB (AN12196 6.6).
* SUN/SDM session keys: CMAC over SV1/SV2 = label || UID || SDMReadCtr (AN12196 3.3).
* AN10922 key diversification: CMAC over 0x01 || M, padded to 32 bytes (AN10922 2.2).
* The DESFire CRC32 of ChangeKey: IEEE 802.3 polynomial, initial value all ones, no final XOR.

Every function has a test against the published worked examples (tests/test_cards_crypto.py).
"""

from __future__ import annotations

import zlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

BLOCK = 16
ZERO_IV = bytes(BLOCK)
_RB = 0x87  # the CMAC constant for a 128-bit block (NIST SP 800-38B)


def _check_key(key: bytes) -> None:
    if len(key) != BLOCK:
        raise ValueError(f"an AES-128 key is 16 bytes, got {len(key)}")


def _aes(key: bytes, mode: modes.Mode, data: bytes, encrypt: bool) -> bytes:
    _check_key(key)
    if len(data) % BLOCK:
        raise ValueError("AES data must be a whole number of blocks")
    cipher = Cipher(algorithms.AES(key), mode)
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


def ecb_encrypt(key: bytes, data: bytes) -> bytes:
    return _aes(key, modes.ECB(), data, True)


def ecb_decrypt(key: bytes, data: bytes) -> bytes:
    return _aes(key, modes.ECB(), data, False)


def cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    return _aes(key, modes.CBC(iv), data, True)


def cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    return _aes(key, modes.CBC(iv), data, False)


def cmac(key: bytes, data: bytes) -> bytes:
    """AES-CMAC (RFC 4493), 16 bytes."""
    _check_key(key)
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def truncate(full_mac: bytes) -> bytes:
    """NXP's MACt: the bytes at odd positions (S14, S12, ... S0 in the datasheet's notation)."""
    return full_mac[1::2]


def mact(key: bytes, data: bytes) -> bytes:
    return truncate(cmac(key, data))


def pad(data: bytes) -> bytes:
    """ISO/IEC 9797-1 method 2: 0x80 then zeros up to the next block, always at least one byte."""
    fill = BLOCK - len(data) % BLOCK
    return data + b"\x80" + bytes(fill - 1)


def unpad(data: bytes) -> bytes:
    """Undo `pad`; ValueError when the padding is not there (a wrong key looks like this)."""
    end = data.rstrip(b"\x00")
    if not end or end[-1] != 0x80 or len(data) - len(end) >= BLOCK:
        raise ValueError("bad padding")
    return end[:-1]


def rotate_left(data: bytes) -> bytes:
    return data[1:] + data[:1]


def crc32(data: bytes) -> bytes:
    """DESFire CRC32 (JAMCRC), little-endian: ChangeKey's check of a new key."""
    return ((zlib.crc32(data) ^ 0xFFFFFFFF) & 0xFFFFFFFF).to_bytes(4, "little")


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


# -- AuthenticateEV2First ------------------------------------------------------------------


def _session_vector(label: bytes, rnd_a: bytes, rnd_b: bytes) -> bytes:
    """SV = label || 00 01 00 80 || RndA[15..14] || (RndA[13..8] ^ RndB[15..10]) || RndB[9..0]
    || RndA[7..0], with NXP's byte numbering (byte 15 is the first one sent)."""
    return (label + b"\x00\x01\x00\x80" + rnd_a[0:2] + xor(rnd_a[2:8], rnd_b[0:6])
            + rnd_b[6:16] + rnd_a[8:16])


def ev2_session_keys(key: bytes, rnd_a: bytes, rnd_b: bytes) -> tuple[bytes, bytes]:
    """(SesAuthENCKey, SesAuthMACKey) of an AuthenticateEV2First with `key`."""
    if len(rnd_a) != BLOCK or len(rnd_b) != BLOCK:
        raise ValueError("RndA and RndB are 16 bytes")
    return (cmac(key, _session_vector(b"\xa5\x5a", rnd_a, rnd_b)),
            cmac(key, _session_vector(b"\x5a\xa5", rnd_a, rnd_b)))


# -- Secure Dynamic Messaging (SUN) --------------------------------------------------------


def sdm_session_keys(file_read_key: bytes, uid: bytes, read_counter: int
                     ) -> tuple[bytes, bytes]:
    """(SesSDMFileReadENCKey, SesSDMFileReadMACKey) for one SUN message (UID and counter
    mirrored, AES mode)."""
    tail = uid + read_counter.to_bytes(3, "little")
    return (cmac(file_read_key, b"\xc3\x3c\x00\x01\x00\x80" + tail),
            cmac(file_read_key, b"\x3c\xc3\x00\x01\x00\x80" + tail))


# -- AN10922 key diversification ------------------------------------------------------------


def _shift_left(block: bytes) -> bytes:
    n = (int.from_bytes(block, "big") << 1) & ((1 << 128) - 1)
    if block[0] & 0x80:
        n ^= _RB
    return n.to_bytes(BLOCK, "big")


def diversify(master_key: bytes, diversification_input: bytes) -> bytes:
    """AES-128 key diversification of AN10922 (section 2.2): a per-card key from a master key.

    D = 0x01 || M, padded to 32 bytes with 0x80 00..; the last block is XORed with the CMAC
    subkey K2 when padded, K1 when M filled it; the CBC-MAC of D is the new key. For M of 16 to
    31 bytes this equals a plain CMAC; for shorter M the 32-byte padding makes it differ.
    """
    if not 1 <= len(diversification_input) <= 31:
        raise ValueError("the diversification input M is 1 to 31 bytes")
    k1 = _shift_left(ecb_encrypt(master_key, ZERO_IV))
    k2 = _shift_left(k1)
    d = b"\x01" + diversification_input
    if len(d) < 2 * BLOCK:
        d = d + b"\x80" + bytes(2 * BLOCK - len(d) - 1)
        last = xor(d[BLOCK:], k2)
    else:
        last = xor(d[BLOCK:], k1)
    return cbc_encrypt(master_key, ZERO_IV, d[:BLOCK] + last)[BLOCK:]
