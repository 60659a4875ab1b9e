"""The rule cache as the door reads it: every stored value checked before a decision uses it.

The cache can hold values that mean nothing: a schedule stored by an older version with a zone
zoneinfo does not know, a member row edited by hand with an unknown plan or 2026-02-30, a rule
version written as "6.0". None of them may stop the door. This view gives the controller what
it can use (the configured schedule in place of an unusable published one; the raw facts of an
unusable row, which the controller refuses), keeps the current problems for `status`, and has
each distinct bad value reported once (`alarm.rule_cache`), not on every tap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from accessd.decision import Booking, DoorAccess, Grant, Window
from accessd.errors import CorruptRecord
from accessd.schedule import Schedule, door_access
from accessd.store.rules import RuleCache

Report = Callable[[str, str, dict[str, Any]], None]  # (reason, error, event fields)
WINDOW_CACHE = 20_000  # members whose parsed windows are kept (cleared beyond)


class RuleView:
    def __init__(self, rules: RuleCache, fallback: Schedule, report: Report) -> None:
        self.rules, self.fallback, self._report = rules, fallback, report
        self.problems: dict[str, str] = {}  # what cannot be used now, for status
        self._schedule: tuple[str | None, Schedule] | None = None
        self._reported: set[tuple[str, str]] = set()
        self._bad_members: dict[str, str] = {}  # member id -> why their row is unusable
        self._access: dict[str, tuple[str | None, DoorAccess]] = {}
        self._marker: tuple[int, int] | None = None
        self._raw_schedule: str | None = None
        self._raw_access: str | None = None
        self._windowed: set[str] = set()
        self._windows: dict[str, tuple[tuple[Window, ...], tuple[Booking, ...]]] = {}
        self._windows_version: str | None = None
        self._windows_loaded = False

    def refresh(self) -> None:
        """See what changed in the cache since the last call: one pragma when nothing did
        (the controller calls it once per tap). After a write (a rule sync, a host's change,
        a hand edit) the published schedule and door rules are read again; after a new rule
        version, also which members have rights or bookings (office rows, which change only
        with a rule document), whose parsed windows are then read again as needed."""
        marker = self.rules.changed_marker()
        if marker == self._marker:
            return
        self._marker = marker
        self._raw_schedule = self.rules.get_meta("schedule")
        self._raw_access = self.rules.get_meta("access")
        version = self.rules.get_meta("rule_version")
        if version != self._windows_version or not self._windows_loaded:
            self._windows_version = version
            self._windows_loaded = True
            self._windowed = self.rules.windowed_members()
            self._windows.clear()

    def _fresh(self) -> None:
        if self._marker is None:
            self.refresh()

    def _member_windows(self, member_id: str, access: DoorAccess
                        ) -> tuple[tuple[Window, ...], tuple[Booking, ...]]:
        """The member's windows at the door and bookings that concern it, from the parsed
        rows kept per member (read once per rule version)."""
        rows = self._windows.get(member_id)
        if rows is None:
            rows = self.rules.windows(member_id, None, since="0000")
            if len(self._windows) >= WINDOW_CACHE:
                self._windows.clear()
            self._windows[member_id] = rows
        windows, bookings = rows
        door = access.door
        return (tuple(w for w in windows if w.door == "*" or w.door == door),
                tuple(b for b in bookings if access.entrance or b.door == door))

    def lookup(self, credential_hash: str, access: DoorAccess | None = None) -> Grant | None:
        """The card's record, with its rights and bookings at the door `access` describes
        (looked up only for the members that have some); CorruptRecord (reported once) when
        a row cannot be used."""
        try:
            self._fresh()
            record = self.rules.lookup(credential_hash)
            if record is not None and access is not None and access.door is not None \
                    and record.member_id in self._windowed:
                try:
                    windows, bookings = self._member_windows(record.member_id, access)
                except (ValueError, TypeError) as exc:  # a row edited by hand
                    raise CorruptRecord(
                        f"member {record.member_id!r}: unusable right or booking: {exc}",
                        member_id=record.member_id, member_name=record.member_name,
                        credential_status=str(record.credential_status),
                        member_status=str(record.member_status)) from exc
                record = replace(record, windows=windows, bookings=bookings)
        except CorruptRecord as exc:
            mid = exc.member_id if isinstance(exc.member_id, str) else None
            self._bad_members[str(mid)] = str(exc)
            self._refresh()
            self._once("invalid_record", f"{mid}:{exc}", str(exc), member_id=mid,
                       member_name=exc.member_name if isinstance(exc.member_name, str)
                       else None)
            raise
        if record is not None and self._bad_members.pop(record.member_id, None):
            self._refresh()  # repaired since
        return record

    def schedule(self) -> Schedule:
        """The office's schedule if it published a usable one, else the configuration's.

        Parsed once per stored value (one indexed read per tap to see whether it changed).
        """
        self._fresh()
        raw = self._raw_schedule
        if self._schedule is not None and self._schedule[0] == raw:
            return self._schedule[1]
        schedule = self.fallback
        self.problems.pop("unusable_schedule", None)
        if raw is not None:
            try:
                schedule = Schedule.from_dict(json.loads(raw))
            except (ValueError, TypeError, RecursionError) as exc:
                error = f"published schedule unusable, the configured one applies: {exc}"
                self.problems["unusable_schedule"] = error
                self._once("unusable_schedule", raw, error)
        self._schedule = (raw, schedule)
        return schedule

    def access(self, door: str) -> DoorAccess:
        """What the office's door rules (`access`) say about `door`; without any, or when the
        stored value is unusable (reported once), every plan at every door, as before door
        rules existed. Parsed once per stored value."""
        self._fresh()
        raw = self._raw_access
        cached = self._access.get(door)
        if cached is not None and cached[0] == raw:
            return cached[1]
        access = DoorAccess(door)
        self.problems.pop("unusable_access", None)
        if raw is not None:
            try:
                access = door_access(json.loads(raw), door)
            except (ValueError, TypeError, RecursionError) as exc:
                error = f"published door rules unusable, every plan opens this door: {exc}"
                self.problems["unusable_access"] = error
                self._once("unusable_access", raw, error)
        self._access[door] = (raw, access)
        return access

    def version(self) -> int | None:
        """The version of the rules held; None when the stored value is unusable."""
        try:
            version = self.rules.version
        except (ValueError, TypeError) as exc:
            error = f"stored rule version unusable: {exc}"
            self.problems["invalid_version"] = error
            self._once("invalid_version", str(exc), error)
            return None
        self.problems.pop("invalid_version", None)
        return version

    def _refresh(self) -> None:
        if self._bad_members:
            example = next(iter(self._bad_members.values()))
            self.problems["invalid_record"] = (f"{len(self._bad_members)} member row(s) "
                                               f"unusable, e.g. {example}")
        else:
            self.problems.pop("invalid_record", None)

    def _once(self, reason: str, key: str, error: str, **fields: Any) -> None:
        if (reason, key) not in self._reported:
            self._reported.add((reason, key))
            self._report(reason, error, fields)
