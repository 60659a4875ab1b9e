"""Rule documents: a full snapshot of a site's rules, or a delta from one version to the next.

Built and signed by the central office, verified and checked by the door before anything is
written. Only the shape is checked here; whether a version fits is the applier's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from accessd.errors import ProtocolError
from accessd.events import format_ts, utcnow
from accessd.protocol.codec import SNAPSHOT_MAX_BYTES, decode, validate
from accessd.protocol.signing import OfficeKey, PublicKeys
from accessd.schema import BOOKINGS, CREDENTIALS, MEMBERS, RIGHTS

# the fields of each row on the wire, from the one member schema
MEMBER_FIELDS = MEMBERS.wire_names()
CREDENTIAL_FIELDS = CREDENTIALS.wire_names()
RIGHT_FIELDS = RIGHTS.wire_names()
BOOKING_FIELDS = BOOKINGS.wire_names()
ROW_FIELDS = {"members": MEMBER_FIELDS, "credentials": CREDENTIAL_FIELDS,
              "rights": RIGHT_FIELDS, "bookings": BOOKING_FIELDS}
KEYS = {"members": "id", "credentials": "hash", "rights": "id", "bookings": "id"}


def _sections(payload: dict[str, Any], rights: Sequence[dict[str, Any]],
              bookings: Sequence[dict[str, Any]], access: dict[str, Any] | None) -> None:
    """Rights, bookings and door access go in only when there are some, so that a site
    that uses none of them publishes documents every door version accepts."""
    if rights:
        payload["rights"] = [_pick(r, RIGHT_FIELDS) for r in rights]
    if bookings:
        payload["bookings"] = [_pick(b, BOOKING_FIELDS) for b in bookings]
    if access:
        payload["access"] = access


def make_snapshot(key: OfficeKey, *, site: str, version: int,
                  members: list[dict[str, Any]], credentials: list[dict[str, Any]],
                  schedule: dict[str, Any] | None = None,
                  stored_seq: dict[str, int] | None = None,
                  issued_at: datetime | None = None,
                  pending: dict[str, list[int]] | None = None,
                  rights: Sequence[dict[str, Any]] = (),
                  bookings: Sequence[dict[str, Any]] = (),
                  access: dict[str, Any] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "v": 1, "kind": "snapshot", "site": site, "version": version,
        "issued_at": format_ts(issued_at or utcnow()),
        "members": [_pick(m, MEMBER_FIELDS) for m in members],
        "credentials": [_pick(c, CREDENTIAL_FIELDS) for c in credentials],
    }
    _sections(payload, rights, bookings, access)
    if schedule is not None:
        payload["schedule"] = schedule
    if stored_seq:
        payload["stored_seq"] = stored_seq
    if pending:
        payload["pending"] = pending  # per door, its changes the office has not decided
    validate("rules", payload)
    return key.sign(payload)


def make_delta(key: OfficeKey, *, site: str, version: int, base_version: int,
               members: Sequence[dict[str, Any]] = (),
               credentials: Sequence[dict[str, Any]] = (),
               removed_members: Sequence[str] = (), removed_credentials: Sequence[str] = (),
               schedule: dict[str, Any] | None = None,
               stored_seq: dict[str, int] | None = None,
               issued_at: datetime | None = None,
               pending: dict[str, list[int]] | None = None,
               rights: Sequence[dict[str, Any]] = (),
               bookings: Sequence[dict[str, Any]] = (),
               removed_rights: Sequence[str] = (), removed_bookings: Sequence[str] = (),
               access: dict[str, Any] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "v": 1, "kind": "delta", "site": site, "version": version,
        "base_version": base_version, "issued_at": format_ts(issued_at or utcnow()),
        "members": [_pick(m, MEMBER_FIELDS) for m in members],
        "credentials": [_pick(c, CREDENTIAL_FIELDS) for c in credentials],
        "removed_members": list(removed_members),
        "removed_credentials": list(removed_credentials),
    }
    _sections(payload, rights, bookings, access)
    if removed_rights:
        payload["removed_rights"] = list(removed_rights)
    if removed_bookings:
        payload["removed_bookings"] = list(removed_bookings)
    if schedule is not None:
        payload["schedule"] = schedule
    if stored_seq:
        payload["stored_seq"] = stored_seq
    if pending:
        payload["pending"] = pending  # per door, its changes the office has not decided
    validate("rules", payload)
    return key.sign(payload)


def _pick(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """A row in its wire form: what the door cannot fill in itself.

    Left out: null values (an absent validity date is open, an absent technology unknown),
    and for the office's own rows (`origin` "central", the default) the origin and the
    timestamps, which the door only needs for host enrolments (`origin` "site": kept whole,
    so that a later snapshot can tell whether the host changed the row since). A door writes
    an office row it did not have, or whose content changed, with the document's `issued_at`,
    and leaves an unchanged one as it is. This roughly halves a snapshot: 100,000 members
    with one card each is ~19 MiB instead of ~39 MiB (docs/protocol.md).
    """
    out = {k: row[k] for k in fields if row.get(k) is not None}
    if out.get("origin", "central") == "central":
        for k in ("origin", "enrolled_at", "updated_at"):
            out.pop(k, None)
    return out


def read_rule_document(raw: bytes, keys: PublicKeys, *, site: str,
                       max_bytes: int = SNAPSHOT_MAX_BYTES) -> dict[str, Any]:
    """Size, JSON, depth, signature, schema and site: the payload of a usable document."""
    payload = keys.verify(decode(raw, max_bytes=max_bytes))
    validate("rules", payload)
    if payload["site"] != site:
        raise ProtocolError(f"wrong_site: the document is for site {payload['site']!r}")
    members = {m["id"] for m in payload["members"]} if "members" in payload else set()
    if payload["kind"] == "snapshot":
        for key in ("credentials", "rights", "bookings"):
            orphans = {c["member_id"] for c in payload.get(key, ())} - members
            if orphans:
                raise ProtocolError(f"invalid: {key} of unknown members: "
                                    f"{sorted(orphans)[:3]}")
    return payload
