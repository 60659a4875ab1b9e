"""MIFARE DESFire EV2/EV3 as accessd issues it: one AES application of its own.

The application (`[cards] desfire_aid`, default F5A0CD) is created next to whatever else the
card holds; the PICC master key is left alone, so the card stays usable for other systems.
Keys (AES-128, AN10922-diversified from the site's master key, all at the same version):

| key | role | diversified with |
|---|---|---|
| 0 | application master key: change keys, create files, delete the application | the UID |
| 1 | UID retrieval on random-ID cards (GetCardUID before the UID is known) | the site only |
| 2 | read key of the member record (file 1, CommMode.Full) | the UID |

Key settings 0x0B: keys changed with key 0 only, no file created without key 0, file
directory readable, configuration changeable. Wiping deletes the application with its own
master key, which returns the card to the state it came in.
"""

from __future__ import annotations

from accessd.cards.channel import Channel
from accessd.cards.keys import Keyring
from accessd.cards.secure import (
    RECORD_SIZE,
    Approve,
    CardProfile,
    encode_record,
    file_header,
)
from accessd.errors import CardError

PICC = b"\x00\x00\x00"
RECORD_FILE = 1
KEY_SETTINGS = 0x0B
AES_KEYS = 0x80 | 3


class DesfireProfile(CardProfile):
    kind = "desfire"
    claims_on_select = True  # accessd's own application id
    slots = (0, 1, 2)
    site_slots = frozenset({1})
    master_slot, uid_slot, read_slot = 0, 1, 2
    read_ins, write_ins, record_file = 0xBD, 0x3D, RECORD_FILE

    def __init__(self, aid: str = "F5A0CD") -> None:
        self.app_id = bytes.fromhex(aid)
        if len(self.app_id) != 3 or self.app_id == PICC:
            raise ValueError("a DESFire AID is 3 bytes (6 hex digits), not 000000")
        self.aid = self.app_id[::-1]  # on the wire: least significant byte first

    def _select(self, ch: Channel, aid: bytes) -> bool:
        _, status = ch.exchange(bytes([0x90, 0x5A, 0, 0, 3]) + aid + b"\x00")
        ch.session = None  # selecting ends any authentication
        return status == 0x9100

    def select(self, ch: Channel) -> bool:
        return self._select(ch, self.aid)

    def is_this_chip(self, ch: Channel) -> bool:
        return self._select(ch, PICC)

    def personalise(self, ch: Channel, keys: Keyring, member_ref: str,
                    approve: Approve | None = None) -> bytes:
        if not self._select(ch, PICC):
            raise CardError("this card is not a DESFire EV2/EV3")
        if self.select(ch):
            raise CardError("this DESFire card is already issued (it has accessd's "
                            "application): use 'accessd card rekey' or 'accessd card wipe'")
        record = encode_record(member_ref)
        self._select(ch, PICC)
        ch.plain(0xCA, self.aid + bytes([KEY_SETTINGS, AES_KEYS]))
        self.select(ch)
        ch.authenticate(self.master_slot, bytes(16))
        uid = ch.full(0x51)
        if approve is not None:
            try:
                approve(uid)
            except CardError:
                self.restore(ch)  # leave the card as it came
                raise
        # file 1: CommMode.Full, read with key 2, write/read-write/change with key 0
        ch.mac(0xCD, bytes([RECORD_FILE, 0x03, 0x00, (self.read_slot << 4) | 0x0])
               + RECORD_SIZE.to_bytes(3, "little"))
        ch.full(self.write_ins, file_header(RECORD_FILE, 0, RECORD_SIZE), record)
        self.change_keys(ch, keys, uid, dict.fromkeys(self.slots, 0), keys.current.version)
        return uid

    def restore(self, ch: Channel) -> None:
        """Delete the application with its own master key: its keys and file go with it."""
        ch.mac(0xDA, self.aid, mac_optional=True)
        ch.session = None
