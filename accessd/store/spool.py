"""The spool: events the journal refused until the daemon stopped, kept in a file until the
next start journals them.

A daemon that stops while its journal cannot be written (read-only or full disk) saves the
events it holds to `spool-<ns>.jsonl` (the storage folder's `spool/`, else the runtime folder
in RAM). Both ends survive a power loss at any instant:

- `save` writes and syncs the file under a temporary name, renames it and syncs the folder:
  once it returns (and the daemon logs "spooled"), the file is on the medium;
- `import_spools` journals each file in **one** transaction with an
  `alarm.journal_unavailable` entry (reason `spooled_at_stop`) naming it, and only then
  deletes it and syncs the folder. A file whose deletion a power loss undid is found in the
  journal by its name (`Journal.holds_spool`) and deleted without being journalled again.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from accessd.errors import StoreError
from accessd.events import Event, EventType, event_from_dict, event_to_dict, utcnow
from accessd.store.journal import Journal

log = logging.getLogger(__name__)
PATTERN = "spool-*.jsonl"


def sync_folder(folder: Path) -> None:
    """fsync a folder: the creations, renames and deletions in it become durable (POSIX;
    f2fs, common on SD cards, does not do it on its own)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, text: str) -> None:
    """A private file (0600: personal data, whatever the umask) that a power loss after the
    return cannot take: written and synced as `.tmp`, renamed, the folder synced."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fd, 0o600)
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.rename(path)
    sync_folder(path.parent)


def save(events: list[Event], folders: list[Path]) -> Path | None:
    """Spool `events` to the first folder that accepts the file; the file, or None when
    there was nothing to save or no folder took it (both ends logged at ERROR)."""
    if not events:
        return None
    lines = "".join(json.dumps(event_to_dict(e), sort_keys=True) + "\n" for e in events)
    for folder in folders:
        path = folder / f"spool-{time.time_ns()}.jsonl"
        try:
            write_durably(path, lines)
        except OSError as exc:
            log.warning("cannot spool held events to %s: %s", folder, exc)
            continue
        log.error("journal unavailable at stop: %d held events spooled to %s, to be "
                  "journalled at the next start", len(events), path)
        return path
    log.error("journal unavailable at stop: %d held events LOST (no folder accepted a spool "
              "file)", len(events))
    return None


def import_spools(journal: Journal, folders: list[Path],
                  trusted: Callable[[datetime], bool]) -> int:
    """Journal the files a previous run spooled, oldest first, each with its own marker
    entry in one transaction, then delete them. Before the door starts deciding: the files'
    events come before this run's. A file that cannot be read is kept for inspection; when
    the journal refuses the import, that file and the later ones stay for the next start
    (nothing is held in memory, so nothing is spooled twice). Returns the events journalled."""
    files = sorted((p for d in folders if d.is_dir() for p in d.glob(PATTERN)),
                   key=lambda p: p.name)
    total = 0
    for path in files:
        try:
            events = [event_from_dict(json.loads(line))
                      for line in path.read_text(encoding="utf-8").splitlines() if line]
        except (OSError, ValueError, TypeError, KeyError) as exc:  # any damage: kept
            log.error("cannot read spooled events %s (kept for inspection): %s", path, exc)
            continue
        try:
            if journal.holds_spool(path.name):
                log.warning("%s was journalled before a power loss undid its deletion; "
                            "deleting it", path.name)
            else:
                now = utcnow()
                journal.append_many([Event(
                    type=EventType.JOURNAL_UNAVAILABLE, ts=now, reason="spooled_at_stop",
                    clock_trusted=trusted(now),
                    detail={"spool": path.name, "events": len(events)}), *events])
                total += len(events)
                log.warning("journalled %d events spooled by the previous run (%s)",
                            len(events), path.name)
        except (StoreError, sqlite3.Error) as exc:
            log.error("cannot journal the spooled events of %s now (kept, with any later "
                      "spool file, for the next start): %s", path, exc)
            return total
        try:
            path.unlink()
            sync_folder(path.parent)
        except OSError as exc:
            log.error("cannot delete the imported spool file %s (it will not be journalled "
                      "twice): %s", path, exc)
    return total
