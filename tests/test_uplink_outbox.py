"""The outbox's window and resend rules, over a real journal and a fake link."""

from __future__ import annotations

from pathlib import Path

import pytest

from accessd.events import Event, EventType
from accessd.store.journal import Journal
from accessd.uplink.outbox import Outbox


class Link:
    def __init__(self) -> None:
        self.sent: list[int] = []
        self.up = True

    def __call__(self, entry, floor) -> bool:
        if self.up:
            self.sent.append(entry.seq)
        return self.up


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


def test_a_resend_request_sends_only_what_is_missing(journal):
    link = Link()
    box = Outbox(journal, link, window=100)
    box.on_connected()
    box.pump()
    box.on_ack(3)
    assert box.on_resend(2, 6) == 3 and link.sent[-3:] == [4, 5, 6]
    assert box.on_resend(40, 50) == 0  # never sent: nothing to resend


def test_the_link_dropping_mid_window_stops_sending(journal):
    link = Link()
    box = Outbox(journal, link, window=100)
    box.on_connected()
    link.up = False
    assert box.pump() == 0 and box.sent_upto == 0
