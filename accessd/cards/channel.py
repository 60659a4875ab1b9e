"""Talking to an NXP AES card over ISO 14443-4: APDUs, status words, EV2 secure messaging.

NTAG 424 DNA and MIFARE DESFire EV2/EV3 share one command set wrapped in ISO 7816-4 APDUs
(CLA 0x90, INS = the native command, status 0x91 XX) and one secure-messaging scheme after
AuthenticateEV2First:

* every command/response pair in an authenticated session advances a 16-bit command counter
  (CmdCtr, little-endian), which both sides include in every MAC: a replayed or reordered
  frame fails;
* CommMode.MAC adds MACt(SesAuthMACKey, Cmd || CmdCtr || TI || header || data) to the command
  and MACt(SesAuthMACKey, status || CmdCtr+1 || TI || data) to the response;
* CommMode.Full encrypts the data (AES-CBC with SesAuthENCKey, IV = E(A5 5A || TI || CmdCtr ||
  0^8) for commands, E(5A A5 || TI || CmdCtr+1 || 0^8) for responses) and then MACs it.

The transport is anything with `exchange(apdu) -> response` (nfcpy's Type 4 tag in the
reader, a card model in tests); it raises `CardRemovedError` when the card stops answering.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from accessd.cards import crypto
from accessd.errors import CardAuthenticationError, CardError

# status codes of the 0x91 family (NTAG 424 DNA and DESFire EV2 datasheets)
OK = 0x00
ADDITIONAL_FRAME = 0xAF
STATUS_NAMES = {
    0x0C: "no changes", 0x0E: "out of EEPROM", 0x1C: "illegal command code",
    0x1E: "integrity error (CRC/MAC)", 0x40: "no such key", 0x7E: "length error",
    0x9D: "permission denied", 0x9E: "parameter error", 0xA0: "application not found",
    0xAE: "authentication error", 0xAF: "additional frame", 0xBE: "boundary error",
    0xCA: "command aborted", 0xDE: "duplicate", 0xEE: "memory error", 0xF0: "file not found",
}


class Transport(Protocol):
    def exchange(self, apdu: bytes) -> bytes: ...


def describe(status: int) -> str:
    sw1, sw2 = status >> 8, status & 0xFF
    if sw1 == 0x91:
        return f"0x{status:04X} ({STATUS_NAMES.get(sw2, 'unknown status')})"
    return f"0x{status:04X}"


def native(ins: int, data: bytes = b"") -> bytes:
    """A native command wrapped in an ISO 7816-4 APDU: 90 INS 00 00 [Lc data] 00."""
    if len(data) > 255:
        raise ValueError("command data longer than a short APDU")
    return bytes([0x90, ins, 0, 0]) + (bytes([len(data)]) + data if data else b"") + b"\x00"


def split(response: bytes) -> tuple[bytes, int]:
    if len(response) < 2:
        raise CardError(f"answer of {len(response)} bytes has no status word")
    return response[:-2], int.from_bytes(response[-2:], "big")


@dataclass
class Session:
    """The state of an EV2 authenticated session (host and card keep the same one)."""

    key_no: int
    enc_key: bytes
    mac_key: bytes
    ti: bytes
    counter: int = 0

    def _ctr(self, offset: int = 0) -> bytes:
        return ((self.counter + offset) & 0xFFFF).to_bytes(2, "little")

    def command_mac(self, ins: int, header: bytes, data: bytes) -> bytes:
        return crypto.mact(self.mac_key, bytes([ins]) + self._ctr() + self.ti + header + data)

    def response_mac(self, status: int, data: bytes) -> bytes:
        return crypto.mact(self.mac_key, bytes([status]) + self._ctr(1) + self.ti + data)

    def _iv(self, label: bytes, offset: int) -> bytes:
        return crypto.ecb_encrypt(self.enc_key, label + self.ti + self._ctr(offset) + bytes(8))

    def encrypt_command(self, data: bytes) -> bytes:
        return crypto.cbc_encrypt(self.enc_key, self._iv(b"\xa5\x5a", 0), crypto.pad(data))

    def decrypt_command(self, data: bytes) -> bytes:
        return crypto.unpad(crypto.cbc_decrypt(self.enc_key, self._iv(b"\xa5\x5a", 0), data))

    def encrypt_response(self, data: bytes) -> bytes:
        return crypto.cbc_encrypt(self.enc_key, self._iv(b"\x5a\xa5", 1), crypto.pad(data))

    def decrypt_response(self, data: bytes) -> bytes:
        return crypto.unpad(crypto.cbc_decrypt(self.enc_key, self._iv(b"\x5a\xa5", 1), data))

    def advance(self) -> None:
        self.counter = (self.counter + 1) & 0xFFFF


class Channel:
    """Commands to one card, plain or under the current EV2 session (host side)."""

    def __init__(self, transport: Transport,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.transport = transport
        self.random = random
        self.session: Session | None = None
        self.exchanges = 0

    # -- raw ---------------------------------------------------------------------------
    def exchange(self, apdu: bytes) -> tuple[bytes, int]:
        self.exchanges += 1
        return split(self.transport.exchange(apdu))

    def iso(self, apdu: bytes, *, accept: tuple[int, ...] = (0x9000,)) -> tuple[bytes, int]:
        """An ISO 7816-4 command (select, read binary); CardError unless its status is in
        `accept`. It ends any authenticated session on the card (ISO commands do)."""
        data, status = self.exchange(apdu)
        self.session = None
        if status not in accept:
            raise CardError(f"command {apdu[1]:02X} refused: {describe(status)}", status)
        return data, status

    def _native(self, ins: int, data: bytes) -> bytes:
        """One native command with its additional frames; the concatenated answer."""
        out, status = self.exchange(native(ins, data))
        while status == 0x91AF:
            more, status = self.exchange(native(ADDITIONAL_FRAME))
            out += more
        if status != 0x9100:
            self.session = None  # an error ends the card's authenticated state
            if status == 0x91AE:
                raise CardAuthenticationError(f"command {ins:02X}: {describe(status)}", status)
            raise CardError(f"command {ins:02X} refused: {describe(status)}", status)
        return out

    # -- the three communication modes ---------------------------------------------------
    def plain(self, ins: int, header: bytes = b"", data: bytes = b"") -> bytes:
        out = self._native(ins, header + data)
        if self.session is not None:
            self.session.advance()
        return out

    def mac(self, ins: int, header: bytes = b"", data: bytes = b"", *,
            mac_optional: bool = False) -> bytes:
        """CommMode.MAC (plain when not authenticated). `mac_optional`: the card may answer
        without a MAC because the command ended the session (changing the session's key)."""
        s = self.session
        if s is None:
            return self.plain(ins, header, data)
        out = self._native(ins, header + data + s.command_mac(ins, header, data))
        body = self._verified(s, out, mac_optional)
        s.advance()
        return body

    def full(self, ins: int, header: bytes = b"", data: bytes = b"", *,
             mac_optional: bool = False) -> bytes:
        """CommMode.Full: encrypted and MACed both ways; needs an authenticated session."""
        s = self.session
        if s is None:
            raise CardError(f"command {ins:02X} needs an authenticated session")
        enc = s.encrypt_command(data) if data else b""
        out = self._native(ins, header + enc + s.command_mac(ins, header, enc))
        body = self._verified(s, out, mac_optional)
        try:
            plain = s.decrypt_response(body) if body else b""
        except ValueError:
            self.session = None
            raise CardAuthenticationError(f"command {ins:02X}: response does not decrypt"
                                          ) from None
        s.advance()
        return plain

    def _verified(self, s: Session, out: bytes, mac_optional: bool) -> bytes:
        if mac_optional and not out:
            self.session = None  # the card ended the session (its key changed)
            return b""
        if len(out) < 8 or not _equal(out[-8:], s.response_mac(OK, out[:-8])):
            self.session = None
            raise CardAuthenticationError("response MAC does not verify")
        return out[:-8]

    # -- AuthenticateEV2First ------------------------------------------------------------
    def authenticate(self, key_no: int, key: bytes) -> Session:
        """Mutual AES authentication; the session that follows protects later commands."""
        self.session = None
        first, status = self.exchange(native(0x71, bytes([key_no, 0x00])))
        if status != 0x91AF or len(first) != 16:
            raise _auth_error(key_no, status, "first step")
        rnd_b = crypto.cbc_decrypt(key, crypto.ZERO_IV, first)
        rnd_a = self.random(16)
        token = crypto.cbc_encrypt(key, crypto.ZERO_IV, rnd_a + crypto.rotate_left(rnd_b))
        second, status = self.exchange(native(ADDITIONAL_FRAME, token))
        if status != 0x9100 or len(second) != 32:
            raise _auth_error(key_no, status, "second step")
        plain = crypto.cbc_decrypt(key, crypto.ZERO_IV, second)
        if not _equal(plain[4:20], crypto.rotate_left(rnd_a)):
            raise CardAuthenticationError(f"key {key_no}: the card did not prove the key")
        enc, mac = crypto.ev2_session_keys(key, rnd_a, rnd_b)
        self.session = Session(key_no, enc, mac, plain[0:4])
        return self.session


def _auth_error(key_no: int, status: int, step: str) -> CardError:
    if status == 0x91AE or ((status >> 8) == 0x91 and status & 0xFF in (0x1E, 0x40)):
        return CardAuthenticationError(f"key {key_no}: {step} refused: {describe(status)}",
                                       status)
    return CardError(f"key {key_no}: {step} refused: {describe(status)}", status)


def _equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
