"""A software MIFARE DESFire EV2/EV3: the card side of every command accessd sends to one.

Factory state: the PICC level only (AID 000000) with its DES master key and key settings 0x0F,
so applications may be created without authenticating. Applications hold AES keys (all zeros,
version 0 when created) and standard data files. An application can be deleted by its own
master key (the application selected and authenticated with key 0), which is how accessd
returns a card to factory state without the PICC master key. The PICC master key itself (DES,
legacy authentication) is not modelled: AuthenticateEV2First at PICC level is refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from accessd.cards.testing.app import (
    APP_NOT_FOUND,
    AUTH_ERROR,
    DUPLICATE,
    ILLEGAL_COMMAND,
    LENGTH,
    MAC,
    OK,
    PARAMETER,
    PERMISSION,
    Application,
    DataFile,
    parse_apdu,
    status,
)
from accessd.errors import CardStatusAnswer as CardStatus

PICC = b"\x00\x00\x00"


class DesfireApp(Application):
    def __init__(self, keys: int, settings: int, random: Callable[[int], bytes]) -> None:
        super().__init__(keys, random)
        self.settings = settings  # key settings byte 1: change access, free create...


class Desfire:
    """One DESFire EV2/EV3 card. `apdu()` answers a command APDU as the chip would."""

    def __init__(self, uid: bytes | None = None, *, random_uid: bool = False,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.random = random
        self.uid = uid or b"\x04" + random(6)
        self.random_uid = random_uid
        self.apps: dict[bytes, DesfireApp] = {}
        self.commands = 0
        self.power_up()

    def power_up(self) -> None:
        self.selected = PICC
        for app in self.apps.values():
            app.reset()
        self._random_id = b"\x08" + self.random(3)

    @property
    def anticollision_uid(self) -> bytes:
        return self._random_id if self.random_uid else self.uid

    @property
    def app(self) -> DesfireApp | None:
        return self.apps.get(self.selected)

    def apdu(self, apdu: bytes) -> bytes:
        self.commands += 1
        parsed = parse_apdu(apdu)
        if parsed is None:
            return b"\x67\x00"
        cla, ins, _, _, data = parsed
        if cla != 0x90:
            return b"\x6e\x00"
        try:
            out, sw2 = self._native(ins, data)
        except CardStatus as answer:
            if self.app is not None:
                self.app.reset()
            return status(answer.sw2)
        return status(sw2, out)

    def _native(self, ins: int, data: bytes) -> tuple[bytes, int]:
        if ins == 0x5A:
            return self._select(data)
        if ins == 0xCA:
            return self._create_application(data)
        app = self.app
        if app is None:  # PICC level: only what the PICC master key would allow is refused
            raise CardStatus(AUTH_ERROR if ins == 0x71 else PERMISSION)
        if ins == 0x71:
            return app.auth_first(data)
        if ins == 0xAF:
            return app.auth_second(data)
        if ins == 0x64:
            return app.get_key_version(ins, data)
        if ins == 0x51:
            return app.get_card_uid(ins, data, self.uid)
        if ins == 0xC4:
            return app.change_key(ins, data, allowed=app.settings >> 4)
        if ins == 0xBD:
            return app.read_data(ins, data)
        if ins == 0x3D:
            return app.write_data(ins, data)
        if ins == 0xCD:
            return self._create_file(app, ins, data)
        if ins == 0xDA:
            return self._delete_application(app, ins, data)
        raise CardStatus(ILLEGAL_COMMAND)

    def _select(self, data: bytes) -> tuple[bytes, int]:
        if len(data) != 3:
            raise CardStatus(LENGTH)
        aid = bytes(data)
        if self.app is not None:
            self.app.reset()
        if aid != PICC and aid not in self.apps:
            self.selected = PICC
            raise CardStatus(APP_NOT_FOUND)
        self.selected = aid
        return b"", OK

    def _create_application(self, data: bytes) -> tuple[bytes, int]:
        if self.selected != PICC:
            raise CardStatus(PERMISSION)
        if len(data) != 5:  # AID, key settings 1 and 2; no ISO file id or DF name
            raise CardStatus(LENGTH)
        aid, settings, key_info = bytes(data[:3]), data[3], data[4]
        if aid == PICC or key_info & 0xC0 != 0x80 or not 1 <= key_info & 0x0F <= 14:
            raise CardStatus(PARAMETER)  # AES keys only: what accessd creates
        if aid in self.apps:
            raise CardStatus(DUPLICATE)
        self.apps[aid] = DesfireApp(key_info & 0x0F, settings, self.random)
        return b"", OK

    def _create_file(self, app: DesfireApp, ins: int, body: bytes) -> tuple[bytes, int]:
        if not app.settings & 0x04:  # no free create: the application master key is needed
            app.need_key(0)
        header, _ = app.unwrap(ins, body, 7, MAC)
        if len(header) != 7:
            raise CardStatus(LENGTH)
        number, option, size = header[0], header[1], int.from_bytes(header[4:7], "little")
        if number > 31 or option & ~0x03 or option & 0x03 == 0x02 or size == 0:
            raise CardStatus(PARAMETER)
        if number in app.files:
            raise CardStatus(DUPLICATE)
        f = DataFile(size, option & 0x03)
        f.set_access(header[2:4])
        app.files[number] = f
        return app.wrap(b"", MAC), OK

    def _delete_application(self, app: DesfireApp, ins: int, body: bytes) -> tuple[bytes, int]:
        app.need_key(0)
        header, _ = app.unwrap(ins, body, 3, MAC)
        if bytes(header) != self.selected:
            raise CardStatus(PERMISSION)  # with the application key: only itself
        del self.apps[self.selected]
        self.selected = PICC
        return b"", OK  # the session went with the application: no MAC

