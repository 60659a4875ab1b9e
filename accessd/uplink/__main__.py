"""Run the uplink alone: `python -m accessd.uplink --config FILE`.

Delivers a door's journal backlog while the daemon is stopped (a failed SD card being
replaced, say) and lets tests kill an uplink process mid-flight. Without a daemon there is no
lock to drive: remote releases are refused and journalled as such.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from accessd.config import load_config
from accessd.events import Event, EventType
from accessd.store.journal import Journal
from accessd.uplink.service import Uplink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m accessd.uplink",
                                     description="run the MQTT uplink without the door daemon")
    parser.add_argument("--config", help="accessd.toml (default: ACCESSD_CONFIG or /etc)")
    parser.add_argument("--door", help="the door whose journal to deliver (a Pi with several "
                                       "[[doors]]; default: the first)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    spec = cfg.door_spec(args.door)
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(message)s")
    journal = Journal(spec.journal_file, cfg.site.id, spec.id)
    stop = threading.Event()
    uplink: Uplink

    def record(event: Event) -> None:
        journal.append(event)
        uplink.notify()

    def refuse(operator: str, seconds: float) -> None:
        record(Event(EventType.COMMAND_REJECTED, reason="no_daemon",
                     detail={"operator": operator, "seconds": seconds}))

    uplink = Uplink(cfg, spec.journal_file, cfg.storage.rules_db, door=spec,
                    rules_owner=spec is cfg.doors[0],
                    other_journals={d.id: d.journal_file for d in cfg.doors if d is not spec},
                    status_provider=lambda: {}, on_event=record, on_remote_release=refuse)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    uplink.start()
    while not stop.wait(0.5):
        pass
    uplink.stop()
    journal.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
