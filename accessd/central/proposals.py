"""What doors propose and what the office accepts: a door's change is never an office row.

A door journals its host's changes (`member.enrolled`, `member.updated`, `credential.revoked`)
and the collector hands each new one to `DoorChanges.receive`. Each becomes a *proposal*: the
door and event number it came from, the office's receive time, the proposed member or card row
and a state, `pending`, `approved` or `rejected`. Publishing sends only office rows, so a
proposal reaches no other door until the office accepts it, and every document lists the
pending proposals' numbers per door (`pending`), so that the proposing door keeps its own
change meanwhile and drops it once the office has said no.

What is applied at once, without an operator (docs/central.md):

- a *restriction* of an office row: a suspension is applied as it is; a revocation is applied
  as a suspension, and the revocation itself waits for approval (revocation is terminal, so a
  stolen door login must not be able to revoke a site for good);
- with the site's policy `auto-restricted`, a *new* member and the card it was enrolled with,
  restricted to the occasional plan and to a validity of `days` from the receive date; the
  full request stays pending.

Nothing else a door sends changes an office row: a raise (an un-suspension, a better plan, a
longer validity, an extra card, a new member) waits for `approve`; a member or card revoked at
the office is never brought back (accessd.rights), and proposals about one are rejected.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from accessd.decision import Status
from accessd.errors import ProposalError
from accessd.events import EventType, format_ts, utcnow
from accessd.rights import card_raises, raises, restricts, stricter
from accessd.schema import CREDENTIALS, MEMBERS, check_value

if TYPE_CHECKING:
    from accessd.central.store import CentralStore

log = logging.getLogger(__name__)

POLICIES = ("approve", "auto-restricted")
DEFAULT_DAYS = 30
STATES = ("pending", "approved", "rejected")
PROVISIONAL = "accepted at once as"  # how `applied` starts for the policy's new members
_P = ("id", "site", "door", "seq", "kind", "member_id", "credential_hash", "proposed",
      "received_at", "state", "applied", "decided_at", "decided_by", "note")
_MEMBER = MEMBERS.names("door")  # what a door knows of a member: the rows it proposes
_CARD = CREDENTIALS.names("door")


class DoorChanges:
    """The proposals of one office store (tables in `accessd.central.store.RIGHTS_SCHEMA`)."""

    def __init__(self, store: CentralStore) -> None:
        self.store = store

    # -- policy -----------------------------------------------------------------------------
    def set_policy(self, site: str, door_enrolments: str, days: int = DEFAULT_DAYS) -> None:
        if door_enrolments not in POLICIES:
            raise ValueError(f"door enrolments: expected {' or '.join(POLICIES)}, "
                             f"got {door_enrolments!r}")
        if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 366:
            raise ValueError("door enrolment days: a whole number from 1 to 366")
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO door_policy (site, door_enrolments, days) VALUES (?, ?, ?) "
                "ON CONFLICT (site) DO UPDATE SET door_enrolments = excluded.door_enrolments, "
                "days = excluded.days", (site, door_enrolments, days))

    def policy(self, site: str) -> dict[str, Any]:
        rows = self.store.rows("SELECT door_enrolments, days FROM door_policy WHERE site = ?",
                               (site,))
        policy, days = rows[0] if rows else ("approve", DEFAULT_DAYS)
        return {"door_enrolments": policy, "days": days}

    # -- receiving (inside the collector's transaction) ------------------------------------
    def receive(self, m: dict[str, Any]) -> None:
        """Turn one new door event into proposals; restrictions and policy applied at once."""
        site, door, seq = m["site"], m["door"], int(m["seq"])
        detail = m.get("detail") if isinstance(m.get("detail"), dict) else {}
        now = format_ts(utcnow())
        created = False
        member = _member_row(detail.get("member"))
        if m["type"] == str(EventType.CREDENTIAL_REVOKED):
            card = detail.get("credential_hash")
            if _is_hash(card):
                self._card_revoked(site, door, seq, card, now)
            return
        if member is not None:
            created = self._member(site, door, seq, member, now)
        card = detail.get("credential_hash")
        mid = member["id"] if member else m.get("member_id")
        if _is_hash(card) and isinstance(mid, str) and mid:
            self._card(site, door, seq, {"hash": card, "member_id": mid, "status": "active",
                                         "technology": _text(detail.get("technology"))},
                       now, accept=created)
        elif member is None:
            log.warning("%s/%s #%s: %s without a member row; ignored", site, door, seq,
                        m["type"])

    def _member(self, site: str, door: str, seq: int, row: dict[str, Any], now: str) -> bool:
        """A member row from a door; True when the policy just accepted it as a new member."""
        mid = row["id"]
        if self._revoked(site, "member", mid):
            self._record(site, door, seq, "member", mid, None, row, now, "rejected",
                         note="the member is revoked at the office")
            return False
        office = self._office_member(site, mid)
        if office is None:
            self._restrict_open(site, "member", mid, row["status"])
            policy = self.policy(site)
            pid = self._open(site, door, seq, "member", mid, None, row, now)
            if policy["door_enrolments"] != "auto-restricted":
                return False
            restricted = _restricted(row, self._cap(site, policy["days"]))
            self._write_member(site, restricted, "site", now)
            words = (f"{PROVISIONAL} {restricted['plan']} until {restricted['valid_until']} "
                     "(auto-restricted)")
            if raises(restricted, row):
                self._set(pid, applied=words)
            else:
                self._decide(pid, "approved", "policy:auto-restricted", now, applied=words)
            return True
        status = row["status"]
        if restricts(office["status"], status):
            at_once = Status.SUSPENDED if status == "revoked" else Status(status)
            if restricts(office["status"], at_once):
                self.store.execute("UPDATE members SET status = ?, updated_at = ? WHERE "
                                   "site = ? AND id = ?", (str(at_once), now, site, mid))
            self._restrict_open(site, "member", mid, status)
            words = f"{at_once} at once (a restriction)"
            if status == "revoked" or raises({**office, "status": str(at_once)}, row):
                pid = self._open(site, door, seq, "member", mid, None, row, now)
                self._set(pid, applied=words)
            else:
                self._record(site, door, seq, "member", mid, None, row, now, "approved",
                             applied=words, by="restriction")
        elif raises(office, row):
            self._open(site, door, seq, "member", mid, None, row, now)
        return False

    def _card(self, site: str, door: str, seq: int, card: dict[str, Any], now: str,
              *, accept: bool) -> None:
        h, mid = card["hash"], card["member_id"]
        if self._revoked(site, "credential", h) or self._revoked(site, "member", mid):
            self._record(site, door, seq, "card", mid, h, card, now, "rejected",
                         note="the card or its member is revoked at the office")
            return
        office = self._office_card(site, h)
        if office is not None and not card_raises(office, card):
            return  # the office has it so already
        pid = self._open(site, door, seq, "card", mid, h, card, now)
        if accept and office is None:  # the card a new member was enrolled with
            self._write_card(site, card, "site", now)
            self._decide(pid, "approved", "policy:auto-restricted", now,
                         applied="accepted at once with its new member (auto-restricted)")

    def _card_revoked(self, site: str, door: str, seq: int, h: str, now: str) -> None:
        self._restrict_open(site, "card", h, "revoked")
        office = self._office_card(site, h)
        if office is None or office["status"] == "revoked":
            return
        if restricts(office["status"], "suspended"):
            self.store.execute("UPDATE credentials SET status = 'suspended', updated_at = ? "
                               "WHERE site = ? AND hash = ?", (now, site, h))
        pid = self._open(site, door, seq, "card", office["member_id"], h,
                         {**{k: office[k] for k in ("hash", "member_id", "technology")},
                          "status": "revoked"}, now)
        self._set(pid, applied="suspended at once (a restriction)")

    # -- listing, approving, rejecting ------------------------------------------------------
    def list(self, site: str | None, state: str = "pending",
             ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """Proposals, oldest first, each with what approving it now would grant (`grants`)."""
        where, args = [], []
        if site is not None:
            where.append("site = ?")
            args.append(site)
        if state != "all":
            if state not in STATES:
                raise ValueError(f"state: expected {', '.join(STATES)} or all, got {state!r}")
            where.append("state = ?")
            args.append(state)
        wanted = list(ids) if ids is not None else None
        if wanted is not None:
            if not wanted:
                return []
            where.append(f"id IN ({', '.join('?' * len(wanted))})")
            args += wanted
        sql = (f"SELECT {', '.join(_P)} FROM proposals"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id")
        out = []
        for r in self.store.rows(sql, args):
            p = dict(zip(_P, r, strict=True))
            p["proposed"] = json.loads(p["proposed"])
            p["grants"] = self._grants(p)
            out.append(p)
        return out

    def pending_seqs(self, site: str) -> dict[str, list[int]]:
        """Per door, the event numbers of its pending proposals (the documents' `pending`)."""
        out: dict[str, list[int]] = {}
        for door, seq in self.store.rows("SELECT DISTINCT door, seq FROM proposals WHERE "
                                         "site = ? AND state = 'pending' ORDER BY door, seq",
                                         (site,)):
            out.setdefault(door, []).append(int(seq))
        return out

    def approve(self, site: str, ids: list[int] | None, by: str) -> list[dict[str, Any]]:
        """Accept proposals (None: every pending one of the site), members before cards.

        Returns the proposals as they ended: approved, or rejected when what they name was
        revoked at the office meanwhile. A card whose member is not an office row (its
        enrolment not approved) stays pending, and so does anything asked by id that is not.
        """
        now = format_ts(utcnow())
        done = []
        with self.store.transaction():
            todo = self.list(site, "pending", ids)
            if ids is not None and len(todo) != len(set(ids)):
                missing = sorted(set(ids) - {p["id"] for p in todo})
                raise ProposalError(f"no pending proposal {', '.join(map(str, missing))} at "
                                    f"site {site}")
            todo.sort(key=lambda p: (p["kind"] != "member", p["id"]))
            for p in todo:
                row = p["proposed"]
                if p["kind"] == "member":
                    if self._revoked(site, "member", p["member_id"]):
                        self._decide(p["id"], "rejected", by, now,
                                     note="the member is revoked at the office")
                    else:
                        office = self._office_member(site, p["member_id"])
                        self._write_member(site, row, office["origin"] if office else "site",
                                           now)
                        self._decide(p["id"], "approved", by, now)
                else:
                    if self._revoked(site, "credential", p["credential_hash"]) or \
                            self._revoked(site, "member", p["member_id"]):
                        self._decide(p["id"], "rejected", by, now,
                                     note="the card or its member is revoked at the office")
                    elif self._office_member(site, p["member_id"]) is None:
                        if ids is not None:
                            raise ProposalError(
                                f"proposal {p['id']}: member {p['member_id']} is not in the "
                                "office's rules: approve its enrolment first")
                        continue
                    else:
                        office = self._office_card(site, p["credential_hash"])
                        self._write_card(site, row, office["origin"] if office else "site",
                                         now)
                        self._decide(p["id"], "approved", by, now)
                done.append(p["id"])
        return self.list(site, "all", done)

    def reject(self, site: str | None, ids: list[int], by: str,
               note: str | None = None) -> list[dict[str, Any]]:
        """Refuse pending proposals; a new member the policy accepted at once goes again."""
        now = format_ts(utcnow())
        with self.store.transaction():
            todo = self.list(site, "pending", ids)
            if len(todo) != len(set(ids)):
                missing = sorted(set(ids) - {p["id"] for p in todo})
                raise ProposalError(f"no pending proposal {', '.join(map(str, missing))}"
                                    + (f" at site {site}" if site else ""))
            for p in todo:
                if p["kind"] == "member" and (p["applied"] or "").startswith(PROVISIONAL):
                    self.store.execute("DELETE FROM credentials WHERE site = ? AND "
                                       "member_id = ? AND origin = 'site'",
                                       (p["site"], p["member_id"]))
                    self.store.execute("DELETE FROM members WHERE site = ? AND id = ? AND "
                                       "origin = 'site'", (p["site"], p["member_id"]))
                self._decide(p["id"], "rejected", by, now, note=note)
        return self.list(site, "all", [p["id"] for p in todo])

    def reject_about(self, site: str, *, member_id: str | None = None,
                     credential_hash: str | None = None, note: str) -> int:
        """Reject the pending proposals naming this member or card (an office revocation)."""
        now = format_ts(utcnow())
        if member_id is not None:
            sql, key = "member_id = ?", member_id
        else:
            sql, key = "credential_hash = ?", credential_hash
        return self.store.execute(
            f"UPDATE proposals SET state = 'rejected', decided_at = ?, decided_by = 'office', "
            f"note = ? WHERE site = ? AND state = 'pending' AND {sql}",
            (now, note, site, key)).rowcount

    # -- helpers ----------------------------------------------------------------------------
    def _grants(self, p: dict[str, Any]) -> list[str]:
        if p["kind"] == "member":
            return raises(self._office_member(p["site"], p["member_id"]), p["proposed"])
        return card_raises(self._office_card(p["site"], p["credential_hash"]), p["proposed"])

    def _revoked(self, site: str, kind: str, key: str) -> bool:
        return self.store.is_revoked(site, kind, key)

    def _office_member(self, site: str, mid: str) -> dict[str, Any] | None:
        rows = self.store.rows(f"SELECT {', '.join(_MEMBER)} FROM members WHERE site = ? AND "
                               "id = ?", (site, mid))
        return dict(zip(_MEMBER, rows[0], strict=True)) if rows else None

    def _office_card(self, site: str, h: str) -> dict[str, Any] | None:
        rows = self.store.rows(f"SELECT {', '.join(_CARD)} FROM credentials WHERE site = ? "
                               "AND hash = ?", (site, h))
        return dict(zip(_CARD, rows[0], strict=True)) if rows else None

    def _write_member(self, site: str, row: dict[str, Any], origin: str, now: str) -> None:
        from accessd.central.store import UPSERT_DOOR_MEMBER

        self.store.execute(UPSERT_DOOR_MEMBER, (site, *(row.get(n) for n in _MEMBER[:-2]),
                                                origin, now))
        if row["status"] == "revoked":
            self.store.record_revocation(site, "member", row["id"], now)

    def _write_card(self, site: str, card: dict[str, Any], origin: str, now: str) -> None:
        from accessd.central.store import UPSERT_DOOR_CREDENTIAL

        self.store.execute(UPSERT_DOOR_CREDENTIAL, (site, *(card.get(n) for n in _CARD[:-3]),
                                                    origin, now, now))
        if card["status"] == "revoked":
            self.store.record_revocation(site, "credential", card["hash"], now)

    def _restrict_open(self, site: str, kind: str, key: str, status: str) -> None:
        """A restriction also restricts every pending proposal of that member or card."""
        column = "member_id" if kind == "member" else "credential_hash"
        for pid, proposed in self.store.rows(
                f"SELECT id, proposed FROM proposals WHERE site = ? AND kind = ? AND "
                f"{column} = ? AND state = 'pending'", (site, kind, key)):
            row = json.loads(proposed)
            if restricts(row["status"], status):
                row["status"] = str(stricter(row["status"], status))
                self._set(pid, proposed=json.dumps(row, sort_keys=True))

    def _open(self, site: str, door: str, seq: int, kind: str, mid: str, h: str | None,
              row: dict[str, Any], now: str) -> int:
        """The door's pending proposal for this member or card, replaced by the newer row."""
        column, key = ("member_id", mid) if kind == "member" else ("credential_hash", h)
        found = self.store.rows(f"SELECT id FROM proposals WHERE site = ? AND door = ? AND "
                                f"kind = ? AND {column} = ? AND state = 'pending'",
                                (site, door, kind, key))
        if found:
            pid = int(found[0][0])
            self.store.execute("UPDATE proposals SET seq = ?, member_id = ?, proposed = ?, "
                               "received_at = ?, applied = NULL WHERE id = ?",
                               (seq, mid, json.dumps(row, sort_keys=True), now, pid))
            return pid
        return self._record(site, door, seq, kind, mid, h, row, now, "pending")

    def _record(self, site: str, door: str, seq: int, kind: str, mid: str, h: str | None,
                row: dict[str, Any], now: str, state: str, *, applied: str | None = None,
                by: str | None = None, note: str | None = None) -> int:
        decided = now if state != "pending" else None
        by = by or ("office" if state != "pending" else None)
        rows = self.store.rows(
            "INSERT INTO proposals (site, door, seq, kind, member_id, credential_hash, "
            "proposed, received_at, state, applied, decided_at, decided_by, note) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (site, door, seq, kind, mid, h, json.dumps(row, sort_keys=True), now, state,
             applied, decided, by, note))
        return int(rows[0][0])

    def _set(self, pid: int, **values: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in values)
        self.store.execute(f"UPDATE proposals SET {cols} WHERE id = ?", (*values.values(), pid))

    def _decide(self, pid: int, state: str, by: str, now: str, **values: Any) -> None:
        self._set(pid, state=state, decided_at=now, decided_by=by, **values)

    def _cap(self, site: str, days: int) -> date:
        tz_name = (self.store.site(site) or {}).get("timezone") or "UTC"
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            tz = ZoneInfo("UTC")
        return datetime.now(tz).date() + timedelta(days=days)


def _restricted(row: dict[str, Any], cap: date) -> dict[str, Any]:
    """A new member as the auto-restricted policy admits it: opening hours, until `cap`."""
    until = row.get("valid_until")
    return {**row, "plan": "occasional",
            "valid_until": min(until, cap.isoformat()) if until else cap.isoformat()}


def _member_row(value: Any) -> dict[str, Any] | None:
    """The member row an event carries, each field checked for what it means by the member
    schema (accessd.schema); None if it is unusable."""
    if not isinstance(value, dict) or not isinstance(value.get("id"), str):
        return None
    name = value.get("name")
    raw = {**value, "name": str(name)[:200] if name else value["id"],
           "status": value.get("status", "active")}
    row = {}
    for f in MEMBERS.fields:
        if f.where == "door" and not f.meta:
            try:
                row[f.name] = check_value(f, raw.get(f.name))
            except ValueError:
                return None
    if row["valid_from"] and row["valid_until"] and row["valid_until"] < row["valid_from"]:
        return None
    return row


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(
        c in "0123456789abcdef" for c in value)


def _text(value: Any) -> str | None:
    return value[:64] if isinstance(value, str) and value else None
