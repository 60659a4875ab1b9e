"""The live feed: new entries reach every open stream of a worker once the collector's batch
is committed: on PostgreSQL through the collector's NOTIFY (the worker's poll slowed to a
minute here, so only the notification can be in time), on SQLite by polling the doors'
marks. Each stream sees only its user's sites."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from web_helpers import event, make_store

from accessd.central import health
from accessd.central.store import CentralStore, open_store
from accessd.central.web.app import Office
from accessd.central.web.core import WebConfig


async def _deliveries(office: Office, store: CentralStore, *, notify: bool) -> list[tuple]:
    feed = office.feed
    task = asyncio.create_task(feed.run())
    try:
        q = feed.subscribe()
        while feed.marks is None:  # the first look learns the marks, and sends nothing
            await asyncio.sleep(0.01)
        if office.config.store.startswith("postgresql"):
            while not feed.listening.is_set():
                await asyncio.sleep(0.01)
        store.store_events([event("s1", "d1", 6, "2026-03-04T08:00:00.000Z", "ana"),
                            event("s1", "d1", 7, "2026-03-04T08:01:00.000Z", None,
                                  etype="door.opened", result=None, reason=None),
                            event("s2", "d1", 2, "2026-03-04T08:02:00.000Z", "zed")])
        store.advance_many([("s1", "d1"), ("s2", "d1")])
        if notify:
            health.notify_events(store)
        rows: list[dict] = []
        while len(rows) < 2:
            rows += await asyncio.wait_for(q.get(), 10)
        return [(r["site"], r["door"], r["seq"], r["member_id"]) for r in rows]
    finally:
        feed.close()
        task.cancel()
        with __import__("contextlib").suppress(asyncio.CancelledError):
            await task
        office.pool.close()


def test_sqlite_polls_the_marks(tmp_path: Path) -> None:
    store = make_store(tmp_path / "c.db")
    try:
        office = Office(WebConfig(store=str(tmp_path / "c.db"), poll_s=0.05))
        got = asyncio.run(_deliveries(office, store, notify=False))
    finally:
        store.close()
    # access decisions only (door.opened is not an entry), every site: streams filter
    assert got == [("s1", "d1", 6, "ana"), ("s2", "d1", 2, "zed")]


def test_postgresql_wakes_on_the_collectors_notify() -> None:
    from test_central_store import private_schema

    for url in private_schema():
        store = open_store(url)
        from web_helpers import fill

        fill(store)
        try:
            office = Office(WebConfig(store=url, notified_poll_s=60.0))
            got = asyncio.run(_deliveries(office, store, notify=True))
            assert office.feed.looks <= 3  # the first look, and the one the NOTIFY woke
        finally:
            store.close()
        assert got == [("s1", "d1", 6, "ana"), ("s2", "d1", 2, "zed")]


def test_a_stream_filters_for_the_users_sites() -> None:
    from accessd.central.web.entries import Filters

    f = Filters(site="", result="granted")
    assert f.matches({"site": "s1", "door": "d1", "member_id": "ana", "result": "granted",
                      "reason": "subscriber"}, None)
    assert not f.matches({"site": "s1", "door": "d1", "member_id": "ana",
                          "result": "denied", "reason": "expired"}, None)
    assert not Filters(member="ana").matches({"site": "s1", "door": "d1", "member_id": "ben",
                                              "result": "granted", "reason": "x"}, {"ana"})


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
