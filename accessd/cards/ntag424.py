"""NTAG 424 DNA as accessd issues it.

Keys (AES-128, all at the same version; AN10922-diversified from the site's master key):

| key | role | diversified with |
|---|---|---|
| 0 | application master key: change keys and file settings | the card's UID |
| 1 | SDM meta-read key (decrypts the SUN's PICC data) and UID retrieval | the site only |
| 2 | SDM file-read key (the SUN MAC) | the card's UID |
| 3 | read key of the member record (file 3) | the card's UID |
| 4 | not used (changed anyway: no factory key remains) | the card's UID |

Files: file 3 holds the member record, readable only under key 3 in CommMode.Full; file 2
holds an NDEF URL whose `e` and `c` parameters the chip fills at each read (SUN), readable by
anyone (a phone shows the URL), writable by nobody but key 0.
"""

from __future__ import annotations

from accessd.cards import sun
from accessd.cards.channel import Channel
from accessd.cards.keys import Keyring
from accessd.cards.secure import (
    RECORD_SIZE,
    Approve,
    CardProfile,
    Identified,
    encode_record,
    file_header,
    refuse_issued,
)
from accessd.decision import Proof
from accessd.errors import CardError, CardRemovedError, SunMessageError

DF_NAME = bytes.fromhex("D2760000850101")
NDEF_FILE_ID = b"\xe1\x04"
FILE_NDEF, FILE_RECORD = 2, 3
META_SLOT, SUN_SLOT, READ_SLOT = 1, 2, 3
CHUNK = 128  # bytes of data per WriteData (a short APDU holds 255)

FREE, NEVER = 0xE, 0xF
PLAIN, FULL = 0x00, 0x03


def access(read: int, write: int, read_write: int, change: int) -> bytes:
    """The two access-rights bytes as the chip takes them (LSB first)."""
    return bytes([(read_write << 4) | change, (read << 4) | write])


class Ntag424Profile(CardProfile):
    kind = "ntag424"
    app_id = b"424"
    slots = (0, 1, 2, 3, 4)
    site_slots = frozenset({META_SLOT})
    master_slot, uid_slot, read_slot = 0, META_SLOT, READ_SLOT
    read_ins, write_ins, record_file = 0xAD, 0x8D, FILE_RECORD

    def __init__(self, sun_url: str = "https://accessd.invalid/c") -> None:
        self.sun = sun.template(sun_url)

    def select(self, ch: Channel) -> bool:
        _, status = ch.iso(b"\x00\xa4\x04\x0c\x07" + DF_NAME + b"\x00",
                           accept=(0x9000, 0x6A82, 0x6A86, 0x6D00, 0x6E00))
        return status == 0x9000

    def is_this_chip(self, ch: Channel) -> bool:
        return self.select(ch)

    # -- SUN at the door ------------------------------------------------------------------
    def identify_sun(self, ch: Channel, keys: Keyring, *, selected: bool = False
                     ) -> Identified | None:
        """Read the NDEF file as any phone would and verify its SUN message (4 commands, no
        authentication). None when the card carries no SUN URL (blank, or not accessd's)."""
        if not selected and not self.select(ch):
            return None
        try:
            ch.iso(b"\x00\xa4\x00\x0c\x02" + NDEF_FILE_ID + b"\x00")
            head, _ = ch.iso(b"\x00\xb0\x00\x00\x02")  # NLEN: the message, not 256 bytes
            nlen = int.from_bytes(head[:2], "big") if len(head) >= 2 else 0
            if not 5 <= nlen <= 254:
                return None
            body, _ = ch.iso(b"\x00\xb0\x00\x02" + bytes([nlen]))
        except CardRemovedError:
            raise
        except CardError:  # no readable NDEF file: not a card accessd issued
            return None
        url = sun.uri_from_ndef(head[:2] + body)
        if url is None:
            return None
        try:
            message = sun.parse_url(url)
        except SunMessageError:
            return None
        for master in sorted(keys.keys.values(), key=lambda k: -k.version):
            v = master.version
            result = sun.verify(message, keys.site_key(v, self.app_id, META_SLOT),
                                lambda uid, v=v: keys.card_key(v, self.app_id, SUN_SLOT, uid))
            if result is None:
                continue
            if not result.mac_valid:
                return self.failed("the SUN MAC does not verify", v)
            if master.retired:
                return Identified(self.kind, Proof.KEY_RETIRED, key_version=v,
                                  why=f"key version {v} is retired")
            return Identified(self.kind, Proof.AUTHENTICATED, result.uid, v,
                              sun_counter=result.counter)
        return self.failed("the SUN message does not decrypt with any key version")

    # -- issuing ----------------------------------------------------------------------------
    def personalise(self, ch: Channel, keys: Keyring, member_ref: str,
                    approve: Approve | None = None) -> bytes:
        if not self.select(ch):
            raise CardError("this card is not an NTAG 424 DNA")
        refuse_issued(self, ch)
        record = encode_record(member_ref)
        ch.authenticate(self.master_slot, bytes(16))
        uid = ch.full(0x51)
        if approve is not None:
            approve(uid)
        self._write(ch, FILE_NDEF, self.sun.data, plain=True)  # free write in factory state
        ch.full(0x5F, bytes([FILE_RECORD]), bytes([FULL]) + access(READ_SLOT, 0, 0, 0))
        self._write(ch, FILE_RECORD, record, plain=False)
        ch.full(0x5F, bytes([FILE_NDEF]), self.sdm_settings())
        self.change_keys(ch, keys, uid, dict.fromkeys(self.slots, 0), keys.current.version)
        return uid

    def sdm_settings(self) -> bytes:
        """File 2: plain, read free, write by key 0; SDM with UID and counter mirrored
        (encrypted under key 1), SUN MAC under key 2 over nothing but the mirrors."""
        t = self.sun
        return (bytes([0x40 | PLAIN]) + access(FREE, 0, 0, 0)
                + bytes([0xC1, 0xF0 | META_SLOT, (META_SLOT << 4) | SUN_SLOT])
                + t.picc_offset.to_bytes(3, "little") + t.mac_offset.to_bytes(3, "little")
                + t.mac_offset.to_bytes(3, "little"))

    def restore(self, ch: Channel) -> None:
        """Factory file settings and contents (the master key session is open). File 3 is
        made writable by key 0 first: a card pulled away while being issued may still have
        its factory rights (write with key 3)."""
        ch.full(0x5F, bytes([FILE_NDEF]), bytes([PLAIN]) + access(FREE, FREE, FREE, 0))
        self._write(ch, FILE_NDEF, bytes(256), plain=True)
        ch.full(0x5F, bytes([FILE_RECORD]), bytes([FULL]) + access(READ_SLOT, 0, 0, 0))
        self._write(ch, FILE_RECORD, bytes(128), plain=False)
        ch.full(0x5F, bytes([FILE_RECORD]), bytes([FULL]) + access(2, 3, 3, 0))

    def _write(self, ch: Channel, number: int, data: bytes, *, plain: bool) -> None:
        for offset in range(0, len(data), CHUNK):
            part = data[offset:offset + CHUNK]
            header = file_header(number, offset, len(part))
            if plain:
                ch.plain(self.write_ins, header, part)
            else:
                ch.full(self.write_ins, header, part)


__all__ = ["RECORD_SIZE", "Ntag424Profile"]
