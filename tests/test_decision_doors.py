"""Doors, access groups, rights, restrictions and bookings in the decision (docs/decision.md).

Unit cases for each new reason, then properties: windows and bookings stored in a real rule
cache (bookings through signed snapshots and deltas, cancellations included) decide as a
simple oracle on the raw rows says, at instants drawn around both daylight-saving changes of
Europe/Paris and at the edges (lead time, start, end, one second either side).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accessd.decision import (
    EVERY_DOOR,
    Booking,
    Grant,
    Plan,
    Reason,
    Status,
    decide,
)
from accessd.protocol.codec import encode
from accessd.protocol.rules import make_delta, make_snapshot
from accessd.protocol.signing import OfficeKey, PublicKeys
from accessd.schedule import Schedule, door_access, parse_window
from accessd.store.rules import RuleCache
from accessd.uplink.rulesync import RuleApplier

PARIS = ZoneInfo("Europe/Paris")
SCHEDULE = Schedule(PARIS, time(9), time(18), frozenset({"mon", "tue", "wed", "thu", "fri"}),
                    frozenset())
ACCESS = {"doors": [{"id": "entrance", "kind": "entrance", "closures": ["2026-05-04"]},
                    {"id": "work", "kind": "room"},
                    {"id": "room-a", "kind": "meeting_room"},
                    {"id": "room-b", "kind": "meeting_room"}],
          "plans": {"subscriber": ["*"], "occasional": ["entrance", "work"]},
          "booking_lead_min": 10}
DOORS = {d: door_access(ACCESS, d) for d in ("entrance", "work", "room-a", "room-b")}


def local(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=PARIS)


def grant(plan: Plan = Plan.OCCASIONAL, windows: tuple = (), bookings: tuple = ()) -> Grant:
    return Grant(Status.ACTIVE, "m1", "Zoé", plan, Status.ACTIVE, windows=windows,
                 bookings=bookings)


def at(record: Grant, door: str, when: datetime, trusted: bool = True) -> Reason:
    return decide(record, now=when, clock_trusted=trusted, schedule=SCHEDULE,
                  door=DOORS[door]).reason


MONDAY = (2026, 5, 11)  # an ordinary Monday
SATURDAY = (2026, 5, 9)


def test_a_plan_gives_its_access_group_s_doors():
    occ, sub = grant(), grant(Plan.SUBSCRIBER)
    assert at(occ, "entrance", local(*MONDAY, 10)) is Reason.OPENING_HOURS
    assert at(occ, "work", local(*MONDAY, 10)) is Reason.OPENING_HOURS
    assert at(occ, "room-a", local(*MONDAY, 10)) is Reason.DOOR_NOT_ALLOWED
    assert at(sub, "room-a", local(*SATURDAY, 3)) is Reason.SUBSCRIBER
    assert at(occ, "work", local(*MONDAY, 18)) is Reason.OUTSIDE_OPENING_HOURS
    assert decide(occ, now=local(*MONDAY, 10), clock_trusted=True, schedule=SCHEDULE,
                  door=EVERY_DOOR).reason is Reason.OPENING_HOURS  # no door rules: as before


def test_a_door_s_own_closure():
    occ = grant()
    assert at(occ, "entrance", local(2026, 5, 4, 10)) is Reason.CLOSED_DAY
    assert at(occ, "work", local(2026, 5, 4, 10)) is Reason.OPENING_HOURS
    assert at(grant(Plan.SUBSCRIBER), "entrance", local(2026, 5, 4, 10)) is Reason.SUBSCRIBER


def test_a_restriction_wins_over_every_grant():
    no_weekend_b = parse_window({"effect": "deny", "door": "room-b", "days": "sat,sun"})
    sub = grant(Plan.SUBSCRIBER, (no_weekend_b,))
    assert at(sub, "room-b", local(*SATURDAY, 10)) is Reason.RESTRICTED
    assert at(sub, "room-b", local(*MONDAY, 10)) is Reason.SUBSCRIBER
    assert at(sub, "room-a", local(*SATURDAY, 10)) is Reason.SUBSCRIBER
    booked = grant(Plan.SUBSCRIBER, (no_weekend_b,), (Booking(
        "room-b", local(*SATURDAY, 9), local(*SATURDAY, 12)),))
    assert at(booked, "room-b", local(*SATURDAY, 10)) is Reason.RESTRICTED
    # untrusted clock: a restriction that cannot be proven over refuses, at its door only
    assert at(sub, "room-b", local(*MONDAY, 10), trusted=False) is Reason.CLOCK_UNTRUSTED
    assert at(sub, "entrance", local(*MONDAY, 10), trusted=False) is Reason.SUBSCRIBER
    ended = grant(Plan.SUBSCRIBER, (parse_window({"effect": "deny", "door": "room-b",
                                                  "valid_until": "2026-05-01"}),))
    assert at(ended, "room-b", local(*MONDAY, 10), trusted=False) is Reason.SUBSCRIBER


def test_an_extra_right_opens_its_door_in_its_window():
    evenings = parse_window({"effect": "allow", "door": "room-a", "days": "mon",
                             "start": "18:00", "end": "20:00"})
    occ = grant(windows=(evenings,))
    assert at(occ, "room-a", local(*MONDAY, 18)) is Reason.ACCESS_RIGHT
    assert at(occ, "room-a", local(*MONDAY, 19, 59, 59)) is Reason.ACCESS_RIGHT
    assert at(occ, "room-a", local(*MONDAY, 20)) is Reason.OUTSIDE_WINDOW
    assert at(occ, "room-a", local(*MONDAY, 18), trusted=False) is Reason.CLOCK_UNTRUSTED
    # outside its hours the entrance still follows the plan
    assert at(occ, "entrance", local(*MONDAY, 19)) is Reason.OUTSIDE_OPENING_HOURS
    always = grant(windows=(parse_window({"effect": "allow", "door": "*",
                                          "valid_from": "2026-01-01"}),))
    assert at(always, "room-b", local(*SATURDAY, 3), trusted=False) is Reason.ACCESS_RIGHT
    assert at(always, "room-b", local(2025, 12, 31, 3), trusted=False) is \
        Reason.CLOCK_UNTRUSTED


def test_a_booking_opens_its_room_and_the_entrance_from_the_lead_time_until_the_end():
    b = Booking("room-a", local(*SATURDAY, 10), local(*SATURDAY, 11))
    occ = grant(bookings=(b,))
    assert at(occ, "room-a", local(*SATURDAY, 9, 49, 59)) is Reason.OUTSIDE_BOOKING
    assert at(occ, "room-a", local(*SATURDAY, 9, 50)) is Reason.BOOKING
    assert at(occ, "entrance", local(*SATURDAY, 9, 50)) is Reason.BOOKING
    assert at(occ, "room-a", local(*SATURDAY, 10, 59, 59)) is Reason.BOOKING
    assert at(occ, "room-a", local(*SATURDAY, 11)) is Reason.OUTSIDE_BOOKING
    assert at(occ, "room-b", local(*SATURDAY, 10)) is Reason.DOOR_NOT_ALLOWED
    assert at(occ, "room-a", local(*SATURDAY, 10), trusted=False) is Reason.CLOCK_UNTRUSTED
    assert at(grant(), "room-a", local(*SATURDAY, 10)) is Reason.DOOR_NOT_ALLOWED  # cancelled


def test_an_exit_reader_ignores_windows():
    occ = grant(windows=(parse_window({"effect": "deny", "door": "*"}),))
    assert decide(occ, now=local(*MONDAY, 10), clock_trusted=True, schedule=SCHEDULE,
                  door=DOORS["room-a"], direction="exit").reason is Reason.EXIT


# -- properties against an oracle ---------------------------------------------------------

KEY = OfficeKey.generate()
DST = [date(2026, 3, 29), date(2026, 10, 25)]  # spring forward, fall back (Europe/Paris)
HHMM = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from(
    [0, 15, 30, 59]))
DAYS = st.lists(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
                min_size=1, max_size=7, unique=True)


def instants() -> st.SearchStrategy[datetime]:
    """UTC instants on the days around either DST change, to the second."""
    return st.builds(lambda day, s: datetime.combine(day, time(0), tzinfo=UTC)
                     + timedelta(seconds=s),
                     st.sampled_from([d + timedelta(days=k) for d in DST for k in (-1, 0, 1)]),
                     st.integers(-3 * 3600, 27 * 3600))


@st.composite
def right_rows(draw: st.DrawFn, n: int) -> dict:
    start, end = sorted([draw(HHMM), draw(st.one_of(HHMM, st.just("24:00")))])
    if start == end:
        end = "24:00" if start != "24:00" else start
    row = {"id": f"r{n}", "member_id": "m1", "door": draw(st.sampled_from(
        ["*", "room-a", "entrance"])), "effect": draw(st.sampled_from(["allow", "deny"]))}
    if draw(st.booleans()):
        row["days"] = ",".join(draw(DAYS))
    if draw(st.booleans()):
        row["start"], row["end"] = start, end
    if draw(st.booleans()):
        first = draw(st.sampled_from(DST)) + timedelta(days=draw(st.integers(-2, 1)))
        row["valid_from"] = first.isoformat()
        row["valid_until"] = (first + timedelta(days=draw(st.integers(0, 2)))).isoformat()
    return row


def window_oracle(rows: list[dict], door: str, t: datetime) -> str:
    """The reason for an occasional member (plan: entrance and work) at `door` at `t`, from
    the raw rows, by string comparison of the local wall clock."""
    wall = t.astimezone(PARIS)
    hhmm, day = wall.strftime("%H:%M"), wall.date().isoformat()
    weekday = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][wall.weekday()]

    def open_(r: dict) -> bool:
        return (r.get("valid_from", "0000") <= day <= r.get("valid_until", "9999")
                and weekday in r.get("days", weekday).split(",")
                and r.get("start", "00:00") <= hhmm < r.get("end", "24:00"))

    mine = [r for r in rows if r["door"] in ("*", door)]
    if any(r["effect"] == "deny" and open_(r) for r in mine):
        return "restricted"
    if door == "entrance" and weekday not in ("sat", "sun") and "09:00" <= hhmm < "18:00":
        return "opening_hours"
    if any(r["effect"] == "allow" and open_(r) for r in mine):
        return "access_right"
    if door == "entrance":
        return "closed_day" if weekday in ("sat", "sun") else "outside_opening_hours"
    return "outside_window" if any(r["effect"] == "allow" for r in mine) else "door_not_allowed"


def cache_with(tmp_path, rows: list[dict], bookings: list[dict] = ()) -> RuleCache:  # type: ignore[assignment]
    rules = RuleCache(":memory:")
    applier = RuleApplier(rules, PublicKeys([KEY.public]), site="s1", door="room-a")
    doc = make_snapshot(KEY, site="s1", version=1, members=[
        {"id": "m1", "name": "Zoé", "plan": "occasional", "status": "active"}],
        credentials=[{"hash": "a" * 64, "member_id": "m1", "status": "active"}],
        rights=rows, bookings=bookings, access=ACCESS, schedule=SCHEDULE.to_dict())
    out = applier.handle(encode(doc), "snapshot")
    assert out.applied, out
    return rules


def tap(rules: RuleCache, door: str, t: datetime) -> Reason:
    access = door_access(ACCESS, door)
    record = rules.lookup("a" * 64, door, entrance=access.entrance,
                          since="2000-01-01T00:00:00Z")
    return decide(record, now=t, clock_trusted=True, schedule=SCHEDULE, door=access).reason


def window_edges(rows: list[dict]) -> list[datetime]:
    """The instants the rows' wall-clock bounds fall on, on the DST days and either side
    (both readings of an hour that occurs twice), a second either side."""
    out = []
    for r in rows:
        for bound in (r.get("start"), r.get("end")):
            if bound is None or bound == "24:00":
                continue
            h, m = map(int, bound.split(":"))
            for day in (d + timedelta(days=k) for d in DST for k in (-1, 0, 1)):
                for fold in (0, 1):
                    at_ = datetime.combine(day, time(h, m), tzinfo=PARIS).replace(fold=fold)
                    out += [at_.astimezone(UTC) + timedelta(seconds=s) for s in (-1, 0, 1)]
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 10**6), min_size=0, max_size=4).flatmap(
    lambda ns: st.tuples(*(right_rows(i) for i in range(len(ns))))),
    st.data(), st.sampled_from(["entrance", "room-a"]))
def test_windows_decide_as_the_oracle_says_across_dst(rows, data, door):
    edges = window_edges(list(rows))
    ts = data.draw(st.lists(st.one_of(instants(), *([st.sampled_from(edges)] if edges
                                                     else [])), min_size=1, max_size=8))
    rules = cache_with(None, list(rows))
    try:
        for t in ts:
            assert tap(rules, door, t) == window_oracle(list(rows), door, t), (rows, t)
    finally:
        rules.close()


@st.composite
def booking_rows(draw: st.DrawFn, n: int) -> dict:
    """A booking in local wall time on a DST day (or either side), converted as an office
    converts a calendar's local times: the instant the wall clock shows that time."""
    day = draw(st.sampled_from(DST)) + timedelta(days=draw(st.integers(-1, 1)))
    start = datetime.combine(day, time(draw(st.integers(0, 22)), draw(st.sampled_from(
        [0, 30]))), tzinfo=PARIS)
    end = start.astimezone(UTC) + timedelta(minutes=draw(st.sampled_from([30, 60, 150, 240])))
    text = "%Y-%m-%dT%H:%M:%SZ"
    return {"id": f"b{n}", "member_id": "m1",
            "door": draw(st.sampled_from(["room-a", "room-b"])),
            "start": start.astimezone(UTC).strftime(text), "end": end.strftime(text)}


