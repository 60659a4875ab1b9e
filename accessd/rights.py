"""Member and card states, and what counts as more privilege: one table for the door and office.

A member or a card is `active`, `suspended` or `revoked`. Suspension is reversible; revocation
is terminal: nothing (a command, a rule document, an event, an import) turns a revoked member
or card into anything else, and a revoked card is never enrolled again (a new card is needed).
`transition` says whether a change is allowed, a no-op, or refused, and why, so that both ends
refuse the same things with the same words.

`raises` says what a proposed row would grant beyond the current one (a better status, the
subscriber plan, a longer validity): the office never lets a door's change do that without an
operator's approval, and the door never lets its host do it to the office's members.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from accessd.decision import Plan, Status

# from -> to; a status to itself is a no-op, anything else (out of `revoked`) is refused
ALLOWED: frozenset[tuple[Status, Status]] = frozenset({
    (Status.ACTIVE, Status.SUSPENDED), (Status.ACTIVE, Status.REVOKED),
    (Status.SUSPENDED, Status.ACTIVE), (Status.SUSPENDED, Status.REVOKED),
})
RANK = {Status.ACTIVE: 0, Status.SUSPENDED: 1, Status.REVOKED: 2}  # how much it refuses
PLAN_RANK = {Plan.OCCASIONAL: 0, Plan.SUBSCRIBER: 1}  # how much it grants


class Change(StrEnum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"  # already so: nothing written, nothing journalled
    REFUSED = "refused"  # out of `revoked`
    PROPOSED = "proposed"  # the door's host asked; only the office may grant it


@dataclass(frozen=True, slots=True)
class Verdict:
    change: Change
    why: str

    @property
    def allowed(self) -> bool:
        return self.change is Change.CHANGED


def transition(current: Status | str, wanted: Status | str, what: str = "member") -> Verdict:
    """May a member (or card: `what`) in state `current` be put in state `wanted`?"""
    current, wanted = Status(current), Status(wanted)
    if current is wanted:
        return Verdict(Change.UNCHANGED, f"the {what} is already {wanted}")
    if (current, wanted) in ALLOWED:
        return Verdict(Change.CHANGED, f"{current} -> {wanted}")
    return Verdict(Change.REFUSED, f"the {what} is revoked for good: a revoked {what} is never "
                                   f"made {wanted} again"
                                   + (" (enrol a new card)" if what == "card" else ""))


def stricter(a: Status | str, b: Status | str) -> Status:
    """The state that refuses more: what a restriction from either side leaves."""
    a, b = Status(a), Status(b)
    return a if RANK[a] >= RANK[b] else b


def restricts(current: Status | str, wanted: Status | str) -> bool:
    """True when `wanted` refuses more than `current` (a suspension or a revocation)."""
    return RANK[Status(wanted)] > RANK[Status(current)]


def raises(current: Mapping[str, Any] | None, proposed: Mapping[str, Any]) -> list[str]:
    """What `proposed` (a member row) grants that `current` does not, in words; [] if nothing.

    Rows are dicts with `status`, `plan`, `valid_from`, `valid_until` (ISO dates or None for
    open). No current row: the member is new, which is itself the privilege.
    """
    if current is None:
        return ["a new member"]
    out = []
    if RANK[Status(proposed["status"])] < RANK[Status(current["status"])]:
        out.append(f"status {current['status']} -> {proposed['status']}")
    if PLAN_RANK[Plan(proposed["plan"])] > PLAN_RANK[Plan(current["plan"])]:
        out.append(f"plan {current['plan']} -> {proposed['plan']}")
    cur_from, new_from = current.get("valid_from"), proposed.get("valid_from")
    if cur_from and (not new_from or new_from < cur_from):
        out.append(f"valid from {cur_from} -> {new_from or 'always'}")
    cur_until, new_until = current.get("valid_until"), proposed.get("valid_until")
    if cur_until and (not new_until or new_until > cur_until):
        out.append(f"valid until {cur_until} -> {new_until or 'for ever'}")
    return out


def card_raises(current: Mapping[str, Any] | None, proposed: Mapping[str, Any]) -> list[str]:
    """What a proposed card row grants beyond the current one: a new card, another holder,
    a better status."""
    if current is None:
        return ["a new card"]
    out = []
    if current["member_id"] != proposed["member_id"]:
        out.append(f"card moves from {current['member_id']} to {proposed['member_id']}")
    if RANK[Status(proposed["status"])] < RANK[Status(current["status"])]:
        out.append(f"card {current['status']} -> {proposed['status']}")
    return out
