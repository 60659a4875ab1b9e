"""A door whose broker is unreachable says so once and keeps its events in the journal."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
from conftest import write_config

from accessd.config import load_config
from accessd.events import Event, EventType
from accessd.store.journal import Journal
from accessd.uplink import Uplink


def test_unreachable_broker_is_reported_once(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config(write_config(tmp_path, f"[mqtt]\nenabled = true\nport = {port}\n"))
    journal = Journal(cfg.storage.journal_db, cfg.site.id, cfg.site.door)
    journal.append(Event(EventType.ACCESS_GRANTED))
    uplink = Uplink(cfg, cfg.storage.journal_db, cfg.storage.rules_db,
                    status_provider=dict, on_event=lambda e: None,
                    on_remote_release=lambda who, s: None)
    with caplog.at_level(logging.WARNING, logger="accessd.uplink"):
        uplink.start()
        try:
            deadline = time.monotonic() + 10
            while "unreachable" not in str(uplink.state().get("last_error")):
                assert time.monotonic() < deadline, uplink.state()
                time.sleep(0.05)
            time.sleep(2.5)  # paho retries meanwhile: no second warning
        finally:
            uplink.stop()
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert journal.depth() == 1  # the event waits in the outbox
    journal.close()