def booking_oracle(rows: list[dict], gone: set[str], door: str, t: datetime,
                   lead: int) -> bool:
    for r in rows:
        if r["id"] in gone or not (door == "entrance" or r["door"] == door):
            continue
        start = datetime.fromisoformat(r["start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(r["end"].replace("Z", "+00:00"))
        if start - timedelta(minutes=lead) <= t < end:
            return True
    return False


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=4).flatmap(
    lambda ns: st.tuples(*(booking_rows(i) for i in range(len(ns))))),
    st.data(), st.sampled_from(["entrance", "room-a", "room-b"]))
def test_bookings_decide_as_the_oracle_says_with_lead_end_and_cancellation(rows, data, door):
    rows = list(rows)
    rules = cache_with(None, [], rows)
    try:
        cancelled = set(data.draw(st.lists(st.sampled_from([r["id"] for r in rows]),
                                           unique=True), label="cancelled"))
        if cancelled:  # the office's cancellation: a signed delta that removes them
            applier = RuleApplier(rules, PublicKeys([KEY.public]), site="s1", door="room-a")
            out = applier.handle(encode(make_delta(
                KEY, site="s1", version=2, base_version=1, removed_bookings=sorted(
                    cancelled))), "delta")
            assert out.applied, out
        edges = []
        for r in rows:  # the lead time, the start and the end, a second either side
            for text in (r["start"], r["end"]):
                at_ = datetime.fromisoformat(text.replace("Z", "+00:00"))
                edges += [at_ + timedelta(seconds=s) for s in (-1, 0, 1)]
                edges += [at_ - timedelta(minutes=10, seconds=s) for s in (-1, 0, 1)]
        ts = data.draw(st.lists(st.one_of(instants(), st.sampled_from(edges)), min_size=1,
                                max_size=8), label="instants")
        for t in ts:
            granted = tap(rules, door, t) is Reason.BOOKING
            if door == "entrance":
                reason = tap(rules, door, t)
                wall = t.astimezone(PARIS)
                hours = wall.weekday() < 5 and time(9) <= wall.time() < time(18)
                granted = reason in (Reason.BOOKING, Reason.OPENING_HOURS) and not (
                    reason is Reason.OPENING_HOURS and not hours)
                if hours:
                    assert reason is Reason.OPENING_HOURS  # the plan comes first
                    continue
            assert granted == booking_oracle(rows, cancelled, door, t, 10), (rows, t,
                                                                              cancelled)
    finally:
        rules.close()


