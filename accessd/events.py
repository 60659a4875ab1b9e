"""Typed, immutable records of what happened at the door.

An `Event` is what the daemon observed; the journal turns it into a `JournalEntry` by giving
it a unique id and the door's next sequence number. The event types are a closed list,
documented in docs/journal.md and docs/protocol.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    ACCESS_GRANTED = "access.granted"
    ACCESS_DENIED = "access.denied"
    EXIT_REQUEST = "exit.request"
    MANUAL_RELEASE = "lock.manual_release"
    REMOTE_RELEASE = "lock.remote_release"
    DOOR_OPENED = "door.opened"
    DOOR_CLOSED = "door.closed"
    DOOR_FORCED = "door.forced"
    DOOR_HELD_OPEN_PREALARM = "door.held_open_prealarm"
    DOOR_HELD_OPEN = "door.held_open"
    DOOR_MODE = "door.mode"  # held unlocked (schedule, host) or locked again: every change
    READER_ONLINE = "reader.online"
    READER_OFFLINE = "reader.offline"
    READER_LOCKOUT = "alarm.reader_lockout"
    JOURNAL_UNAVAILABLE = "alarm.journal_unavailable"
    INTERNAL_ERROR_ALARM = "alarm.internal_error"  # deciding a tap failed unexpectedly
    RULE_CACHE_ALARM = "alarm.rule_cache"  # a stored rule value cannot be used (once per value)
    MEMBER_ENROLLED = "member.enrolled"
    MEMBER_UPDATED = "member.updated"
    CREDENTIAL_REVOKED = "credential.revoked"
    RULES_APPLIED = "rules.applied"
    RULES_REJECTED = "rules.rejected"
    COMMAND_REJECTED = "command.rejected"
    DAEMON_STARTED = "daemon.started"
    DAEMON_STOPPED = "daemon.stopped"
    EVENTS_PURGED = "journal.purged"
    JOURNAL_RENUMBERED = "journal.renumbered"


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    ts: datetime = field(default_factory=utcnow)
    reader: str | None = None
    member_id: str | None = None
    member_name: str | None = None
    plan: str | None = None
    result: str | None = None  # "granted" | "denied" for access events
    reason: str | None = None
    credential: str | None = None  # short keyed hash, never the raw card number
    clock_trusted: bool = True
    detail: dict[str, Any] = field(default_factory=dict)


def event_to_dict(e: Event) -> dict[str, Any]:
    out = asdict(e)
    out["type"], out["ts"] = str(e.type), format_ts(e.ts)
    return out


def event_from_dict(d: dict[str, Any]) -> Event:
    """The inverse of `event_to_dict` (used to re-read spooled events)."""
    fields = dict(d)
    return Event(type=event_type(fields.pop("type")), ts=parse_ts(fields.pop("ts")), **fields)


def event_type(text: str) -> EventType:
    """The enum member, or the string itself for a type from a newer version."""
    try:
        return EventType(text)
    except ValueError:
        return text  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    id: str
    site: str
    door: str
    event: Event

    def to_dict(self) -> dict[str, Any]:
        """The wire and `--json` form; the schema is schemas/event.json."""
        return {"seq": self.seq, "id": self.id, "site": self.site, "door": self.door,
                **event_to_dict(self.event)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)
