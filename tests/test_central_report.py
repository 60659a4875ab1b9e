"""Billing a host can defend: visits in progress wait, the CSV keeps its columns, hours the
office does not bill are warned about, an unknown site is an error (docs/central.md)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from accessd.central.cli import main
from accessd.central.report import (
    HOURS_COLUMNS,
    VISIT_COLUMNS,
    monthly_billing,
    monthly_hours,
    monthly_visits,
)
from accessd.central.store import open_store

PARIS = ZoneInfo("Europe/Paris")


def at(day: int, hh: int, mm: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hh, mm, tzinfo=PARIS)


def event(seq: int, when: datetime, member: str, *, reason: str = "opening_hours",
          plan: str = "occasional", door: str = "d1") -> dict:
    return {"v": 1, "site": "s1", "door": door, "seq": seq, "id": f"{door}-{seq}",
            "ts": when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "type": "access.granted", "result": "granted", "reason": reason,
            "member_id": member, "member_name": member.title(), "plan": plan,
            "clock_trusted": True, "detail": {}}


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "central.db")
    s.set_site("s1", name="Morez", timezone="Europe/Paris", schedule={
        "timezone": "Europe/Paris", "opens": "09:00", "closes": "18:00",
        "days": ["mon", "tue", "wed", "thu", "fri"], "closures": []})
    yield s
    s.close()


def run(capsys, db, *argv: str) -> tuple[int, str, str]:
    code = main(["central", "report", "--store", str(db), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_documented_example_in_progress_then_closed_at_closing_time(store):
    """docs/central.md: Zoé badges in at 14:00 and 15:30 on 3 November, never out."""
    store.store_events([event(1, at(3, 14), "zoe"), event(2, at(3, 15, 30), "zoe")])
    during = monthly_billing(store, "s1", "2026-11", now=at(3, 16))
    assert [v.closed_by for v in during.visits] == ["in_progress"]
    assert during.billed == [] and monthly_hours(store, "s1", "2026-11", now=at(3, 16)) == []
    assert during.in_progress[0].end == at(3, 18)
    after = monthly_billing(store, "s1", "2026-11", now=at(3, 18, 30))
    assert [(v.closed_by, v.hours) for v in after.visits] == [("closing_time", 4.0)]
    assert monthly_hours(store, "s1", "2026-11", now=at(3, 18, 30)) == [{
        "site": "s1", "month": "2026-11", "member_id": "zoe", "member_name": "Zoe",
        "visits": 1, "hours": 4.0, "visits_closed_at_closing_time": 1,
        "visits_without_end": 0, "booked_hours": 0.0, "billing": "measured",
        "billed_hours": 4.0}]
    # with an exit reader, her exit at 16:30 ends the visit: billed from then on
    store.store_events([event(3, at(3, 16, 30), "zoe", reason="exit")])
    v, = monthly_visits(store, "s1", "2026-11", now=at(3, 16, 31))
    assert (v.closed_by, v.hours) == ("exit", 2.5)


def test_a_visit_in_progress_through_the_cli_is_noted_and_not_billed(tmp_path, capsys):
    """The real clock: a site open all day, an entry a minute ago."""
    now = datetime.now(PARIS)
    if now.time() < time(0, 2) or now.time() >= time(23, 58):
        pytest.skip("too close to midnight for a visit in progress today")
    s = open_store(tmp_path / "central.db")
    s.set_site("s1", timezone="Europe/Paris", schedule={
        "timezone": "Europe/Paris", "opens": "00:00", "closes": "23:59",
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "closures": []})
    s.store_events([event(1, now - timedelta(minutes=1), "zoe")])
    s.close()
    code, out, err = run(capsys, tmp_path / "central.db", "--site", "s1", "--month",
                         f"{now:%Y-%m}")
    assert code == 0
    assert out == f"no occasional visits at s1 in {now:%Y-%m}\n"
    assert err == (f"accessd: note: 1 visit in progress, billed once closed (at "
                   f"{now:%Y-%m-%d} 23:59 {now:%Z} unless an exit comes first)\n")


def test_the_csv_has_the_same_columns_empty_or_not(tmp_path, capsys, store):
    store.store_events([event(1, at(2, 9, 30), "zoe"), event(2, at(2, 12), "zoe",
                                                             reason="exit")])
    db = tmp_path / "central.db"
    for extra, columns in (((), HOURS_COLUMNS), (("--visits",), VISIT_COLUMNS)):
        _, full, _ = run(capsys, db, "--site", "s1", "--month", "2026-11", "--csv", *extra)
        _, empty, _ = run(capsys, db, "--site", "s1", "--month", "2026-12", "--csv", *extra)
        assert empty == ",".join(columns) + "\n"
        rows = list(csv.DictReader(io.StringIO(full)))
        assert full.splitlines()[0] == ",".join(columns) and len(rows) == 1
    _, full, _ = run(capsys, db, "--site", "s1", "--month", "2026-11", "--csv", "--visits")
    row, = csv.DictReader(io.StringIO(full))
    assert row["entered_at"] == "2026-11-02T09:30+01:00" and row["left_at"] == \
        "2026-11-02T12:00+01:00" and row["hours"] == "2.5"


def test_hours_the_office_does_not_bill_are_warned_about_never_zero_silently(tmp_path, capsys,
                                                                             store):
    """The door lets occasional members in until 21:00; the office bills 09:00-18:00."""
    store.store_events([
        event(1, at(3, 19, 12), "zoe"),  # after the office's closing time, no exit
        event(2, at(4, 7, 30), "max"), event(3, at(4, 8, 30), "max", reason="exit"),
        event(4, at(4, 10), "max"), event(5, at(4, 11), "max", reason="exit"),
    ])
    billing = monthly_billing(store, "s1", "2026-11", now=at(20, 12))
    assert [v.closed_by for v in billing.without_end] == ["no_end"]
    warning, = billing.warnings
    assert warning.startswith("2 visits began outside the office's opening hours (09:00–18:00 "
                              "Monday to Friday, Europe/Paris), the first by Zoe on 2026-11-03 "
                              "19:12 CET")
    assert "1 of them had no exit after closing time and are not billed" in warning
    code, out, err = run(capsys, tmp_path / "central.db", "--site", "s1", "--month", "2026-11")
    assert code == 0 and err == f"accessd: warning: {warning}\n"
    assert out.splitlines() == [
        "Max                              2 visits    2.00 h",
        "Zoe                              0 visits    0.00 h  (1 not billed: no end)"]
    code, out, err = run(capsys, tmp_path / "central.db", "--site", "s1", "--month", "2026-11",
                         "--visits")
    assert "2026-11-03 19:12 CET → ?   0.00 h  Zoe  (no exit, entered after closing time: " \
           "not billed)" in out
    assert "2026-11-04 07:30 CET → 08:30 CET   1.00 h  Max" in out


def test_an_unknown_site_and_a_bad_month_are_errors(tmp_path, capsys, store):
    db = tmp_path / "central.db"
    code, out, err = run(capsys, db, "--site", "nowhere", "--month", "2026-11")
    assert code == 1 and not out
    assert err.startswith("accessd: error: unknown site 'nowhere'") and err.count("\n") == 1
    code, out, err = run(capsys, db, "--site", "s1", "--month", "2026-1")
    assert code == 1 and err.startswith("accessd: error: month: expected YYYY-MM")


def test_a_site_known_only_by_its_events_is_reported(tmp_path, capsys):
    s = open_store(tmp_path / "central.db")
    s.store_events([event(1, at(2, 9, 30), "zoe"), event(2, at(2, 12), "zoe", reason="exit")])
    s.close()
    code, out, _ = run(capsys, tmp_path / "central.db", "--site", "s1", "--month", "2026-11")
    assert code == 0 and out.startswith("Zoe ") and "2.50 h" in out
