"""What accessd does with one of its cards, whatever the chip: identify, issue, re-key, wipe.

A card type (`CardProfile`: NTAG 424 DNA or DESFire EV2/EV3) says where its keys and its
member record live; the flows here are the same for both:

* identify (the door): select the application, read the key version, find the real UID
  (random-ID cards: authenticate with the site's UID key and ask GetCardUID), authenticate
  with the card's own read key (AN10922-diversified) and read the member record under secure
  messaging. Anything the card gets wrong is a failed authentication, never a UID read.
* issue: factory keys to diversified keys of the current version, files, member record.
* re-key: every key to the current version, the card's keys changed one by one under the
  application master key (a card pulled away midway keeps a known mix of versions, which the
  next attempt finishes).
* wipe: back to the factory state.

The UID is used only as what the keys prove: no flow trusts a UID the card did not
authenticate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from accessd.cards import crypto
from accessd.cards.channel import Channel
from accessd.cards.keys import Keyring
from accessd.decision import Proof
from accessd.errors import CardAuthenticationError, CardError, CardRemovedError

RECORD_SIZE = 32
Approve = Callable[[bytes], None]
_MAGIC = b"AXS\x01"
_MAX_REF = RECORD_SIZE - len(_MAGIC) - 1


def encode_record(member_ref: str) -> bytes:
    """The member record written on a card: magic, length, the member id (UTF-8), zeros."""
    raw = member_ref.encode("utf-8")
    if not raw or len(raw) > _MAX_REF:
        raise CardError(f"a member reference is 1 to {_MAX_REF} bytes")
    return (_MAGIC + bytes([len(raw)]) + raw).ljust(RECORD_SIZE, b"\x00")


def decode_record(raw: bytes) -> str:
    if len(raw) < RECORD_SIZE or raw[:4] != _MAGIC or not 1 <= raw[4] <= _MAX_REF:
        raise CardError("the card's record is not in accessd's format")
    try:
        return raw[5:5 + raw[4]].decode("utf-8")
    except UnicodeDecodeError:
        raise CardError("the card's record is not in accessd's format") from None


def is_random_id(uid: bytes) -> bool:
    """ISO 14443-3: a 4-byte UID starting with 0x08 is random, new at each activation."""
    return len(uid) == 4 and uid[0] == 0x08


@dataclass(frozen=True)
class Identified:
    """What `identify` found on one of accessd's cards."""

    kind: str
    proof: Proof  # AUTHENTICATED, FAILED or KEY_RETIRED
    uid: bytes | None = None  # the real UID, when the keys proved it
    key_version: int | None = None
    member_ref: str | None = None
    sun_counter: int | None = None
    why: str = ""


