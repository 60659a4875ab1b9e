"""The office's changes to one member, as the web application makes them: each checked, each
stored in one transaction, then signed and sent to the doors by the one publish path.

- `add_member`, `add_card`: a new office member (origin `central`), a card enrolled by its
  number, hashed with the site's key (the number itself is never stored). A revoked member
  or card is never enrolled again; a card held by another member is refused.
- `change_member`: name, plan, validity (not of a revoked member).
- `set_status`: suspend, resume, revoke a member; `set_card_status` likewise for one card.
  Every status change goes through `accessd.rights.transition`: revocation is terminal
  (`CentralStore.revoke`, recorded for good, pending proposals about it rejected).
- `approve`, `reject`: the doors' proposals (`accessd.central.proposals`).
- `publish`: `publisher.build` + `publisher.send`, as `accessd central publish` does, with a
  retry when another worker recorded the same version number first.

Errors are `OfficeActionError` naming the form field they are about; nothing is stored when
one is raised.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from accessd.central.members import PLANS
from accessd.credentials import CredentialHasher
from accessd.errors import CardNumberError, OfficeActionError, ProposalError, StoreError
from accessd.events import format_ts, utcnow
from accessd.readers.uid import normalise_uid
from accessd.rights import Change, transition

if TYPE_CHECKING:
    from accessd.central.store import CentralStore
    from accessd.protocol.signing import OfficeKey
    from accessd.protocol.transport import BrokerSettings

log = logging.getLogger(__name__)

MEMBER = ("id", "name", "plan", "status", "valid_from", "valid_until", "origin", "updated_at")
CARD = ("hash", "member_id", "status", "technology", "origin", "enrolled_at", "updated_at")


# -- reading ------------------------------------------------------------------------------------
def member(store: CentralStore, site: str, member_id: str) -> dict[str, Any] | None:
    rows = store.rows(f"SELECT {', '.join(MEMBER)} FROM members WHERE site = ? AND id = ?",
                      (site, member_id))
    return dict(zip(MEMBER, rows[0], strict=True)) if rows else None


def cards(store: CentralStore, site: str, member_id: str) -> list[dict[str, Any]]:
    return [dict(zip(CARD, r, strict=True)) for r in store.rows(
        f"SELECT {', '.join(CARD)} FROM credentials WHERE site = ? AND member_id = ? "
        "ORDER BY enrolled_at, hash", (site, member_id))]


def search(store: CentralStore, sites: list[str], text: str, *, limit: int = 100,
           ) -> list[dict[str, Any]]:
    """Members of `sites` whose name or id contains `text`, or who hold a card whose number
    (hashed with each site's key) or hash prefix is `text`."""
    if not sites:
        return []
    marks = ", ".join("?" * len(sites))
    text = text.strip()
    cols = ", ".join(f"m.{c}" for c in MEMBER)
    if not text:
        rows = store.rows(f"SELECT m.site, {cols} FROM members m WHERE m.site IN ({marks}) "
                          f"ORDER BY lower(m.name), m.id LIMIT {int(limit)}", sites)
    else:
        like = f"%{text.lower()}%"
        hashes = [h for h in (_hash_for(store, s, text) for s in sites) if h]
        prefix = text.lower() if len(text) >= 6 and all(
            c in "0123456789abcdef" for c in text.lower()) else None
        where = ["lower(m.name) LIKE ?", "lower(m.id) LIKE ?"]
        args: list[Any] = [like, like]
        card_where = []
        if hashes:
            card_where.append(f"c.hash IN ({', '.join('?' * len(hashes))})")
            args += hashes
        if prefix:
            card_where.append("c.hash LIKE ?")
            args.append(prefix + "%")
        if card_where:
            where.append(f"EXISTS (SELECT 1 FROM credentials c WHERE c.site = m.site AND "
                         f"c.member_id = m.id AND ({' OR '.join(card_where)}))")
        rows = store.rows(f"SELECT m.site, {cols} FROM members m WHERE m.site IN ({marks}) "
                          f"AND ({' OR '.join(where)}) ORDER BY lower(m.name), m.id "
                          f"LIMIT {int(limit)}", [*sites, *args])
    return [{"site": r[0], **dict(zip(MEMBER, r[1:], strict=True))} for r in rows]


def _hash_for(store: CentralStore, site: str, text: str) -> str | None:
    key = (store.site(site) or {}).get("credential_key")
    if not key:
        return None
    try:
        return CredentialHasher(bytes.fromhex(key))(normalise_uid(text))
    except (CardNumberError, ValueError):
        return None


# -- checks -------------------------------------------------------------------------------------
def _text(value: Any, field: str, what: str, longest: int) -> str:
    text = (value or "").strip() if isinstance(value, str) else ""
    if not text:
        raise OfficeActionError(f"{what} is required", field)
    if len(text) > longest:
        raise OfficeActionError(f"{what}: at most {longest} characters", field)
    return text


def _date(value: Any, field: str) -> str | None:
    text = (value or "").strip() if isinstance(value, str) else ""
    if not text:
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise OfficeActionError(f"expected a date, YYYY-MM-DD (got {text!r})", field) from None


def member_fields(data: dict[str, Any], *, new: bool) -> dict[str, Any]:
    """A member's fields from a form, checked; OfficeActionError names the first bad field."""
    out: dict[str, Any] = {}
    if new:
        mid = _text(data.get("id"), "id", "the member id", 64)
        if any(c.isspace() for c in mid) or "/" in mid:
            raise OfficeActionError("the member id: no spaces or slashes", "id")
        out["id"] = mid
    out["name"] = _text(data.get("name"), "name", "the name", 200)
    plan = (data.get("plan") or "").strip()
    if plan not in PLANS:
        raise OfficeActionError(f"the plan: {' or '.join(PLANS)}", "plan")
    out["plan"] = plan
    out["valid_from"] = _date(data.get("valid_from"), "valid_from")
    out["valid_until"] = _date(data.get("valid_until"), "valid_until")
    if out["valid_from"] and out["valid_until"] and out["valid_until"] < out["valid_from"]:
        raise OfficeActionError("ends before it starts (valid from)", "valid_until")
    return out


def card_hash(store: CentralStore, site: str, number: str, field: str = "card") -> str:
    """The keyed hash of a card number typed by a person, with the site's key."""
    key = (store.site(site) or {}).get("credential_key")
    if not key:
        raise OfficeActionError(f"site {site} has no card key at the office "
                                "(accessd central site --key-file): cards cannot be enrolled "
                                "by number", field)
    try:
        return CredentialHasher(bytes.fromhex(key))(normalise_uid(number))
    except CardNumberError as exc:
        raise OfficeActionError(str(exc), field) from None


def _check_card_free(store: CentralStore, site: str, h: str, member_id: str) -> None:
    if store.is_revoked(site, "credential", h):
        raise OfficeActionError("this card was revoked for good: a revoked card is never "
                                "enrolled again (use a new card)", "card")
    held = store.rows("SELECT member_id FROM credentials WHERE site = ? AND hash = ?",
                      (site, h))
    if held and held[0][0] != member_id:
        raise OfficeActionError(f"this card belongs to member {held[0][0]}", "card")
    if held:
        raise OfficeActionError("this card is already enrolled to this member", "card")


# -- changes ------------------------------------------------------------------------------------
def add_member(store: CentralStore, site: str, data: dict[str, Any]) -> dict[str, Any]:
    """A new office member, with the card whose number the form gives (if any)."""
    from accessd.central.store import UPSERT_CREDENTIAL, UPSERT_MEMBER

    row = member_fields(data, new=True)
    number = (data.get("card") or "").strip()
    now = format_ts(utcnow())
    with store.transaction():
        if store.is_revoked(site, "member", row["id"]):
            raise OfficeActionError(f"member {row['id']} was revoked for good: a revoked "
                                    "member is never enrolled again", "id")
        if member(store, site, row["id"]):
            raise OfficeActionError(f"member {row['id']} exists at {site}", "id")
        h = None
        if number:
            h = card_hash(store, site, number)
            _check_card_free(store, site, h, row["id"])
        store.execute(UPSERT_MEMBER, (site, row["id"], row["name"], row["plan"], "active",
                                      row["valid_from"], row["valid_until"], "central", now))
        if h:
            store.execute(UPSERT_CREDENTIAL, (site, h, row["id"], "active", None, "central",
                                              now, now))
    return {**row, "status": "active", "card": h}


def add_card(store: CentralStore, site: str, member_id: str, number: str) -> str:
    from accessd.central.store import UPSERT_CREDENTIAL

    if not number.strip():
        raise OfficeActionError("the card number is required", "card")
    now = format_ts(utcnow())
    with store.transaction():
        m = _existing(store, site, member_id)
        if m["status"] == "revoked":
            raise OfficeActionError(transition("revoked", "active").why, "card")
        h = card_hash(store, site, number)
        _check_card_free(store, site, h, member_id)
        store.execute(UPSERT_CREDENTIAL, (site, h, member_id, "active", None, "central", now,
                                          now))
    return h


def change_member(store: CentralStore, site: str, member_id: str,
                  data: dict[str, Any]) -> list[str]:
    """Name, plan, validity; returns what changed, in words ([]: nothing)."""
    fields = member_fields(data, new=False)
    with store.transaction():
        m = _existing(store, site, member_id)
        if m["status"] == "revoked":
            raise OfficeActionError(transition("revoked", "active").why, "plan")
        changed = [f"{k} {m[k] or '…'} -> {v or '…'}" for k, v in fields.items() if m[k] != v]
        if changed:
            store.execute("UPDATE members SET name = ?, plan = ?, valid_from = ?, "
                          "valid_until = ?, updated_at = ? WHERE site = ? AND id = ?",
                          (fields["name"], fields["plan"], fields["valid_from"],
                           fields["valid_until"], format_ts(utcnow()), site, member_id))
    return changed


def set_status(store: CentralStore, site: str, member_id: str, wanted: str) -> Change:
    """Suspend, resume (active) or revoke a member, as accessd.rights allows."""
    with store.transaction():
        m = _existing(store, site, member_id)
        verdict = transition(m["status"], wanted)
        if verdict.change is Change.REFUSED:
            raise OfficeActionError(verdict.why, "status")
        if verdict.change is Change.UNCHANGED:
            return Change.UNCHANGED
        if wanted == "revoked":
            return store.revoke(site, member_id=member_id)
        store.execute("UPDATE members SET status = ?, updated_at = ? WHERE site = ? AND id = ?",
                      (wanted, format_ts(utcnow()), site, member_id))
    return Change.CHANGED


def set_card_status(store: CentralStore, site: str, member_id: str, h: str,
                    wanted: str) -> Change:
    """Suspend, resume or revoke one card (a lost card) of the member."""
    with store.transaction():
        rows = store.rows("SELECT status FROM credentials WHERE site = ? AND hash = ? AND "
                          "member_id = ?", (site, h, member_id))
        if not rows:
            raise OfficeActionError("no such card for this member", "card")
        verdict = transition(rows[0][0], wanted, "card")
        if verdict.change is Change.REFUSED:
            raise OfficeActionError(verdict.why, "card")
        if verdict.change is Change.UNCHANGED:
            return Change.UNCHANGED
        if wanted == "revoked":
            return store.revoke(site, credential_hash=h)
        store.execute("UPDATE credentials SET status = ?, updated_at = ? WHERE site = ? AND "
                      "hash = ?", (wanted, format_ts(utcnow()), site, h))
    return Change.CHANGED


def approve(store: CentralStore, site: str, ids: list[int], by: str) -> list[dict[str, Any]]:
    try:
        return store.approve(site, ids, by=by)
    except ProposalError as exc:
        raise OfficeActionError(str(exc), "proposal") from None


def reject(store: CentralStore, site: str, ids: list[int], by: str,
           note: str | None) -> list[dict[str, Any]]:
    try:
        return store.reject(site, ids, by=by, note=note)
    except ProposalError as exc:
        raise OfficeActionError(str(exc), "proposal") from None


def _existing(store: CentralStore, site: str, member_id: str) -> dict[str, Any]:
    m = member(store, site, member_id)
    if m is None:
        raise OfficeActionError(f"no member {member_id} at {site}", "id")
    return m


# -- publishing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Published:
    version: int | None  # None: nothing signed (no office key)
    sent: bool
    error: str | None = None

    def words(self) -> str:
        if self.version is None:
            return f"not published: {self.error}"
        if self.sent:
            return f"rules version {self.version} signed and sent to the doors"
        return (f"rules version {self.version} signed and recorded, but not sent: "
                f"{self.error}. Doors get it when they next ask (or run publish again)")


@dataclass(frozen=True)
class Publishing:
    """What publishing needs: the office's key, the broker, the topic prefix."""

    key: OfficeKey | None
    settings: BrokerSettings | None
    prefix: str = "accessd"

    def publish(self, store: CentralStore, site: str, attempts: int = 5) -> Published:
        from accessd.central import publisher

        if self.key is None:
            return Published(None, False, "this office has no signing key (--key); run "
                             "`accessd central publish` where the key is")
        docs = None
        for attempt in range(attempts):
            try:
                docs = publisher.build(store, self.key, site, delta=True)
                break
            except StoreError:  # another worker recorded this version number first
                if attempt == attempts - 1:
                    raise
        assert docs is not None
        if self.settings is None:
            return Published(docs.version, False, "no broker configured")
        try:
            # a client id of its own: workers publishing at once must not take over each
            # other's broker session
            publisher.send(docs, self.settings, prefix=self.prefix, timeout_s=10,
                           client_id=f"accessd-office-{os.getpid()}-{secrets.token_hex(3)}")
        except (ConnectionError, TimeoutError, RuntimeError, OSError) as exc:
            log.warning("site %s: version %d recorded, not sent: %s", site, docs.version, exc)
            return Published(docs.version, False, str(exc))
        return Published(docs.version, True)