def test_the_documented_example_site_decides_as_docs_decision_md_says():
    """Each row of the example table in docs/decision.md, decided for real."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "decision.md").read_text()
    table = text[text.index("### Example: an entrance and two bookable rooms"):]
    table = table[:table.index("\n## ")]
    days = {"Tuesday": 8, "Saturday": 12, "Sunday": 13}  # December 2026
    saturday = lambda h, m=0: datetime(2026, 12, 12, h, m, tzinfo=PARIS)  # noqa: E731
    people = {
        "Zoé": grant(bookings=(Booking("room-a", saturday(10), saturday(11)),)),
        "Hugo": grant(Plan.SUBSCRIBER, (parse_window({"effect": "deny", "door": "room-b",
                                                      "days": "sat,sun"}),)),
        "Léa": grant(windows=(parse_window({"effect": "allow", "door": "room-b",
                                            "days": "tue", "start": "18:00",
                                            "end": "21:00"}),)),
    }
    rows = re.findall(r"^\| (\w+), `?([\w-]+)`?, (\w+) (\d\d):(\d\d)(, clock not synchronised)? "
                      r"\| (granted|denied) \| `(\w+)`", table, re.M)
    assert len(rows) == 11
    for who, door, day, h, m, untrusted, result, reason in rows:
        when = datetime(2026, 12, days[day], int(h), int(m), tzinfo=PARIS)
        d = decide(people[who], now=when, clock_trusted=not untrusted, schedule=SCHEDULE,
                   door=DOORS[door])
        assert (("granted" if d.granted else "denied"), str(d.reason)) == (result, reason), \
            (who, door, day, h, m)
