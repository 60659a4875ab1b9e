"""The insider scenario's oracles, written from the brief and docs/decision.md, never from the
product's own checks: what each door may grant, and what the office's store must hold.

**Rights.** `Rights` is what the suite knows the people in charge decided: the office's rows
(its members file, its revocations, the proposals its operator approved) and each door's own
host changes (a host's enrolment works at its door at once; a host's revocation is final
there). A door may grant a card only if, at that door, the card and its member are active, the
member is within their validity dates (site-local days) and their plan allows the hour (a
subscriber always; an occasional member during opening hours). Nothing a door login, a stolen
door or a crafted document sends is in it: whatever they got granted is a failure.

**Time.** A change reaches a door at some moment between the suite starting it and seeing
it done (the CLI returned, the door reports the new rule version). `Timeline` keeps, per
door, each state with that window: inside it a grant is allowed if the state before *or*
after allows it, after it only if the new state does.

**Store.** `compare_store` says whether the office's events for a door are exactly that door's
journal: every event once, under its number and id, and nothing else but the events the
suite forged with the door's own key (a stolen door: stored as genuine, by design), whose
numbers, when the door reached them too, leave one of the two events in conflicts.
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

ACTIVE, SUSPENDED, REVOKED = "active", "suspended", "revoked"
_RANK = {ACTIVE: 0, SUSPENDED: 1, REVOKED: 2}


def card_hash(site_key: bytes, uid: str) -> str:
    """The keyed hash a door stores for a card number (HMAC-SHA-256 of the upper-case hex)."""
    return hmac.new(site_key, uid.upper().encode("ascii"), hashlib.sha256).hexdigest()


def stricter(a: str, b: str) -> str:
    return a if _RANK[a] >= _RANK[b] else b


@dataclass(frozen=True)
class Hours:
    """Opening hours for occasional members: [opens, closes) on `days` (0 = Monday)."""

    tz: ZoneInfo
    opens: time
    closes: time
    days: frozenset[int] = frozenset(range(7))
    closures: frozenset[date] = frozenset()

    def open_at(self, at: datetime) -> bool:
        local = at.astimezone(self.tz)
        return (local.weekday() in self.days and local.date() not in self.closures
                and self.opens <= local.time().replace(tzinfo=None) < self.closes)


@dataclass
class Member:
    plan: str  # subscriber | occasional
    status: str = ACTIVE
    valid_from: date | None = None
    valid_until: date | None = None


@dataclass
class Card:
    member: str
    status: str = ACTIVE


@dataclass
class Rows:
    members: dict[str, Member] = field(default_factory=dict)
    cards: dict[str, Card] = field(default_factory=dict)


@dataclass
class Rights:
    """What the office decided, and what each door's host did there."""

    hours: Hours
    office: Rows = field(default_factory=Rows)
    local: dict[str, Rows] = field(default_factory=dict)  # door -> the host's own rows
    revoked_at: dict[str, set[str]] = field(default_factory=dict)  # door -> ids and hashes
    office_revoked: set[str] = field(default_factory=set)  # member ids and card hashes

    def door(self, name: str) -> Rows:
        return self.local.setdefault(name, Rows())

    # -- what the office does -------------------------------------------------------------
    def office_member(self, mid: str, member: Member) -> None:
        if mid in self.office_revoked:
            member = copy.copy(member)
            member.status = REVOKED
        self.office.members[mid] = member

    def office_card(self, h: str, card: Card) -> None:
        if h in self.office_revoked:
            card = copy.copy(card)
            card.status = REVOKED
        self.office.cards[h] = card

    def office_revoke(self, key: str) -> None:
        """A member id or a card hash, revoked at the office for good."""
        self.office_revoked.add(key)
        if key in self.office.members:
            self.office.members[key].status = REVOKED
        if key in self.office.cards:
            self.office.cards[key].status = REVOKED

    def approve(self, door: str, mid: str) -> None:
        """The office accepted a door's member (and its cards): they are office rows now."""
        rows = self.door(door)
        if mid in rows.members:
            self.office_member(mid, rows.members.pop(mid))
        for h in [h for h, c in rows.cards.items() if c.member == mid]:
            self.office_card(h, rows.cards.pop(h))

    def reject(self, door: str, mid: str) -> None:
        rows = self.door(door)
        rows.members.pop(mid, None)
        for h in [h for h, c in rows.cards.items() if c.member == mid]:
            rows.cards.pop(h)

    # -- what a host does at a door ---------------------------------------------------------
    def host_enrol(self, door: str, mid: str, member: Member | None, h: str) -> None:
        rows = self.door(door)
        if member is not None:
            rows.members[mid] = member
        rows.cards[h] = Card(mid)

    def host_revoke(self, door: str, key: str) -> None:
        self.revoked_at.setdefault(door, set()).add(key)

    # -- the question -----------------------------------------------------------------------
    def view(self, door: str) -> Rows:
        """The rows in force at `door` (copied): the office's, the host's own, and every
        revocation that door knows of."""
        rows = Rows(copy.deepcopy(self.office.members), copy.deepcopy(self.office.cards))
        own = self.door(door)
        rows.members.update(copy.deepcopy(own.members))
        rows.cards.update(copy.deepcopy(own.cards))
        gone = self.office_revoked | self.revoked_at.get(door, set())
        for mid, m in rows.members.items():
            if mid in gone:
                m.status = REVOKED
        for h, c in rows.cards.items():
            if h in gone:
                c.status = REVOKED
        return rows

    def may_grant(self, rows: Rows, h: str, at: datetime) -> bool:
        card = rows.cards.get(h)
        if card is None or card.status != ACTIVE:
            return False
        m = rows.members.get(card.member)
        if m is None or m.status != ACTIVE:
            return False
        day = at.astimezone(self.hours.tz).date()
        if (m.valid_from and day < m.valid_from) or (m.valid_until and day > m.valid_until):
            return False
        return m.plan == "subscriber" or (m.plan == "occasional" and self.hours.open_at(at))


