"""What an NFC reader does with a card that speaks ISO 14443-4 (the door's and the host's jobs).

`SecureCards.present()` runs in the reader's thread while the card is in the field: it tells
accessd's cards (NTAG 424 DNA, DESFire EV2/EV3) from the rest, authenticates them, and turns
the outcome into a `CardProof` for the controller. A card that is not one of accessd's (no
application, factory keys) is read by its UID as before. A card that claims to be one and
fails, or leaves the field before the end, is a denial of its own: its UID is never used.

After the decision, a card that proved an older (accepted) key version is re-keyed to the
current one while it is still in the field; a card pulled away midway finishes next time.

The host's jobs (issue, re-key, wipe) run on the next card through the same transport.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from accessd.cards.channel import Channel, Transport
from accessd.cards.desfire import DesfireProfile
from accessd.cards.keys import Keyring
from accessd.cards.ntag424 import Ntag424Profile
from accessd.cards.secure import Approve, CardProfile, Identified
from accessd.decision import Proof
from accessd.errors import CardError, CardRemovedError, ConfigError
from accessd.readers.base import CardProof

log = logging.getLogger(__name__)

MODES = ("authenticate", "sun")


class KeyringSource:
    """The keyring file, reloaded when it changes (a rollover needs no restart); a file that
    becomes unreadable keeps the last good keyring and is reported once."""

    def __init__(self, path: Path, site_id: str) -> None:
        self.path, self.site_id = path, site_id
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys = Keyring.load(path, site_id)  # the first load must work: fail at start
        self._stamp = self._stat()
        self._reported = False

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def __call__(self) -> Keyring:
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            with self._lock:
                try:
                    self._keys = Keyring.load(self.path, self.site_id)
                    self._stamp, self._reported = stamp, False
                    log.info("card keyring reloaded: versions %s, current %d",
                             list(self._keys.keys), self._keys.current.version)
                except ConfigError as exc:
                    if not self._reported:
                        log.warning("card keyring not reloaded, keeping the previous one: %s",
                                    exc)
                        self._reported = True
        return self._keys


@dataclass(frozen=True)
class Issued:
    """The answer of a host job: never the key, and the UID only to be hashed."""

    kind: str
    uid: bytes
    key_version: int


class SecureCards:
    def __init__(self, keys: KeyringSource | Keyring, *, ntag424_mode: str = "authenticate",
                 sun_url: str = "https://accessd.invalid/c", desfire_aid: str = "F5A0CD",
                 rekey: bool = True) -> None:
        if ntag424_mode not in MODES:
            raise ValueError(f"ntag424_mode is one of {', '.join(MODES)}")
        self._keys = keys
        self.mode, self.rekey_on_tap = ntag424_mode, rekey
        self.ntag = Ntag424Profile(sun_url)
        self.desfire = DesfireProfile(desfire_aid)

    def keys(self) -> Keyring:
        return self._keys() if isinstance(self._keys, KeyringSource) else self._keys

    # -- at the door ----------------------------------------------------------------------
    def present(self, transport: Transport, seen_uid: bytes) -> tuple[bytes, CardProof] | None:
        """(the UID to report, what the card proved), or None for a card to read by its UID."""
        ch = Channel(transport)
        keys = self.keys()
        kind = "unknown"
        try:
            if self.ntag.select(ch):
                kind = self.ntag.kind
                found = (self.ntag.identify_sun(ch, keys, selected=True) if self.mode == "sun"
                         else self.ntag.identify(ch, keys, seen_uid, selected=True))
            else:
                kind = self.desfire.kind
                found = self.desfire.identify(ch, keys, seen_uid)
        except CardRemovedError:
            return seen_uid, CardProof(Proof.INCOMPLETE, kind, why="the card left the field")
        except CardError as exc:  # identify turns the card's refusals into outcomes; not this
            log.info("a %s card answered in a way accessd does not expect: %s", kind, exc)
            return seen_uid, CardProof(Proof.FAILED, kind, why=str(exc))
        if found is None:
            return None
        return self._proof(found, seen_uid, keys)

    def _proof(self, found: Identified, seen_uid: bytes, keys: Keyring
               ) -> tuple[bytes, CardProof]:
        if found.proof is not Proof.AUTHENTICATED or found.uid is None:
            return seen_uid, CardProof(found.proof, found.kind, found.key_version, why=found.why)
        current = keys.current.version
        rekey_to = current if self.rekey_on_tap and found.key_version != current else None
        return found.uid, CardProof(Proof.AUTHENTICATED, found.kind, found.key_version,
                                    found.member_ref, found.sun_counter, rekey_to)

    def rekey_after(self, transport: Transport, seen_uid: bytes, uid: bytes,
                    proof: CardProof) -> bool:
        """Re-key a card that proved an older version, while it is still in the field."""
        if proof.rekey_to is None or proof.proof is not Proof.AUTHENTICATED:
            return False
        profile = self.ntag if proof.card == self.ntag.kind else self.desfire
        try:
            _, version = profile.rekey(Channel(transport), self.keys(), seen_uid, uid)
        except CardRemovedError:
            log.info("%s re-key from version %s interrupted (card removed); it finishes at the "
                     "next presentation", proof.card, proof.key_version)
            return False
        except CardError as exc:
            log.warning("%s re-key from version %s failed: %s", proof.card, proof.key_version,
                        exc)
            return False
        log.info("%s re-keyed from key version %s to %d", proof.card, proof.key_version, version)
        return True

    # -- the host's jobs -------------------------------------------------------------------
    def profile_for(self, ch: Channel) -> CardProfile:
        for profile in (self.ntag, self.desfire):
            if profile.is_this_chip(ch):
                return profile
        raise CardError("this card is neither an NTAG 424 DNA nor a MIFARE DESFire EV2/EV3")

    def job(self, action: str, member_ref: str | None = None,
            approve: Approve | None = None) -> Callable[[Transport, bytes], Issued]:
        """The host's `action` (issue, rekey, wipe) as a function of the next card."""
        if action == "issue":
            if not member_ref:
                raise CardError("issuing a card needs the member it is for")
            return lambda t, seen: self.issue(t, seen, member_ref, approve)
        if action == "rekey":
            return self.rekey
        if action == "wipe":
            return self.wipe
        raise CardError(f"unknown card action {action!r}")

    def issue(self, transport: Transport, seen_uid: bytes, member_ref: str,
              approve: Approve | None = None) -> Issued:
        ch = Channel(transport)
        keys = self.keys()
        profile = self.profile_for(ch)
        uid = profile.personalise(ch, keys, member_ref, approve)
        return Issued(profile.kind, uid, keys.current.version)

    def rekey(self, transport: Transport, seen_uid: bytes) -> Issued:
        ch = Channel(transport)
        keys = self.keys()
        profile = self.profile_for(ch)
        uid, version = profile.rekey(ch, keys, seen_uid)
        return Issued(profile.kind, uid, version)

    def wipe(self, transport: Transport, seen_uid: bytes) -> Issued:
        ch = Channel(transport)
        profile = self.profile_for(ch)
        uid = profile.wipe(ch, self.keys(), seen_uid)
        return Issued(profile.kind, uid, 0)
