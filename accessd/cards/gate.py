"""The controller's side of authenticated cards: from what the reader proved to `CardCheck`.

The reader authenticates the card; what needs the rule cache happens here, under the
controller's lock, one tap at a time:

* a card that did not authenticate names nobody: its UID is never looked up;
* a SUN message must carry a read counter above the last one accepted from that card
  (kept in memory at once, written to the rule cache right after the release, like the
  journal: the member never waits on the SD card);
* a card written for another member than the one the cache binds it to is refused;
* whether the credential was enrolled as an authenticated card, and whether the member's plan
  requires one, is handed to the pure decision as data.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from accessd.decision import CardCheck, Grant, Plan, Proof
from accessd.errors import StoreError
from accessd.readers.base import CardRead
from accessd.store.cards import CardStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checked:
    """`check`'s answer: the decision's input, the event's detail, what to write after."""

    facts: CardCheck
    detail: dict[str, Any] = field(default_factory=dict)
    write: tuple[str, int | None, int | None] | None = None  # (hash, key version, counter)


class CardGate:
    def __init__(self, store: CardStore, required_for: frozenset[Plan] = frozenset()) -> None:
        self.store = store
        self.required_for = required_for
        self._counters: dict[str, int] = {}  # ahead of the disk between check and settle

    @staticmethod
    def identifies(read: CardRead) -> bool:
        """May `read.uid` be looked up? Only when it was not a failed authentication."""
        return read.proof is None or read.proof.proof is Proof.AUTHENTICATED

    def check(self, read: CardRead, credential: str | None, record: Grant | None) -> Checked:
        p = read.proof
        proof = Proof.UID_ONLY if p is None else p.proof
        enrolled = credential is not None and self.store.enrolled_authenticated(credential)
        write = None
        if p is not None and proof is Proof.AUTHENTICATED and credential and record:
            state = self.store.state(credential)
            if p.sun_counter is not None:
                last = self._counters.get(credential, state.sun_counter if state else None)
                if last is not None and p.sun_counter <= last:
                    proof = Proof.REPLAYED
                else:
                    self._counters[credential] = p.sun_counter
            if proof is Proof.AUTHENTICATED and p.member_ref not in (None, record.member_id):
                proof = Proof.MISMATCH
            if proof is Proof.AUTHENTICATED and (
                    state is None or p.sun_counter is not None
                    or state.key_version != p.key_version):
                write = (credential, p.key_version, p.sun_counter)
        detail: dict[str, Any] = {}
        if p is not None:
            detail = {"proof": str(proof), "card": p.card}
            detail.update({k: v for k, v in (("key_version", p.key_version),
                                             ("sun_counter", p.sun_counter),
                                             ("why", p.why)) if v not in (None, "")})
        return Checked(CardCheck(proof, enrolled, self.required_for), detail, write)

    def settle(self, checked: Checked) -> None:
        """Write what `check` accepted (after the release; a failure is logged, not fatal:
        the counter is still held in memory)."""
        if checked.write is None:
            return
        credential, version, counter = checked.write
        try:
            self.store.record(credential, key_version=version, sun_counter=counter)
        except (StoreError, sqlite3.Error, OSError) as exc:
            log.warning("cannot record the state of an authenticated card: %s", exc)