@dataclass
class Timeline:
    """Per door: the states in force, each with the window in which it took effect."""

    rights: Rights
    starts: dict[str, list[datetime]] = field(default_factory=dict)
    changes: dict[str, list[tuple[datetime, datetime, Rows]]] = field(default_factory=dict)

    def commit(self, doors: list[str] | tuple[str, ...], began: datetime,
               done: datetime) -> None:
        """The rights now in the model reached `doors` between `began` and `done`."""
        for d in doors:
            self.starts.setdefault(d, []).append(began)
            self.changes.setdefault(d, []).append((began, done, self.rights.view(d)))

    def allowed(self, door: str, h: str, at: datetime) -> bool:
        starts = self.starts.get(door, [])
        i = bisect.bisect_right(starts, at) - 1
        if i < 0:
            return False
        _began, done, rows = self.changes[door][i]
        if self.rights.may_grant(rows, h, at):
            return True
        return at <= done and i > 0 and self.rights.may_grant(self.changes[door][i - 1][2],
                                                              h, at)


def compare_store(journal: dict[int, str], stored: dict[int, str], forged: dict[int, str],
                  conflicts: dict[int, str]) -> list[str]:
    """The office's events of one door against its journal ({seq: event id} each).

    `forged`: the numbers the suite signed with this door's own key, and their ids. Where
    the door used such a number too, the office keeps whichever came first and records the
    other in `conflicts` ({seq: the refused event's id}); no other conflict may exist.
    """
    problems = []
    for seq, eid in sorted(journal.items()):
        if seq in forged:
            pair = {stored.get(seq), conflicts.get(seq)}
            if pair != {eid, forged[seq]}:
                problems.append(f"#{seq}: the door's event {eid} and the forged {forged[seq]}: "
                                f"the office keeps {stored.get(seq)}, conflicts hold "
                                f"{conflicts.get(seq)}")
        elif stored.get(seq) != eid:
            problems.append(f"#{seq}: the office holds {stored.get(seq)}, the door {eid}")
    for seq, eid in sorted(forged.items()):
        if seq not in journal and stored.get(seq) != eid:
            problems.append(f"#{seq}: the event forged with the door's key is not stored "
                            f"({stored.get(seq)} instead of {eid})")
    extra = sorted(set(stored) - set(journal) - set(forged))
    if extra:
        problems.append(f"the office holds {len(extra)} event(s) the door never journalled "
                        f"(first #{extra[0]}: {stored[extra[0]]})")
    unexpected = sorted(set(conflicts) - (set(forged) & set(journal)))
    if unexpected:
        problems.append(f"conflicts recorded for #{unexpected[:5]} where nothing was forged")
    return problems


def allowed_alarm_kinds(forged_with_key: bool) -> frozenset[str]:
    """Alarm kinds a door may have beyond the refusals the suite counts exactly: only after a
    stolen key took some of its numbers, the conflicts and the journal renumbering that
    causes (a door told the office holds numbers it never issued takes a new journal)."""
    if forged_with_key:
        return frozenset({"event_conflict", "journal_replaced", "old_journal"})
    return frozenset()


def as_ids(rows: list[dict[str, Any]]) -> dict[int, str]:
    return {int(r["seq"]): str(r["id"]) for r in rows}
