"""The operator's members file: CSV or JSON, as kept in a spreadsheet.

One row per card (a member with two cards has two rows with the same id; member fields may be
left blank on the second). The columns are the member's fields that have a members-file
column in the member schema (accessd.schema: id, name, plan, status, valid_from,
valid_until, email), then the card's: card, credential_hash, card_status, technology
(docs/central.md). Each value is checked as the schema says.

`card` is the raw UID printed on or read from the card; it is hashed with the site's key at
publish time and never stored. `credential_hash` is an already keyed hash (64 hex digits).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accessd.errors import AccessdError, CardNumberError
from accessd.readers.uid import normalise_uid
from accessd.schema import MEMBERS, PLANS, STATUSES, check_value, members_file_columns

COLUMNS = members_file_columns()
__all__ = ["COLUMNS", "PLANS", "STATUSES", "MembersFileError", "read_members"]
MEMBER_FIELDS = tuple(f for f in MEMBERS.fields if f.csv and f.name != "id")
FILE_DEFAULTS = {"status": "active"}  # a blank status is an active member


class MembersFileError(AccessdError, ValueError):
    """The members file is malformed (names the file, the row and the column)."""


def read_members(path: Path, hasher: Callable[[str], str] | None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(members, credentials) from a .csv or .json file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise MembersFileError(f"{path}: cannot read: {exc.strerror}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise MembersFileError(f"{path}: not JSON: {exc}") from None
        rows = data.get("members") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise MembersFileError(f"{path}: expected a list of members")
    else:
        reader = csv.DictReader(io.StringIO(text))
        unknown = set(reader.fieldnames or ()) - set(COLUMNS)
        if unknown:
            raise MembersFileError(f"{path}: unknown column(s) {sorted(unknown)}; "
                                   f"use {', '.join(COLUMNS)}")
        rows = list(reader)
    return _parse(rows, str(path), hasher)


def _parse(rows: list[Any], where: str, hasher: Callable[[str], str] | None
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    members: dict[str, dict[str, Any]] = {}
    creds: dict[str, dict[str, Any]] = {}
    for n, raw in enumerate(rows, 2 if not where.endswith(".json") else 1):
        if not isinstance(raw, dict):
            raise MembersFileError(f"{where}: row {n}: expected an object")
        row = {k: (v.strip() if isinstance(v, str) else v) for k, v in raw.items()}

        def fail(col: str, msg: str, n: int = n) -> MembersFileError:
            return MembersFileError(f"{where}: row {n}: {col}: {msg}")

        mid = row.get("id")
        if not mid:
            raise fail("id", "every row needs the member id")
        if mid not in members:
            member = {"id": mid}
            for f in MEMBER_FIELDS:
                try:
                    value = check_value(f, row.get(f.csv) or FILE_DEFAULTS.get(f.name))
                except ValueError as exc:
                    raise fail(f.csv or f.name, "every member needs one" if str(exc) ==
                               "required" else str(exc)) from None
                if value is not None:
                    member[f.name] = value
            member.setdefault("valid_from", None)
            member.setdefault("valid_until", None)
            if member["valid_from"] and member["valid_until"] and \
                    member["valid_until"] < member["valid_from"]:
                raise fail("valid_until", "ends before valid_from")
            members[mid] = member
        cards = _many(row.get("card")) + [("hash", h) for h in _hashes(row)]
        for kind, value in cards:
            if kind == "card":
                if hasher is None:
                    raise fail("card", "raw card numbers need the site's key "
                               "(accessd central site --key-file, or use credential_hash)")
                try:
                    value = hasher(normalise_uid(value))
                except CardNumberError as exc:
                    raise fail("card", str(exc)) from None
            elif len(value) != 64 or any(ch not in "0123456789abcdef" for ch in value):
                raise fail("credential_hash", "expected 64 lower-case hex digits")
            status = row.get("card_status") or "active"
            if status not in STATUSES:
                raise fail("card_status", f"must be one of {', '.join(STATUSES)}")
            if value in creds and creds[value]["member_id"] != mid:
                raise fail("card", f"the same card is also given to {creds[value]['member_id']}")
            creds[value] = {"hash": value, "member_id": mid, "status": status,
                            "technology": row.get("technology") or None}
    return list(members.values()), list(creds.values())


def _many(value: Any) -> list[tuple[str, str]]:
    if not value:
        return []
    items = value if isinstance(value, list) else [value]
    return [("card", str(v)) for v in items if str(v).strip()]


def _hashes(row: dict[str, Any]) -> list[str]:
    value = row.get("credential_hash")
    if not value:
        return []
    return [str(v).lower() for v in (value if isinstance(value, list) else [value])]
