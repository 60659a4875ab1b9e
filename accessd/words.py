"""What a person reads: decisions, alarms, opening hours and journal events in words.

The codes (`outside_opening_hours`, `door.held_open`) are the protocol's and stay in JSON and
on the wire; the host, who is not an administrator, reads these sentences instead (`accessd
why`, `log`, `status`, the daemon's console). Every reason of `accessd.decision.Reason` has
its words here (a test fails when a new reason has none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from accessd.decision import Reason
from accessd.schedule import WEEKDAYS, Schedule

DAY_NAMES = dict(zip(WEEKDAYS, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                "Saturday", "Sunday"), strict=True))


def days_words(days: frozenset[str] | set[str]) -> str:
    """"Monday to Friday", "Monday, Wednesday and Friday", "every day", "no day"."""
    idx = sorted(WEEKDAYS.index(d) for d in days if d in WEEKDAYS)
    if len(idx) == 7:
        return "every day"
    if not idx:
        return "on no day"
    runs: list[list[int]] = []
    for i in idx:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    parts = [DAY_NAMES[WEEKDAYS[r[0]]] if len(r) == 1 else
             f"{DAY_NAMES[WEEKDAYS[r[0]]]} to {DAY_NAMES[WEEKDAYS[r[-1]]]}" if len(r) > 2 else
             f"{DAY_NAMES[WEEKDAYS[r[0]]]} and {DAY_NAMES[WEEKDAYS[r[-1]]]}" for r in runs]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def hours_words(schedule: Schedule) -> str:
    """"09:00–18:00 Monday to Friday"."""
    return (f"{schedule.opens:%H:%M}–{schedule.closes:%H:%M} "
            f"{days_words(schedule.days)}")


# -- alarms ---------------------------------------------------------------------------------
_ALARMS = {
    "door.forced": "door forced open",
    "door.held_open_prealarm": "door open too long (warning)",
    "door.held_open": "door held open",
    "journal_unavailable": "journal cannot be written (disk full or read-only)",
    "internal_error": "a card could not be decided (internal error)",
}


def alarm_words(alarm: str) -> str:
    """An alarm id of the daemon (`door.held_open`, `reader_lockout:door`) in words."""
    if alarm.startswith("reader_lockout:"):
        return f"reader {alarm.split(':', 1)[1]} locked out after unknown cards"
    return _ALARMS.get(alarm, alarm.replace("_", " ").replace(".", " "))


# -- decisions ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Because:
    """What the words of a reason may use: who, the schedule, and what the rule cache says
    now about the member (dates, state), when it still knows them."""

    who: str
    schedule: Schedule
    day: date  # the site-local day of the decision
    valid_from: date | None = None
    valid_until: date | None = None
    status_now: str | None = None  # the member's state now, if known


def _closed_day(b: Because) -> str:
    if b.day in b.schedule.closures:
        return f"the site was closed on {b.day:%Y-%m-%d} (a closure in the opening hours)"
    return (f"occasional members do not enter on {DAY_NAMES[WEEKDAYS[b.day.weekday()]]}s "
            f"(they enter {hours_words(b.schedule)})")


def _suspended(b: Because) -> str:
    if b.status_now == "suspended":
        return f"{b.who} is suspended ('accessd resume' lifts it)"
    if b.status_now == "active":
        return f"{b.who} was suspended then (active again now)"
    return f"{b.who} was suspended"


REASON_WORDS: dict[Reason, Callable[[Because], str]] = {
    Reason.SUBSCRIBER: lambda b: "subscribers enter at any hour, every day",
    Reason.OPENING_HOURS: lambda b: (f"occasional members enter {hours_words(b.schedule)}, "
                                     "and it was within those hours"),
    Reason.EXIT: lambda b: "any enrolled card opens the door from inside (an exit reader)",
    Reason.UNKNOWN_CREDENTIAL: lambda b: ("this card is not enrolled (enrol it with 'accessd "
                                          "enroll')"),
    Reason.CREDENTIAL_REVOKED: lambda b: "this card was revoked, for good (enrol a new card)",
    Reason.MEMBER_REVOKED: lambda b: f"{b.who} was revoked, for good",
    Reason.MEMBER_SUSPENDED: _suspended,
    Reason.NOT_YET_VALID: lambda b: (
        f"their membership starts on {b.valid_from:%Y-%m-%d}" if b.valid_from
        else "their membership had not started yet"),
    Reason.EXPIRED: lambda b: (
        f"their membership ended on {b.valid_until:%Y-%m-%d}" if b.valid_until
        else "their membership had ended"),
    Reason.OUTSIDE_OPENING_HOURS: lambda b: (
        f"occasional members enter {hours_words(b.schedule)}"),
    Reason.CLOSED_DAY: _closed_day,
    Reason.CLOCK_UNTRUSTED: lambda b: (
        "the door's clock was not synchronised, and this entry depends on the hour "
        "(subscribers still enter; see 'accessd doctor')"),
    Reason.READER_LOCKED_OUT: lambda b: (
        "the reader was locked out for a minute after a burst of unknown cards"),
    Reason.INVALID_RECORD: lambda b: (
        "their record in the door's rules holds a value that means nothing "
        "('accessd status' lists it; enrol the member again or ask the office)"),
    Reason.INTERNAL_ERROR: lambda b: (
        "the door failed while deciding (an internal error: the daemon's log has it)"),
    Reason.AUTHENTICATION_FAILED: lambda b: (
        "the card failed its cryptographic check (a wrong key, or not a genuine card)"),
    Reason.AUTHENTICATION_INCOMPLETE: lambda b: (
        "the card left the reader before its check finished (hold it still a moment longer)"),
    Reason.KEY_VERSION_RETIRED: lambda b: (
        "the card holds keys the site has retired ('accessd card rekey' renews them)"),
    Reason.REPLAYED: lambda b: (
        "the card's message had been seen before (a replay, or a copy of the card)"),
    Reason.CARD_MISMATCH: lambda b: "the card was written for another member",
    Reason.NOT_AUTHENTICATED: lambda b: (
        "the card proved only its number while an authenticated card is required "
        "(a copy of the card, or an old card: issue one with 'accessd card issue')"),
    Reason.ACCESS_RIGHT: lambda b: (
        f"{b.who} holds an extra right at this door, and it was within its hours"),
    Reason.BOOKING: lambda b: (
        f"{b.who} booked this room (a booking also opens the entrance), from a little "
        "before its start until its end"),
    Reason.RESTRICTED: lambda b: (
        f"{b.who} has a restriction at this door at that time (set at the office: "
        "'accessd central right list')"),
    Reason.DOOR_NOT_ALLOWED: lambda b: (
        f"{b.who}'s plan does not open this door, and no right or booking does"),
    Reason.OUTSIDE_WINDOW: lambda b: (
        f"{b.who}'s extra right at this door was not open at that time"),
    Reason.OUTSIDE_BOOKING: lambda b: (
        f"{b.who} has a booking here, but not at that time (it opens from a little before "
        "its start until its end)"),
}


def reason_words(reason: str, because: Because) -> str:
    """The reason of a decision in words; a reason from a newer version as its code."""
    try:
        return REASON_WORDS[Reason(reason)](because)
    except ValueError:
        return f"reason {reason!r}"


SHORT_REASONS: dict[str, str] = {
    "subscriber": "subscriber",
    "opening_hours": "within opening hours",
    "exit": "exit",
    "exit_request": "exit button",
    "operator": "manual release",
    "unknown_credential": "card not enrolled",
    "credential_revoked": "card revoked",
    "member_revoked": "member revoked",
    "member_suspended": "member suspended",
    "not_yet_valid": "membership not started",
    "expired": "membership ended",
    "outside_opening_hours": "outside opening hours",
    "closed_day": "closed day",
    "clock_untrusted": "clock not synchronised",
    "reader_locked_out": "reader locked out",
    "invalid_record": "unusable record",
    "internal_error": "internal error",
    "authentication_failed": "card failed its check",
    "authentication_incomplete": "card removed too soon",
    "key_version_retired": "retired card keys",
    "replayed": "replayed card message",
    "card_mismatch": "card of another member",
    "not_authenticated": "authenticated card required",
    "access_right": "extra right",
    "booking": "booking",
    "restricted": "restriction",
    "door_not_allowed": "not this member's door",
    "outside_window": "outside their extra right's hours",
    "outside_booking": "outside their booking",
}
