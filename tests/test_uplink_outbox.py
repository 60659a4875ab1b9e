"""The outbox's window and resend rules, over a real journal and a fake link."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accessd.events import Event, EventType, JournalEntry
from accessd.protocol.codec import EVENT_VERSION
from accessd.store.journal import Journal
from accessd.uplink.outbox import Outbox, event_message


class Link:
    def __init__(self) -> None:
        self.sent: list[int] = []
        self.floors: list[int | None] = []
        self.up = True

    def __call__(self, entries) -> int:
        if not self.up:
            return 0
        for entry, floor in entries:
            self.sent.append(entry.seq)
            self.floors.append(floor)
        return len(entries)


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal(tmp_path / "journal.db", "s1", "d1")
    j.append_many([Event(EventType.ACCESS_GRANTED) for _ in range(25)])
    yield j
    j.close()


def test_window_then_acks_then_timeout_with_backoff(journal):
    now = [0.0]
    link = Link()
    box = Outbox(journal, link, window=10, ack_timeout_s=5, clock=lambda: now[0])
    assert box.pump() == 0  # not connected: nothing goes out
    box.on_connected()
    assert box.pump() == 10 and link.sent == list(range(1, 11))
    assert box.pump() == 0  # the window is full
    box.on_ack(4)
    assert journal.acked_seq == 4 and box.pump() == 4 and link.sent[-1] == 14
    now[0] = 4.9
    assert not box.tick()
    now[0] = 10.0
    assert box.tick() and box.timeout == 10  # resend from 5, wait longer next time
    assert box.pump() == 10 and link.sent[-10:] == list(range(5, 15))
    box.on_ack(25)
    assert box.timeout == 5 and journal.depth() == 0 and box.pump() == 0


def test_reconnect_resends_from_the_acknowledged_mark(journal):
    link = Link()
    box = Outbox(journal, link, window=100)
    box.on_connected()
    box.pump()
    box.on_ack(20)
    box.on_disconnected()
    box.on_connected()
    assert box.pump() == 5 and link.sent[-5:] == [21, 22, 23, 24, 25]


def test_a_resend_request_is_answered_from_the_journal_acknowledged_or_not(journal):
    link = Link()
    box = Outbox(journal, link, window=4)
    box.on_connected()
    box.pump()
    box.on_ack(3)
    # a new office store asks for numbers the door had acknowledged long ago: sent again
    assert box.on_resend(2, 9) == 4 and link.sent[-4:] == [2, 3, 4, 5]  # a window at most
    assert box.on_resend(40, 50) == 0  # numbers the journal never had: nothing
    assert box.sent_upto == 4 and box.acked == 3  # the outbox's own flow is untouched


def test_numbers_purged_by_retention_are_declared_in_the_first_entry_sent(journal):
    from datetime import timedelta

    from accessd.events import format_ts, utcnow

    old = format_ts(utcnow() - timedelta(days=200))
    journal.conn.execute("UPDATE events SET ts = ? WHERE seq <= 10", (old,))
    assert journal.purge(90) == 10 and journal.first_seq() == 11
    link = Link()
    box = Outbox(journal, link, window=3)
    box.on_connected()
    assert box.on_resend(1, 20) == 3
    assert (link.sent, link.floors) == ([11, 12, 13], [11, None, None])
    assert box.on_resend(2, 5) == 1  # all of it is gone: the oldest entry says so alone
    assert (link.sent[-1], link.floors[-1]) == (11, 11)


def test_the_link_dropping_mid_window_stops_sending(journal):
    link = Link()
    box = Outbox(journal, link, window=100)
    box.on_connected()
    link.up = False
    assert box.pump() == 0 and box.sent_upto == 0


@given(st.builds(
    Event, type=st.sampled_from(list(EventType)),
    ts=st.datetimes(timezones=st.just(UTC)),
    reader=st.none() | st.text(max_size=5), member_id=st.none() | st.text(max_size=5),
    member_name=st.none() | st.text(max_size=5), plan=st.sampled_from([None, "subscriber"]),
    result=st.sampled_from([None, "granted", "denied"]), reason=st.none() | st.text(max_size=5),
    credential=st.none() | st.text(max_size=5), clock_trusted=st.booleans(),
    detail=st.dictionaries(st.text(max_size=3), st.integers() | st.lists(st.integers()),
                           max_size=3)),
       st.none() | st.integers(1, 9))
def test_the_wire_payload_is_the_entry_s_dict(event, floor):
    entry = JournalEntry(7, "id-7", "s1", "d1", event)
    expected = {"v": EVENT_VERSION, **entry.to_dict(), "journal": "ab" * 16}
    if floor is not None:
        expected["floor"] = floor
    assert event_message(entry, "ab" * 16, floor) == expected


def test_no_acknowledgement_is_said_once_per_outage(journal, caplog):
    """The demo without an office: one WARNING, then the resends quietly, and a word when the
    office is back; the next outage is said again."""
    import logging

    now = [0.0]
    box = Outbox(journal, Link(), window=100, ack_timeout_s=5, max_timeout_s=40,
                 clock=lambda: now[0])
    box.on_connected()
    caplog.set_level(logging.DEBUG, logger="accessd.uplink.outbox")
    for _ in range(8):  # well over an hour of outage in scaled time
        box.pump()
        now[0] += box.timeout
        assert box.tick()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "25 events wait in the journal" in warnings[0].getMessage()
    assert sum("sending again" in r.getMessage() for r in caplog.records
               if r.levelno == logging.DEBUG) == 7
    box.on_ack(25)
    assert any("acknowledges again" in r.getMessage() and r.levelno == logging.INFO
               for r in caplog.records)
    journal.append(Event(EventType.ACCESS_GRANTED))
    box.pump()
    now[0] += box.timeout
    assert box.tick()
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 2


def test_without_an_office_key_the_resends_stay_quiet(journal, caplog):
    import logging

    now = [0.0]
    box = Outbox(journal, Link(), window=100, ack_timeout_s=5, clock=lambda: now[0])
    box.expect_no_acks()  # the uplink said once why no acknowledgement can come
    box.on_connected()
    caplog.set_level(logging.INFO, logger="accessd.uplink.outbox")
    for _ in range(4):
        box.pump()
        now[0] += box.timeout
        assert box.tick()
    assert not caplog.records
