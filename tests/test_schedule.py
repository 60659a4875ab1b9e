"""A schedule's meaning is checked, not only its shape: zones zoneinfo knows, real days."""

from __future__ import annotations

import re
from datetime import date, time

import pytest

from accessd.errors import ScheduleError
from accessd.schedule import Schedule, check_calendar

OK = {"timezone": "Europe/Paris", "opens": "09:00", "closes": "18:00",
      "days": ["mon", "tue"], "closures": ["2026-12-25"]}


def test_a_good_schedule_round_trips() -> None:
    s = Schedule.from_dict(OK)
    assert (s.tz.key, s.opens, s.closes) == ("Europe/Paris", time(9), time(18))
    assert s.closures == frozenset({date(2026, 12, 25)})
    assert Schedule.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(("change", "field"), [
    ({"timezone": "Europe/Pariss"}, "schedule.timezone"),
    ({"timezone": "../../etc/passwd"}, "schedule.timezone"),
    ({"timezone": ""}, "schedule.timezone"),
    ({"timezone": 1}, "schedule.timezone"),
    ({"closures": ["2026-02-30"]}, "schedule.closures"),
    ({"closures": ["2026-2-3"]}, "schedule.closures"),
    ({"closures": ["２０２６-01-01"]}, "schedule.closures"),
    ({"closures": "2026-12-25"}, "schedule.closures"),
    ({"opens": "24:00"}, "schedule.opens"),
    ({"opens": "1٣:00"}, "schedule.opens"),  # not ASCII digits
    ({"closes": "08:00"}, "schedule.closes"),
    ({"days": ["monday"]}, "schedule.days"),
    ({"days": "mon"}, "schedule.days"),
])
def test_a_schedule_that_means_nothing_is_refused_naming_the_field(change, field) -> None:
    with pytest.raises(ScheduleError, match=f"^{re.escape(field)}: ") as err:
        Schedule.from_dict({**OK, **change})
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


@pytest.mark.parametrize("data", [None, [], "x", {"timezone": "UTC"}])
def test_not_a_schedule_at_all(data) -> None:
    with pytest.raises(ScheduleError):
        Schedule.from_dict(data)


def test_check_calendar_covers_the_schedule_and_validity_dates() -> None:
    check_calendar({"schedule": OK, "members": [{"id": "a", "valid_until": "2028-02-29"}]})
    check_calendar({"members": [{"id": "a"}]})
    with pytest.raises(ScheduleError, match="member 'a': valid_until: '2027-02-29'"):
        check_calendar({"members": [{"id": "a", "valid_until": "2027-02-29"}]})
    with pytest.raises(ScheduleError, match=r"schedule\.timezone"):
        check_calendar({"schedule": {**OK, "timezone": "Europe/Pariss"}, "members": []})
