"""The host's card operations: issue, re-key and wipe a card, then record it in the rule cache.

The card part runs where the reader is:

* through the running daemon (`[storage] control_socket`): the next ISO 14443-4 card on the
  door's NFC reader is taken for the job instead of being decided on; the daemon holds the
  keys and answers only the card type, the key version and the credential's keyed hash, so the
  host's command never sees a key or a UID;
* or on a reader of its own (`device`, an nfcpy path) when the daemon is stopped or the host
  has a desk reader: then this process reads the master key file and must run as the service
  user.

The rule-cache part (enrolment, card state, revocation) is the same in both cases, each change
in one transaction and journalled, exactly as `accessd enroll` and `accessd revoke` do.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from accessd.admin import Site, enroll, revoke_card
from accessd.cards.keys import Keyring
from accessd.cards.reader import Issued, KeyringSource, SecureCards
from accessd.config import Config, ReaderConfig
from accessd.credentials import CredentialHasher, load_or_create_site_secret
from accessd.decision import Plan, Status
from accessd.errors import CardError, ReaderError
from accessd.readers.base import ReaderStatus
from accessd.store.cards import CardStore
from accessd.store.rules import Member, RuleCache

ACTIONS = ("issue", "rekey", "wipe")


@dataclass(frozen=True)
class CardDone:
    """A job's answer as the host sees it: no key, no UID."""

    card: str
    credential_hash: str
    key_version: int


def secure_cards(cfg: Config, *, follow: bool = False) -> SecureCards:
    """The card logic of `cfg`; `follow`: reload the keyring when its file changes (the
    daemon, so that a rollover needs no restart)."""
    c = cfg.cards
    ring: Keyring | KeyringSource = (KeyringSource(c.master_key_file, cfg.site.id) if follow
                                     else Keyring.load(c.master_key_file, cfg.site.id))
    return SecureCards(ring,
                       ntag424_mode=c.ntag424_mode, sun_url=c.sun_url,
                       desfire_aid=c.desfire_aid, rekey=c.rekey_on_tap)


def refuse_enrolled(rules: RuleCache, hasher: CredentialHasher) -> Callable[[bytes], None]:
    """An issuing check: a card already in the rule cache (even revoked: a revocation is
    final) is not issued again."""

    def approve(uid: bytes) -> None:
        member = rules.find_by_credential(hasher(uid.hex().upper()))
        if member is not None:
            raise CardError(f"this card is already enrolled (member {member.id}); a revoked "
                            "card stays revoked: use another card")

    return approve


def run(cfg: Config, action: str, *, device: str | None = None, reader: str | None = None,
        timeout: float = 30.0, member_ref: str | None = None) -> CardDone:
    """Do `action` on the next card: on `device` here, else through the running daemon."""
    if action not in ACTIONS:
        raise CardError(f"unknown card action {action!r}")
    if device is None:
        from accessd.daemon.control import call

        reply = call(cfg.storage.control_socket,
                     {"op": "card", "action": action, "reader": reader, "timeout": timeout,
                      "member_ref": member_ref}, timeout=timeout + 30)
        return CardDone(str(reply["card"]), str(reply["credential_hash"]),
                        int(reply["key_version"]))
    hasher = CredentialHasher(load_or_create_site_secret(cfg.site.secret_file))
    secure = secure_cards(cfg)
    rules = RuleCache(cfg.storage.rules_db, readonly=cfg.storage.rules_db.exists())
    try:
        approve = refuse_enrolled(rules, hasher) if action == "issue" else None
        issued = on_device(device, secure, secure.job(action, member_ref, approve), timeout)
    finally:
        rules.close()
    return CardDone(issued.kind, hasher(issued.uid.hex().upper()), issued.key_version)


def on_device(path: str, secure: SecureCards, job: Callable[[Any, bytes], Issued],
              timeout: float) -> Issued:
    """Open the nfcpy reader at `path`, run `job` on the next ISO 14443-4 card, close."""
    from accessd.readers.nfc_reader import NfcReader

    statuses: queue.Queue[ReaderStatus] = queue.Queue()
    nfc = NfcReader(ReaderConfig(name="card", type="nfc", port=path, hold_off_s=0.5),
                    secure=secure, reconnect_min_s=0.5, reconnect_max_s=1.0)
    nfc.start(lambda read: None, statuses.put)
    try:
        try:
            first = statuses.get(timeout=10)
        except queue.Empty:
            raise ReaderError(f"NFC device {path} did not open within 10 s") from None
        if not first.online:
            raise ReaderError(first.detail)
        return nfc.run_on_next_card(job, timeout)
    finally:
        nfc.stop()


# -- the rule cache's side ------------------------------------------------------------------


def enroll_issued(site: Site, done: CardDone, *, member_id: str, name: str, plan: Plan,
                  valid_from: date | None, valid_until: date | None, operator: str) -> Member:
    member = enroll(site, name=name, plan=plan, credential_hash=done.credential_hash,
                    technology=done.card, valid_from=valid_from, valid_until=valid_until,
                    member_id=member_id, operator=operator)
    CardStore(site.rules.db.conn).record(done.credential_hash, key_version=done.key_version)
    return member


def record_rekeyed(site: Site, done: CardDone) -> None:
    if site.rules.find_by_credential(done.credential_hash) is not None:
        CardStore(site.rules.db.conn).record(done.credential_hash, key_version=done.key_version)


def revoke_wiped(site: Site, done: CardDone, operator: str) -> Member | None:
    """A wiped card is no credential any more: revoke it if it was enrolled and active."""
    member = site.rules.find_by_credential(done.credential_hash)
    if member is None:
        return None
    active = [c for c in member.credentials if done.credential_hash.startswith(c["credential"])
              and c["status"] != str(Status.REVOKED)]
    if not active:
        return member
    return revoke_card(site, credential=done.credential_hash, operator=operator).member
