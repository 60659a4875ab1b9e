"""The access decision: a pure function of credential, rules, time, clock trust, lockout and
what the card proved.

No I/O happens here, so every rule can be tested exhaustively and the door answers in
microseconds. The reasons are a closed, documented list (docs/decision.md); a decision carries
exactly one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from accessd.schedule import Schedule


class Plan(StrEnum):
    SUBSCRIBER = "subscriber"  # 24 hours a day, 7 days a week
    OCCASIONAL = "occasional"  # opening hours only


class Status(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class Reason(StrEnum):
    # granted
    SUBSCRIBER = "subscriber"
    OPENING_HOURS = "opening_hours"
    EXIT = "exit"
    # denied
    UNKNOWN_CREDENTIAL = "unknown_credential"
    CREDENTIAL_REVOKED = "credential_revoked"
    MEMBER_REVOKED = "member_revoked"
    MEMBER_SUSPENDED = "member_suspended"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    OUTSIDE_OPENING_HOURS = "outside_opening_hours"
    CLOSED_DAY = "closed_day"
    CLOCK_UNTRUSTED = "clock_untrusted"
    READER_LOCKED_OUT = "reader_locked_out"
    INVALID_RECORD = "invalid_record"  # the card's stored row holds a value that means nothing
    INTERNAL_ERROR = "internal_error"  # deciding failed unexpectedly: refused, journalled, alarm
    # denied: what the card proved (authenticated cards, docs/cards.md)
    AUTHENTICATION_FAILED = "authentication_failed"
    AUTHENTICATION_INCOMPLETE = "authentication_incomplete"
    KEY_VERSION_RETIRED = "key_version_retired"
    REPLAYED = "replayed"
    CARD_MISMATCH = "card_mismatch"
    NOT_AUTHENTICATED = "not_authenticated"


GRANT_REASONS = frozenset({Reason.SUBSCRIBER, Reason.OPENING_HOURS, Reason.EXIT})


class Proof(StrEnum):
    """What the presented card proved, as the reader and the card store established it."""

    UID_ONLY = "uid_only"  # a number: EM4100, or an NFC card read by its UID
    AUTHENTICATED = "authenticated"  # AES mutual authentication, or a verified SUN message
    FAILED = "failed"  # claimed to be an accessd card and failed the cryptography
    INCOMPLETE = "incomplete"  # left the field before the authentication finished
    KEY_RETIRED = "key_retired"  # holds keys of a master key version the site retired
    REPLAYED = "replayed"  # a SUN message whose read counter is not above the last one seen
    MISMATCH = "mismatch"  # authenticated, but written for another member than the cache's


_PROOF_DENIALS = {
    Proof.FAILED: Reason.AUTHENTICATION_FAILED,
    Proof.INCOMPLETE: Reason.AUTHENTICATION_INCOMPLETE,
    Proof.KEY_RETIRED: Reason.KEY_VERSION_RETIRED,
    Proof.REPLAYED: Reason.REPLAYED,
}


@dataclass(frozen=True, slots=True)
class CardCheck:
    """The card's side of a presentation: its proof, whether it was enrolled as an
    authenticated card, and the plans the site requires authenticated cards for."""

    proof: Proof = Proof.UID_ONLY
    enrolled_authenticated: bool = False
    required_for: frozenset[Plan] = frozenset()


UID_ONLY = CardCheck()


@dataclass(frozen=True, slots=True)
class Grant:
    """What the rule cache knows about a presented credential and its member."""

    credential_status: Status
    member_id: str
    member_name: str
    plan: Plan
    member_status: Status
    valid_from: date | None = None
    valid_until: date | None = None  # inclusive: valid through the end of that local day


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    reason: Reason
    member_id: str | None = None
    member_name: str | None = None
    plan: Plan | None = None


def _start_of(day: date, schedule: Schedule) -> datetime:
    return datetime.combine(day, time(0), tzinfo=schedule.tz)


def decide(
    record: Grant | None,
    *,
    now: datetime | None,
    clock_trusted: bool,
    schedule: Schedule,
    direction: str = "entry",
    locked_out: bool = False,
    card: CardCheck = UID_ONLY,
) -> Decision:
    """Decide whether the holder of a credential may pass now.

    `now` is the wall clock when `clock_trusted`; otherwise it is the latest instant known to
    have passed (from the journal) or None. Only what can be proven from it is used: an
    untrusted clock still admits subscribers whose validity is not known to have ended, and
    refuses everything that depends on the hour.

    `card` says what the card proved. A failed, unfinished, retired or replayed proof is a
    denial of its own, whoever the card claims to be; a card enrolled as authenticated, or a
    member whose plan requires one, is refused when it proved only its UID (a clone).
    """
    if locked_out:
        return Decision(False, Reason.READER_LOCKED_OUT)
    proof_denial = _PROOF_DENIALS.get(card.proof)
    if proof_denial is not None:
        if record is None:
            return Decision(False, proof_denial)
        return Decision(False, proof_denial, record.member_id, record.member_name, record.plan)
    if record is None:
        return Decision(False, Reason.UNKNOWN_CREDENTIAL)

    def deny(reason: Reason) -> Decision:
        return Decision(False, reason, record.member_id, record.member_name, record.plan)

    if card.proof is Proof.MISMATCH:
        return deny(Reason.CARD_MISMATCH)
    if card.proof is not Proof.AUTHENTICATED and (
            card.enrolled_authenticated or record.plan in card.required_for):
        return deny(Reason.NOT_AUTHENTICATED)

    if direction == "exit":  # nobody is kept inside: any known card opens from within
        return Decision(True, Reason.EXIT, record.member_id, record.member_name, record.plan)
    if record.credential_status is Status.REVOKED:
        return deny(Reason.CREDENTIAL_REVOKED)
    if record.member_status is Status.REVOKED:
        return deny(Reason.MEMBER_REVOKED)
    if record.member_status is Status.SUSPENDED or record.credential_status is Status.SUSPENDED:
        return deny(Reason.MEMBER_SUSPENDED)

    if record.valid_until is not None and record.valid_until < date.max and now is not None:
        end = _start_of(record.valid_until + timedelta(days=1), schedule)
        if now >= end:
            return deny(Reason.EXPIRED)
    if record.valid_from is not None:
        if now is None:
            return deny(Reason.CLOCK_UNTRUSTED)
        if now < _start_of(record.valid_from, schedule):
            return deny(Reason.CLOCK_UNTRUSTED if not clock_trusted else Reason.NOT_YET_VALID)

    if record.plan is Plan.SUBSCRIBER:
        return Decision(True, Reason.SUBSCRIBER, record.member_id, record.member_name,
                        record.plan)

    if not clock_trusted or now is None:
        return deny(Reason.CLOCK_UNTRUSTED)
    local = schedule.local(now)
    if schedule.is_closed_day(local.date()):
        return deny(Reason.CLOSED_DAY)
    if not schedule.within_hours(local):
        return deny(Reason.OUTSIDE_OPENING_HOURS)
    return Decision(True, Reason.OPENING_HOURS, record.member_id, record.member_name,
                    record.plan)
