"""The access decision: a pure function of credential, rules, door, time, clock trust, lockout
and what the card proved.

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
    ACCESS_RIGHT = "access_right"  # a member's extra right at this door, within its window
    BOOKING = "booking"  # a booking of this room (any room at an entrance), lead time to end
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
    RESTRICTED = "restricted"  # a restriction of the member covers this door now
    DOOR_NOT_ALLOWED = "door_not_allowed"  # neither the plan, a right nor a booking gives it
    OUTSIDE_WINDOW = "outside_window"  # the member's rights at this door are not open now
    OUTSIDE_BOOKING = "outside_booking"  # the member's bookings here are not now
    INVALID_RECORD = "invalid_record"  # the card's stored row holds a value that means nothing
    INTERNAL_ERROR = "internal_error"  # deciding failed unexpectedly: refused, journalled, alarm
    # denied: what the card proved (authenticated cards, docs/cards.md)
    AUTHENTICATION_FAILED = "authentication_failed"
    AUTHENTICATION_INCOMPLETE = "authentication_incomplete"
    KEY_VERSION_RETIRED = "key_version_retired"
    REPLAYED = "replayed"
    CARD_MISMATCH = "card_mismatch"
    NOT_AUTHENTICATED = "not_authenticated"


GRANT_REASONS = frozenset({Reason.SUBSCRIBER, Reason.OPENING_HOURS, Reason.EXIT,
                           Reason.ACCESS_RIGHT, Reason.BOOKING})
EVERY_DAY = 0x7F  # weekday bit mask, Monday = bit 0
WHOLE_DAY = (0, 24 * 60)


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
class Window:
    """A member's extra right (`allow`) or restriction (deny) at a door (or "*": every door):
    weekdays, a time of day [start, end) in minutes of site time, valid from/until (days,
    inclusive). Local wall-clock times: 09:00 is 09:00 on both daylight-saving Sundays."""

    allow: bool
    door: str = "*"
    days: int = EVERY_DAY
    start: int = 0
    end: int = 24 * 60
    valid_from: date | None = None
    valid_until: date | None = None

    def covers(self, local: datetime) -> bool:
        """Whether the window is open at the site-local wall-clock time `local`."""
        day = local.date()
        if (self.valid_from is not None and day < self.valid_from) or \
                (self.valid_until is not None and day > self.valid_until):
            return False
        minute = local.hour * 60 + local.minute
        return bool(self.days >> day.weekday() & 1) and self.start <= minute < self.end

    @property
    def all_hours(self) -> bool:
        """Every day, all day: only its validity dates depend on the time."""
        return self.days == EVERY_DAY and (self.start, self.end) == WHOLE_DAY


@dataclass(frozen=True, slots=True)
class Booking:
    """A booking of the room behind `door` by the member: [start, end), aware instants."""

    door: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class DoorAccess:
    """What the site's rules say about the door that decides (docs/decision.md): which plans'
    access groups include it, whether it is an entrance (any room's booking opens it), its
    own closures (no opening-hours access on those days) and the bookings' lead time.
    The default is a site without door rules: every plan at every door."""

    door: str | None = None
    plans: frozenset[Plan] = frozenset(Plan)
    entrance: bool = False
    closures: frozenset[date] = frozenset()
    booking_lead: timedelta = timedelta(0)


EVERY_DOOR = DoorAccess()


@dataclass(frozen=True, slots=True)
class Grant:
    """What the rule cache knows about a presented credential and its member: with its rights
    and restrictions (`windows`) and bookings, those that may concern the deciding door."""

    credential_status: Status
    member_id: str
    member_name: str
    plan: Plan
    member_status: Status
    valid_from: date | None = None
    valid_until: date | None = None  # inclusive: valid through the end of that local day
    windows: tuple[Window, ...] = ()
    bookings: tuple[Booking, ...] = ()


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
    door: DoorAccess = EVERY_DOOR,
) -> Decision:
    """Decide whether the holder of a credential may pass now.

    `now` is the wall clock when `clock_trusted`; otherwise it is the latest instant known to
    have passed (from the journal) or None. Only what can be proven from it is used: an
    untrusted clock still admits subscribers whose validity is not known to have ended, and
    refuses everything that depends on the hour.

    `card` says what the card proved. A failed, unfinished, retired or replayed proof is a
    denial of its own, whoever the card claims to be; a card enrolled as authenticated, or a
    member whose plan requires one, is refused when it proved only its UID (a clone).

    `door` is what the site's rules say about this door. A restriction covering the door now
    refuses (`restricted`) whatever else would grant; then the plan's access group (its
    doors: a subscriber at any hour, an occasional member in opening hours), an extra right
    open now, a booking from its lead time before the start until the end. Windows and
    bookings depend on the hour: with an untrusted clock only a right open every day, all
    day, can grant, and a restriction that cannot be proven over refuses (`clock_untrusted`).
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

    trusted = clock_trusted and now is not None
    local = schedule.local(now) if now is not None else None
    windows = [w for w in record.windows if w.door == "*" or w.door == door.door]
    for w in windows:
        if w.allow:
            continue
        if trusted:
            if w.covers(local):  # type: ignore[arg-type]
                return deny(Reason.RESTRICTED)
        elif not _over(w, now, schedule):
            return deny(Reason.CLOCK_UNTRUSTED)

    plan_reason = None
    if record.plan in door.plans:
        if record.plan is Plan.SUBSCRIBER:
            return Decision(True, Reason.SUBSCRIBER, record.member_id, record.member_name,
                            record.plan)
        if not trusted:
            plan_reason = Reason.CLOCK_UNTRUSTED
        else:
            day = local.date()  # type: ignore[union-attr]
            if schedule.is_closed_day(day) or day in door.closures:
                plan_reason = Reason.CLOSED_DAY
            elif not schedule.within_hours(local):  # type: ignore[arg-type]
                plan_reason = Reason.OUTSIDE_OPENING_HOURS
            else:
                return Decision(True, Reason.OPENING_HOURS, record.member_id,
                                record.member_name, record.plan)

    allows = [w for w in windows if w.allow]
    for w in allows:
        open_now = w.covers(local) if trusted else (w.all_hours and _begun(w, now, schedule))
        if open_now:  # type: ignore[arg-type]
            return Decision(True, Reason.ACCESS_RIGHT, record.member_id, record.member_name,
                            record.plan)
    bookings = [b for b in record.bookings if door.entrance or b.door == door.door]
    if trusted:
        for b in bookings:
            if b.start - door.booking_lead <= now < b.end:  # type: ignore[operator]
                return Decision(True, Reason.BOOKING, record.member_id, record.member_name,
                                record.plan)
    if plan_reason is not None:
        return deny(plan_reason)
    if (allows or bookings) and not trusted:
        return deny(Reason.CLOCK_UNTRUSTED)
    if bookings:
        return deny(Reason.OUTSIDE_BOOKING)
    if allows:
        return deny(Reason.OUTSIDE_WINDOW)
    return deny(Reason.DOOR_NOT_ALLOWED)


def _over(w: Window, known: datetime | None, schedule: Schedule) -> bool:
    """Whether window `w` is known to have ended by the instant `known` (an untrusted clock's
    latest instant known to have passed)."""
    return w.valid_until is not None and known is not None and \
        known >= _start_of(w.valid_until + timedelta(days=1), schedule)


def _begun(w: Window, known: datetime | None, schedule: Schedule) -> bool:
    """Whether window `w` is known to be valid at `known`: begun, and not known to be over."""
    if w.valid_from is not None and (known is None or known < _start_of(w.valid_from,
                                                                          schedule)):
        return False
    return not _over(w, known, schedule)
