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
from typing import Any

from accessd.decision import DoorAccess, Grant
from accessd.errors import CorruptRecord
from accessd.schedule import Schedule, door_access
from accessd.store.rules import RuleCache

Report = Callable[[str, str, dict[str, Any]], None]  # (reason, error, event fields)


class RuleView:
    def __init__(self, rules: RuleCache, fallback: Schedule, report: Report) -> None:
        self.rules, self.fallback, self._report = rules, fallback, report
        self.problems: dict[str, str] = {}  # what cannot be used now, for status
        self._schedule: tuple[str | None, Schedule] | None = None
        self._reported: set[tuple[str, str]] = set()
        self._bad_members: dict[str, str] = {}  # member id -> why their row is unusable
        self._access: dict[str, tuple[str | None, DoorAccess]] = {}

    def lookup(self, credential_hash: str, access: DoorAccess | None = None) -> Grant | None:
        """The card's record, with its rights and bookings at the door `access` describes;
        CorruptRecord (reported once) when a row cannot be used."""
        try:
            record = self.rules.lookup(
                credential_hash, access.door if access is not None else None,
                entrance=access is not None and access.entrance)
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
        raw = self.rules.get_meta("schedule")
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
        raw = self.rules.get_meta("access")
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
