"""Product bugs found by the fault suite (faultsuite/, docs/reliability.md), one minimal test each.

Each is marked xfail(strict=True) until the product is fixed: the fix makes it pass, and then
strict xfail fails the run, which is the reminder to drop the marker.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from conftest import write_config

from accessd.config import load_config
from accessd.errors import JournalFullError
from accessd.readers.base import CardRead


def test_events_held_in_memory_are_not_lost_silently_at_stop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from accessd.daemon.service import Daemon

    daemon = Daemon(load_config(write_config(tmp_path)))
    try:
        daemon.start()
        c = daemon.controller
        assert c is not None

        def read_only(events: object) -> list:
            raise JournalFullError("journal.db: attempt to write a readonly database")

        c.journal.append_many = read_only  # type: ignore[method-assign]
        c.on_card(CardRead("door", "0A1B2C3D4E", "simulated"))
        assert c.pending_events == 1
    finally:
        with caplog.at_level(logging.INFO):
            daemon.stop()
    lost = [r for r in caplog.records if r.levelno >= logging.ERROR
            and re.search(r"\b[12] (held )?events?\b", r.getMessage())]
    assert lost, "events held in memory vanished at stop with no ERROR saying how many"

    # the spooled events are journalled, in order, at the next start
    again = Daemon(load_config(write_config(tmp_path)))
    try:
        again.start()
        assert again.controller is not None
        types = [str(e.event.type) for e in again.controller.journal.iter_all()]
    finally:
        again.stop()
    assert types[-5:] == ["daemon.started", "alarm.journal_unavailable", "access.denied",
                          "daemon.stopped", "daemon.started"]
    assert not list((tmp_path / "state" / "spool").glob("*.jsonl"))


@pytest.mark.parametrize("issued_at", ["", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00"])
def test_a_signed_command_with_a_bad_timestamp_is_refused_as_invalid(issued_at: str) -> None:
    """Found by fuzz_parsers (signed command payloads): the schema's date-time format is not
    enforced, so `issued_at` reached `parse_ts` and a ValueError (or, with no UTC offset, a
    TypeError) escaped `verify_command` instead of a refusal."""
    from accessd.errors import ProtocolError
    from accessd.events import utcnow
    from accessd.protocol.codec import encode
    from accessd.protocol.commands import make_command, verify_command
    from accessd.protocol.signing import OfficeKey, PublicKeys

    key = OfficeKey.generate()
    cmd = make_command(key, type="release", site="s", door="d", operator="o", seconds=5)
    payload = {**cmd["payload"], "issued_at": issued_at}
    with pytest.raises(ProtocolError, match=r"^invalid: issued_at"):
        verify_command(encode(key.sign(payload)), PublicKeys([key.public]), site="s",
                       door="d", now=utcnow())