class CardProfile:
    """Where one chip type keeps accessd's keys and record (subclasses fill the details)."""

    kind = ""
    claims_on_select = False  # does selecting the application alone make it accessd's card?
    app_id = b""  # diversification input: the application's identity
    slots: tuple[int, ...] = ()
    site_slots: frozenset[int] = frozenset()  # keys every card shares (not per UID)
    master_slot, uid_slot, read_slot = 0, 1, 2
    read_ins, write_ins, record_file = 0xAD, 0x8D, 3

    def select(self, ch: Channel) -> bool:
        """Select accessd's application; False when the card does not have it."""
        raise NotImplementedError

    def is_this_chip(self, ch: Channel) -> bool:
        """True when the card is this chip type, blank or not (for issuing)."""
        raise NotImplementedError

    def key(self, keys: Keyring, version: int, slot: int, uid: bytes) -> bytes:
        if slot in self.site_slots:
            return keys.site_key(version, self.app_id, slot)
        return keys.card_key(version, self.app_id, slot, uid)

    def personalise(self, ch: Channel, keys: Keyring, member_ref: str,
                    approve: Approve | None = None) -> bytes:
        """Issue a blank card; returns its real UID. `approve(uid)` runs as soon as the UID is
        known, before anything is written for good, and may refuse (CardError)."""
        raise NotImplementedError

    def restore(self, ch: Channel) -> None:
        """Undo `personalise` under an application master key session (keys excepted)."""
        raise NotImplementedError

    # -- generic flows --------------------------------------------------------------------
    def identify(self, ch: Channel, keys: Keyring, seen_uid: bytes, *,
                 selected: bool = False) -> Identified | None:
        """Authenticate one of accessd's cards; None when it is not one (a UID read then)."""
        if not selected and not self.select(ch):
            return None
        try:
            version = key_version(ch, self.read_slot)
        except CardRemovedError:
            raise
        except CardError as exc:  # an odd card that answered the selection
            return self.failed(str(exc)) if self.claims_on_select else None
        if version == 0:
            return None  # factory keys: a blank card, not issued by accessd
        master = keys.get(version)
        if master is None:
            return self.failed(f"key version {version} is not in the keyring", version)
        if master.retired:
            return Identified(self.kind, Proof.KEY_RETIRED, key_version=version,
                              why=f"key version {version} is retired")
        try:
            uid = self.real_uid(ch, keys, seen_uid, version)
            ch.authenticate(self.read_slot, self.key(keys, version, self.read_slot, uid))
            record = ch.full(self.read_ins, file_header(self.record_file, 0, RECORD_SIZE))
            member_ref = decode_record(record)
        except CardRemovedError:
            raise
        except CardError as exc:
            return self.failed(str(exc), version)
        return Identified(self.kind, Proof.AUTHENTICATED, uid, version, member_ref)

    def failed(self, why: str, version: int | None = None) -> Identified:
        return Identified(self.kind, Proof.FAILED, key_version=version, why=why)

    def real_uid(self, ch: Channel, keys: Keyring, seen_uid: bytes, version: int) -> bytes:
        """The card's UID as its keys prove it: a random ID is replaced by GetCardUID after
        authenticating with the site's UID key (every card's keys are per UID)."""
        if not is_random_id(seen_uid):
            return seen_uid
        ch.authenticate(self.uid_slot, self.key(keys, version, self.uid_slot, b""))
        uid = ch.full(0x51)
        if len(uid) not in (7, 10):
            raise CardAuthenticationError("GetCardUID answered an impossible UID")
        return uid

    def versions(self, ch: Channel, keys: Keyring) -> dict[int, int]:
        found = {slot: key_version(ch, slot) for slot in self.slots}
        unknown = sorted({v for v in found.values() if not keys.knows(v)})
        if unknown:
            raise CardError(f"the card holds key version {unknown[0]}, which is not in the "
                            "keyring: it cannot be changed")
        return found

    def open_master(self, ch: Channel, keys: Keyring, seen_uid: bytes,
                    uid: bytes | None = None) -> tuple[bytes, dict[int, int]]:
        """Select, learn every key's version and the real UID (unless already proven),
        authenticate with the application master key."""
        if not self.select(ch):
            raise CardError(f"this {self.label} has no accessd application (not issued)")
        versions = self.versions(ch, keys)
        uid = uid or self.real_uid(ch, keys, seen_uid, versions[self.uid_slot])
        ch.authenticate(self.master_slot,
                        self.key(keys, versions[self.master_slot], self.master_slot, uid))
        return uid, versions

    def change_keys(self, ch: Channel, keys: Keyring, uid: bytes, versions: dict[int, int],
                    target: int) -> None:
        """Every key to `target` (0: factory), the master key last (it ends the session)."""
        for slot in self.slots:
            if slot == self.master_slot or versions[slot] == target:
                continue
            new = self.key(keys, target, slot, uid)
            old = self.key(keys, versions[slot], slot, uid)
            ch.full(0xC4, bytes([slot]), crypto.xor(new, old) + bytes([target]) + crypto.crc32(new))
        if versions[self.master_slot] != target:
            new = self.key(keys, target, self.master_slot, uid)
            ch.full(0xC4, bytes([self.master_slot]), new + bytes([target]), mac_optional=True)

    def rekey(self, ch: Channel, keys: Keyring, seen_uid: bytes,
              uid: bytes | None = None) -> tuple[bytes, int]:
        """Bring every key to the current version; (UID, version)."""
        uid, versions = self.open_master(ch, keys, seen_uid, uid)
        target = keys.current.version
        self.change_keys(ch, keys, uid, versions, target)
        return uid, target

    def wipe(self, ch: Channel, keys: Keyring, seen_uid: bytes) -> bytes:
        """Back to the factory state; returns the real UID."""
        uid, versions = self.open_master(ch, keys, seen_uid)
        self.restore(ch)
        if ch.session is not None:
            self.change_keys(ch, keys, uid, versions, 0)
        return uid

    @property
    def label(self) -> str:
        return {"ntag424": "NTAG 424 DNA", "desfire": "DESFire card"}.get(self.kind, self.kind)


def key_version(ch: Channel, slot: int) -> int:
    answer = ch.mac(0x64, bytes([slot]))
    if len(answer) != 1:
        raise CardError("GetKeyVersion answered an unexpected length")
    return answer[0]


def file_header(number: int, offset: int, length: int) -> bytes:
    return bytes([number]) + offset.to_bytes(3, "little") + length.to_bytes(3, "little")


def refuse_issued(profile: CardProfile, ch: Channel) -> None:
    """Issuing starts from factory keys only: never overwrite someone's card."""
    for slot in profile.slots:
        version = key_version(ch, slot)
        if version:
            raise CardError(f"this {profile.label} is already issued (key {slot} at version "
                            f"{version}): use 'accessd card rekey' or 'accessd card wipe'")
