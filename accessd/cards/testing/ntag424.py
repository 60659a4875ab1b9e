"""A software NTAG 424 DNA: the card side of every command accessd sends to one.

Factory state as delivered (NT4H2421Gx datasheet, AN12196): five AES keys of zeros at
version 0; file 1 the capability container (32 bytes, read free), file 2 the NDEF file (256
bytes, read and write free), file 3 the proprietary file (128 bytes, CommMode.Full, read with
key 2, write with key 3), change of every file with key 0. Secure Dynamic Messaging on file 2
mirrors the encrypted PICC data (UID and read counter) and the SUN MAC into the NDEF message
at each unauthenticated read, incrementing the read counter once per activation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from accessd.cards import crypto
from accessd.cards.testing.app import (
    FREE,
    FULL,
    ILLEGAL_COMMAND,
    LENGTH,
    MAC,
    NEVER,
    OK,
    PARAMETER,
    PERMISSION,
    PLAIN,
    Application,
    DataFile,
    parse_apdu,
    status,
    u24,
)
from accessd.errors import CardStatusAnswer as CardStatus

DF_NAME = bytes.fromhex("D2760000850101")
FILE_IDS = {0xE103: 1, 0xE104: 2, 0xE105: 3}
FACTORY_CC = bytes.fromhex("001720010000FF0406E104010000000506E10500808283000000000000000000")


@dataclass
class SdmSettings:
    """What accessd configures: UID and read counter mirrored encrypted, a SUN MAC."""

    meta_read: int
    file_read: int
    counter_retrieval: int
    picc_offset: int
    mac_input_offset: int
    mac_offset: int


class Ntag424:
    """One NTAG 424 DNA. `apdu()` answers a command APDU as the chip would."""

    def __init__(self, uid: bytes | None = None, *, random_uid: bool = False,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.random = random
        self.uid = uid or b"\x04" + random(6)
        self.random_uid = random_uid
        self.app = Application(5, random)
        self.app.files = {
            1: DataFile(32, PLAIN, read=FREE, write=0, read_write=0, change=0,
                        data=bytearray(FACTORY_CC)),
            2: DataFile(256, PLAIN, read=FREE, write=FREE, read_write=FREE, change=0),
            3: DataFile(128, FULL, read=2, write=3, read_write=3, change=0),
        }
        self.sdm: SdmSettings | None = None
        self.sdm_read_counter = 0
        self.commands = 0
        self.power_up()

    # -- the field ----------------------------------------------------------------------
    def power_up(self) -> None:
        """The card enters the field: nothing selected, no session, a new random ID."""
        self.app.reset()
        self.app_selected = False
        self.selected_file: int | None = None
        self._counted = False
        self._random_id = b"\x08" + self.random(3)

    @property
    def anticollision_uid(self) -> bytes:
        return self._random_id if self.random_uid else self.uid

    # -- APDUs ----------------------------------------------------------------------------
    def apdu(self, apdu: bytes) -> bytes:
        self.commands += 1
        parsed = parse_apdu(apdu)
        if parsed is None:
            return b"\x67\x00"
        cla, ins, p1, p2, data = parsed
        if cla == 0x00:
            self.app.reset()  # ISO commands end the authenticated state
            return self._iso(ins, p1, p2, data, apdu)
        if cla != 0x90:
            return b"\x6e\x00"
        try:
            if not self.app_selected:
                raise CardStatus(ILLEGAL_COMMAND)
            out, sw2 = self._native(ins, data)
        except CardStatus as answer:
            self.app.reset()
            return status(answer.sw2)
        return status(sw2, out)

    def _native(self, ins: int, data: bytes) -> tuple[bytes, int]:
        a = self.app
        if ins == 0x71:
            return a.auth_first(data)
        if ins == 0xAF:
            return a.auth_second(data)
        if ins == 0x64:
            return a.get_key_version(ins, data)
        if ins == 0x51:
            return a.get_card_uid(ins, data, self.uid)
        if ins == 0xC4:
            return a.change_key(ins, data, allowed=0)
        if ins == 0xAD:
            return a.read_data(ins, data, self._content)
        if ins == 0x8D:
            return a.write_data(ins, data)
        if ins == 0x5F:
            return self._change_file_settings(ins, data)
        raise CardStatus(ILLEGAL_COMMAND)

    def _iso(self, ins: int, p1: int, p2: int, data: bytes, apdu: bytes) -> bytes:
        if ins == 0xA4:  # ISOSelectFile
            if p1 == 0x04:
                if data != DF_NAME:
                    return b"\x6a\x82"
                self.app_selected, self.selected_file = True, None
                return b"\x90\x00"
            if p1 in (0x00, 0x02) and len(data) == 2 and self.app_selected:
                number = FILE_IDS.get(int.from_bytes(data, "big"))
                if number is None:
                    return b"\x6a\x82"
                self.selected_file = number
                return b"\x90\x00"
            return b"\x6a\x82" if p1 in (0x00, 0x02) else b"\x6a\x86"
        if ins == 0xB0:  # ISOReadBinary
            if self.selected_file is None:
                return b"\x69\x86"
            f = self.app.files[self.selected_file]
            if f.read != FREE and f.read_write != FREE:
                return b"\x69\x82"
            content = self._content(self.selected_file, f)
            offset = ((p1 & 0x7F) << 8) | p2
            le = apdu[4] if len(apdu) == 5 else 0
            if offset > len(content):
                return b"\x6b\x00"
            return content[offset:offset + (le or 256)] + b"\x90\x00"
        return b"\x6d\x00"

    # -- files and SDM ---------------------------------------------------------------------
    def _content(self, number: int, f: DataFile) -> bytes:
        """The file as read now: file 2 with its SUN mirrors when SDM is on."""
        sdm = self.sdm
        if number != 2 or sdm is None or self.app.session is not None:
            return bytes(f.data)
        if not self._counted:
            self.sdm_read_counter += 1
            self._counted = True
        ctr = self.sdm_read_counter
        data = bytearray(f.data)
        picc = b"\xc7" + self.uid + ctr.to_bytes(3, "little") + self.random(5)
        enc = crypto.cbc_encrypt(self.app.keys[sdm.meta_read].value, crypto.ZERO_IV, picc)
        data[sdm.picc_offset:sdm.picc_offset + 32] = enc.hex().upper().encode()
        _, mac_key = crypto.sdm_session_keys(self.app.keys[sdm.file_read].value, self.uid, ctr)
        mac = crypto.mact(mac_key, bytes(data[sdm.mac_input_offset:sdm.mac_offset]))
        data[sdm.mac_offset:sdm.mac_offset + 16] = mac.hex().upper().encode()
        return bytes(data)

    def _change_file_settings(self, ins: int, body: bytes) -> tuple[bytes, int]:
        a = self.app
        if a.session is None:
            raise CardStatus(PERMISSION)
        header, data = a.unwrap(ins, body, 1, FULL)
        f = a.file(header[0])
        a.need_key(f.change)
        if len(data) < 3:
            raise CardStatus(LENGTH)
        option = data[0]
        comm = option & 0x03
        if comm not in (PLAIN, MAC, FULL) or option & ~0x43:
            raise CardStatus(PARAMETER)
        sdm = None
        if option & 0x40:
            sdm = self._parse_sdm(header[0], f, data[3:])
        elif len(data) != 3:
            raise CardStatus(LENGTH)
        f.comm = comm
        f.set_access(data[1:3])
        self.sdm = sdm if header[0] == 2 else self.sdm
        return a.wrap(b"", MAC), OK

    def _parse_sdm(self, number: int, f: DataFile, raw: bytes) -> SdmSettings:
        """The SDM part of ChangeFileSettings; only the layout accessd writes is modelled."""
        if number != 2 or len(raw) < 3:
            raise CardStatus(PARAMETER)
        options, rights = raw[0], raw[1:3]
        ctr_ret, meta, file_read = rights[0] & 0xF, rights[1] >> 4, rights[1] & 0xF
        # UID + counter mirrored, ASCII encoding, encrypted PICC data, no file-data
        # encryption, no counter limit
        if options != 0xC1 or meta > 4 or file_read > 4 or rights[0] >> 4 != NEVER:
            raise CardStatus(PARAMETER)
        if len(raw) != 3 + 9:
            raise CardStatus(LENGTH)
        picc, mac_in, mac = u24(raw[3:6]), u24(raw[6:9]), u24(raw[9:12])
        fits = picc + 32 <= f.size and mac + 16 <= f.size and mac_in <= mac
        if not fits or not (picc + 32 <= mac or picc >= mac + 16):
            raise CardStatus(PARAMETER)
        return SdmSettings(meta, file_read, ctr_ret, picc, mac_in, mac)
