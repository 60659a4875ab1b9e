"""The card side shared by the NTAG 424 DNA and DESFire EV2 models: keys, files, EV2 sessions.

A model answers APDUs the way the datasheets describe, for every command accessd sends:
authentication (with its error codes), the command counter and MACs of secure messaging,
access rights per file and per key, and the usual status words (0x917E length, 0x919D
permission denied, 0x91AE authentication error, 0x911E integrity error...). An error ends the
authenticated state, as on the real chips. Settings accessd never uses are refused with
PARAMETER_ERROR, so a host change that starts needing them fails loudly in the tests instead
of passing against a model that only pretends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from accessd.cards import crypto
from accessd.cards.channel import Session
from accessd.errors import CardStatusAnswer as CardStatus

FREE, NEVER = 0xE, 0xF  # access condition nibbles: free access, no access
PLAIN, MAC, FULL = 0x00, 0x01, 0x03  # CommMode of a file

# status words (SW2 of 0x91xx)
OK, MORE = 0x00, 0xAF
ILLEGAL_COMMAND, INTEGRITY, NO_SUCH_KEY, LENGTH = 0x1C, 0x1E, 0x40, 0x7E
PERMISSION, PARAMETER, APP_NOT_FOUND, AUTH_ERROR = 0x9D, 0x9E, 0xA0, 0xAE
BOUNDARY, ABORTED, DUPLICATE, FILE_NOT_FOUND = 0xBE, 0xCA, 0xDE, 0xF0


@dataclass
class Key:
    value: bytes = bytes(16)
    version: int = 0


@dataclass
class DataFile:
    """A standard data file: contents, CommMode and the four access conditions."""

    size: int
    comm: int = PLAIN
    read: int = FREE
    write: int = FREE
    read_write: int = FREE
    change: int = 0
    data: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        if not self.data:
            self.data = bytearray(self.size)

    def access_bytes(self) -> bytes:
        return bytes([(self.read_write << 4) | self.change, (self.read << 4) | self.write])

    def set_access(self, raw: bytes) -> None:
        self.read_write, self.change = raw[0] >> 4, raw[0] & 0xF
        self.read, self.write = raw[1] >> 4, raw[1] & 0xF


def u24(raw: bytes) -> int:
    return int.from_bytes(raw[:3], "little")


class Application:
    """Keys, files and the EV2 session of one application (the NTAG's only one, or a
    DESFire AID)."""

    def __init__(self, keys: int, random: Callable[[int], bytes]) -> None:
        self.keys = [Key() for _ in range(keys)]
        self.files: dict[int, DataFile] = {}
        self.random = random
        self.session: Session | None = None
        self._pending: tuple[int, bytes] | None = None  # (key no, RndB) between auth steps

    def reset(self) -> None:
        self.session = None
        self._pending = None

    # -- AuthenticateEV2First -----------------------------------------------------------------
    def auth_first(self, data: bytes) -> tuple[bytes, int]:
        self.reset()
        if len(data) < 2:
            raise CardStatus(LENGTH)
        key_no = data[0]
        if key_no >= len(self.keys):
            raise CardStatus(NO_SUCH_KEY)
        rnd_b = self.random(16)
        self._pending = (key_no, rnd_b)
        return crypto.cbc_encrypt(self.keys[key_no].value, crypto.ZERO_IV, rnd_b), MORE

    def auth_second(self, data: bytes) -> tuple[bytes, int]:
        pending, self._pending = self._pending, None
        if pending is None:
            raise CardStatus(ABORTED)
        if len(data) != 32:
            raise CardStatus(LENGTH)
        key_no, rnd_b = pending
        key = self.keys[key_no].value
        plain = crypto.cbc_decrypt(key, crypto.ZERO_IV, data)
        rnd_a, rnd_b_rotated = plain[:16], plain[16:]
        if rnd_b_rotated != crypto.rotate_left(rnd_b):
            raise CardStatus(AUTH_ERROR)
        ti = self.random(4)
        enc, mac = crypto.ev2_session_keys(key, rnd_a, rnd_b)
        self.session = Session(key_no, enc, mac, ti)
        answer = ti + crypto.rotate_left(rnd_a) + bytes(6) + bytes(6)
        return crypto.cbc_encrypt(key, crypto.ZERO_IV, answer), OK

    # -- secure messaging, card side ----------------------------------------------------------
    def unwrap(self, ins: int, body: bytes, header_len: int, mode: int) -> tuple[bytes, bytes]:
        """(header, plain data) of a command sent in `mode` in the current state."""
        s = self.session
        if s is None or mode == PLAIN:
            return body[:header_len], body[header_len:]
        if len(body) < header_len + 8:
            raise CardStatus(LENGTH)
        header, payload, mac = body[:header_len], body[header_len:-8], body[-8:]
        if mac != s.command_mac(ins, header, payload):
            raise CardStatus(INTEGRITY)
        if mode == MAC or not payload:
            return header, payload
        if len(payload) % 16:
            raise CardStatus(LENGTH)
        try:
            return header, s.decrypt_command(payload)
        except ValueError:
            raise CardStatus(INTEGRITY) from None

    def wrap(self, data: bytes, mode: int) -> bytes:
        """The response data in `mode`; the session counter advances."""
        s = self.session
        if s is None:
            return data
        if mode == PLAIN:
            s.advance()
            return data
        if mode == FULL and data:
            data = s.encrypt_response(data)
        out = data + s.response_mac(OK, data)
        s.advance()
        return out

    def need_key(self, condition: int) -> None:
        """Raise unless the session's key satisfies an access condition (0..4, E, F)."""
        if condition == FREE:
            return
        if condition == NEVER or self.session is None or self.session.key_no != condition:
            raise CardStatus(PERMISSION)

    def mode_for(self, f: DataFile, condition: int) -> int:
        """CommMode of a data command: plain under free access, else the file's."""
        return PLAIN if condition == FREE else f.comm

    # -- commands ---------------------------------------------------------------------------
    def get_key_version(self, ins: int, body: bytes) -> tuple[bytes, int]:
        header, _ = self.unwrap(ins, body, 1, MAC)
        if len(header) != 1:
            raise CardStatus(LENGTH)
        if header[0] >= len(self.keys):
            raise CardStatus(NO_SUCH_KEY)
        return self.wrap(bytes([self.keys[header[0]].version]), MAC), OK

    def change_key(self, ins: int, body: bytes, allowed: int = 0) -> tuple[bytes, int]:
        if self.session is None:
            raise CardStatus(PERMISSION)
        header, data = self.unwrap(ins, body, 1, FULL)
        key_no = header[0] & 0x3F if header else 0xFF
        if key_no >= len(self.keys):
            raise CardStatus(NO_SUCH_KEY)
        self.need_key(allowed)
        if key_no == self.session.key_no:
            if len(data) != 17:
                raise CardStatus(LENGTH)
            self.keys[key_no] = Key(data[:16], data[16])
            self.session = None  # the session's key changed: the session ends, no MAC
            return b"", OK
        if len(data) != 21:
            raise CardStatus(LENGTH)
        new = crypto.xor(data[:16], self.keys[key_no].value)
        if crypto.crc32(new) != data[17:21]:
            raise CardStatus(INTEGRITY)
        self.keys[key_no] = Key(new, data[16])
        return self.wrap(b"", MAC), OK

    def file(self, number: int) -> DataFile:
        f = self.files.get(number)
        if f is None:
            raise CardStatus(FILE_NOT_FOUND)
        return f

    def _data_command(self, ins: int, body: bytes, write: bool
                      ) -> tuple[DataFile, int, int, int, bytes]:
        """(file, CommMode, offset, length, plain data) of ReadData/WriteData, after the
        access check: the read (or write) key, else the read-write key, else refused."""
        f = self.file(body[0]) if body else self.file(0xFF)
        primary = f.write if write else f.read
        condition = primary if primary != NEVER and self._may(primary) else f.read_write
        self.need_key(condition)
        mode = self.mode_for(f, condition)
        header, data = self.unwrap(ins, body, 7, mode)
        if len(header) != 7:
            raise CardStatus(LENGTH)
        return f, mode, u24(header[1:4]), u24(header[4:7]), data

    def read_data(self, ins: int, body: bytes,
                  content: Callable[[int, DataFile], bytes] | None = None) -> tuple[bytes, int]:
        f, mode, offset, length, _ = self._data_command(ins, body, write=False)
        data = content(body[0], f) if content else bytes(f.data)
        length = length or len(data) - offset
        if offset + length > len(data) or length <= 0:
            raise CardStatus(BOUNDARY)
        return self.wrap(data[offset:offset + length], mode), OK

    def write_data(self, ins: int, body: bytes) -> tuple[bytes, int]:
        f, mode, offset, length, data = self._data_command(ins, body, write=True)
        if len(data) != length:
            raise CardStatus(LENGTH)
        if offset + length > f.size:
            raise CardStatus(BOUNDARY)
        f.data[offset:offset + length] = data
        return self.wrap(b"", MAC if mode != PLAIN else PLAIN), OK

    def get_card_uid(self, ins: int, body: bytes, uid: bytes) -> tuple[bytes, int]:
        if self.session is None:
            raise CardStatus(PERMISSION)
        self.unwrap(ins, body, 0, FULL)
        return self.wrap(uid, FULL), OK

    def _may(self, condition: int) -> bool:
        return condition == FREE or (self.session is not None
                                     and self.session.key_no == condition)


def parse_apdu(apdu: bytes) -> tuple[int, int, int, int, bytes] | None:
    """(CLA, INS, P1, P2, data) of a short APDU, or None when its length fields disagree."""
    if len(apdu) < 4:
        return None
    cla, ins, p1, p2 = apdu[:4]
    rest = apdu[4:]
    if len(rest) <= 1:  # case 1 or 2: no data (an optional Le)
        return cla, ins, p1, p2, b""
    lc = rest[0]
    if len(rest) not in (1 + lc, 2 + lc):  # case 3 or 4
        return None
    return cla, ins, p1, p2, bytes(rest[1:1 + lc])


def status(sw2: int, data: bytes = b"") -> bytes:
    return data + bytes([0x91, sw2])

