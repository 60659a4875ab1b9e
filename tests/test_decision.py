"""The decision, exhaustively and by property: who enters when, and why not."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accessd.decision import GRANT_REASONS, Grant, Plan, Reason, Status, decide
from accessd.schedule import Schedule

PARIS = ZoneInfo("Europe/Paris")
WEEKDAYS = frozenset({"mon", "tue", "wed", "thu", "fri"})
SCHEDULE = Schedule(PARIS, time(9), time(18), WEEKDAYS, frozenset({date(2026, 12, 25)}))


def member(plan: Plan = Plan.SUBSCRIBER, **kw: object) -> Grant:
    base = {"credential_status": Status.ACTIVE, "member_id": "m-1", "member_name": "Ana",
            "plan": plan, "member_status": Status.ACTIVE}
    base.update(kw)
    return Grant(**base)  # type: ignore[arg-type]


def paris(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=PARIS).astimezone(UTC)


def at(record: Grant | None, when: datetime, trusted: bool = True, **kw: object):
    return decide(record, now=when, clock_trusted=trusted, schedule=SCHEDULE, **kw)  # type: ignore[arg-type]


WED = (2026, 11, 25)


@pytest.mark.parametrize(("record", "when", "reason"), [
    (member(), paris(*WED, 3), Reason.SUBSCRIBER),
    (member(Plan.OCCASIONAL), paris(*WED, 9), Reason.OPENING_HOURS),
    (member(Plan.OCCASIONAL), paris(*WED, 17, 59, 59), Reason.OPENING_HOURS),
    (member(Plan.OCCASIONAL), paris(*WED, 18), Reason.OUTSIDE_OPENING_HOURS),
    (member(Plan.OCCASIONAL), paris(*WED, 8, 59, 59), Reason.OUTSIDE_OPENING_HOURS),
    (member(Plan.OCCASIONAL), paris(2026, 11, 28, 10), Reason.CLOSED_DAY),  # Saturday
    (member(Plan.OCCASIONAL), paris(2026, 12, 25, 10), Reason.CLOSED_DAY),  # closure
    (member(), paris(2026, 12, 25, 10), Reason.SUBSCRIBER),  # subscribers: every day
    (None, paris(*WED, 10), Reason.UNKNOWN_CREDENTIAL),
    (member(credential_status=Status.REVOKED), paris(*WED, 10), Reason.CREDENTIAL_REVOKED),
    (member(member_status=Status.REVOKED), paris(*WED, 10), Reason.MEMBER_REVOKED),
    (member(member_status=Status.SUSPENDED), paris(*WED, 10), Reason.MEMBER_SUSPENDED),
    (member(valid_from=date(2026, 11, 26)), paris(*WED, 23, 59), Reason.NOT_YET_VALID),
    (member(valid_from=date(2026, 11, 25)), paris(*WED, 0, 0), Reason.SUBSCRIBER),
    (member(valid_until=date(2026, 11, 25)), paris(*WED, 23, 59, 59), Reason.SUBSCRIBER),
    (member(valid_until=date(2026, 11, 24)), paris(*WED, 0, 0), Reason.EXPIRED),
])
def test_table(record: Grant | None, when: datetime, reason: Reason) -> None:
    d = at(record, when)
    assert d.reason is reason
    assert d.granted == (reason in GRANT_REASONS)


def test_validity_ends_at_local_midnight() -> None:
    m = member(valid_until=date(2026, 3, 28))
    assert at(m, paris(2026, 3, 28, 23, 59, 59)).granted
    assert at(m, paris(2026, 3, 29, 0, 0, 0)).reason is Reason.EXPIRED


def test_untrusted_clock_admits_subscribers_refuses_hours() -> None:
    assert at(member(), paris(*WED, 12), trusted=False).granted
    d = at(member(Plan.OCCASIONAL), paris(*WED, 12), trusted=False)
    assert d.reason is Reason.CLOCK_UNTRUSTED and not d.granted


def test_untrusted_clock_still_refuses_known_expiry() -> None:
    # `now` is then the last instant known to have passed: expiry before it is certain
    m = member(valid_until=date(2026, 1, 1))
    assert at(m, paris(*WED, 12), trusted=False).reason is Reason.EXPIRED
    assert at(member(valid_from=date(2027, 1, 1)), None, trusted=False).reason is \
        Reason.CLOCK_UNTRUSTED
    assert at(member(), None, trusted=False).granted


def test_lockout_refuses_everyone_and_exit_reader_lets_members_out() -> None:
    assert at(member(), paris(*WED, 12), locked_out=True).reason is Reason.READER_LOCKED_OUT
    d = at(member(member_status=Status.SUSPENDED), paris(*WED, 22), direction="exit")
    assert d.granted and d.reason is Reason.EXIT
    assert not at(None, paris(*WED, 12), direction="exit").granted


def test_dst_days_keep_local_hours() -> None:
    # 2026-03-29 clocks go forward at 02:00; 2026-10-25 back at 03:00 (both Sundays)
    sched = Schedule(PARIS, time(9), time(18), frozenset({"sun"}), frozenset())
    occ = member(Plan.OCCASIONAL)
    for day in ((2026, 3, 29), (2026, 10, 25)):
        assert decide(occ, now=paris(*day, 9), clock_trusted=True, schedule=sched).granted
        assert not decide(occ, now=paris(*day, 8, 59), clock_trusted=True,
                          schedule=sched).granted
        assert not decide(occ, now=paris(*day, 18), clock_trusted=True, schedule=sched).granted


instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                        timezones=st.just(UTC))
dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1))
plans = st.sampled_from(list(Plan))
statuses = st.sampled_from(list(Status))
zones = st.sampled_from(["Europe/Paris", "America/New_York", "Asia/Kolkata", "Pacific/Chatham",
                         "Australia/Lord_Howe", "UTC", "America/St_Johns"])


@st.composite
def grants(draw: st.DrawFn) -> Grant:
    return Grant(draw(statuses), "m", "n", draw(plans), draw(statuses),
                 draw(st.none() | dates), draw(st.none() | dates))


@given(grants(), instants, st.booleans(), zones)
def test_expired_or_revoked_never_opens(g: Grant, now: datetime, trusted: bool, tz: str
                                        ) -> None:
    sched = Schedule(ZoneInfo(tz), time(9), time(18), WEEKDAYS, frozenset())
    d = decide(g, now=now, clock_trusted=trusted, schedule=sched)
    local_day = now.astimezone(ZoneInfo(tz)).date()
    # the refusal docs/decision.md gives, first match wins; None: not refused for validity
    expected = (
        Reason.CREDENTIAL_REVOKED if g.credential_status is Status.REVOKED
        else Reason.MEMBER_REVOKED if g.member_status is Status.REVOKED
        else Reason.MEMBER_SUSPENDED if Status.SUSPENDED in (g.credential_status,
                                                            g.member_status)
        else Reason.EXPIRED if g.valid_until is not None and local_day > g.valid_until
        else (Reason.NOT_YET_VALID if trusted else Reason.CLOCK_UNTRUSTED)
        if g.valid_from is not None and local_day < g.valid_from
        else None)
    if expected is not None:
        assert (d.granted, d.reason) == (False, expected)
    else:
        assert d.reason not in {Reason.CREDENTIAL_REVOKED, Reason.MEMBER_REVOKED,
                                Reason.MEMBER_SUSPENDED, Reason.EXPIRED, Reason.NOT_YET_VALID}
    assert d.granted == (d.reason in GRANT_REASONS)


@given(instants, zones, st.booleans(),
       st.sets(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"])))
def test_occasional_never_outside_schedule(now: datetime, tz: str, trusted: bool,
                                           days: set[str]) -> None:
    zone = ZoneInfo(tz)
    sched = Schedule(zone, time(9), time(18), frozenset(days), frozenset())
    d = decide(member(Plan.OCCASIONAL), now=now, clock_trusted=trusted, schedule=sched)
    local = now.astimezone(zone)
    inside = (time(9) <= local.time() < time(18)
              and ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[local.weekday()] in days)
    assert d.granted == (inside and trusted)


@given(instants, st.integers(min_value=-48, max_value=48))
def test_subscriber_admitted_at_any_hour(now: datetime, shift: int) -> None:
    d = decide(member(), now=now + timedelta(hours=shift), clock_trusted=True,
               schedule=SCHEDULE)
    assert d.granted and d.reason is Reason.SUBSCRIBER


@given(st.builds(Grant, statuses, st.just("m"), st.just("n"), plans, statuses,
                 st.none() | st.dates(), st.none() | st.dates()),
       instants, st.booleans(), zones)
def test_any_calendar_day_is_decided_never_raised(g: Grant, now: datetime, trusted: bool,
                                                  tz: str) -> None:
    """9999-12-31 ("for ever") or 0001-01-01 in a stored row must not make a tap raise."""
    sched = Schedule(ZoneInfo(tz), time(9), time(18), WEEKDAYS, frozenset())
    d = decide(g, now=now, clock_trusted=trusted, schedule=sched)
    assert d.granted == (d.reason in GRANT_REASONS)


def test_valid_until_the_last_day_of_the_calendar_is_for_ever() -> None:
    assert at(member(valid_until=date.max), paris(*WED, 3)).reason is Reason.SUBSCRIBER
