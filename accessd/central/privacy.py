"""A member's rights at the office: export everything held about them, or erase them.

`export` gathers the member's row, cards, movement log, door proposals, billing lines,
revocations and the audit lines about them, as one JSON document or one CSV file (a `record`
column says what each line is).

`erase` removes the identity everywhere the office holds it, in one transaction:

- the member's row and cards go, and the next signed rules (published by the caller) remove
  them at every door;
- their events keep a pseudonym (`erased-` and 12 random hex digits, the same for all their
  events, so counts stay right) instead of the id; the name and the card's short hash go, and
  the details of the enrolment events that carried their row;
- their door proposals, and conflicts that name them, are deleted; their id in the
  revocations and in the audit log becomes the pseudonym (a revoked card's hash stays: a
  revoked card is never enrolled again);
- billing lines of frozen months are kept, as the law allows for issued invoices;
- signed rule versions other than the latest are deleted once the new one is recorded
  (`prune_versions`): they named the member.

The doors' own journals keep their events until the doors' retention deletes them.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from typing import TYPE_CHECKING, Any

from accessd.central import audit
from accessd.central.memberops import cards, member
from accessd.central.retention import BILLING_COLUMNS
from accessd.central.store import EVENT_COLUMNS
from accessd.credentials import short
from accessd.errors import MemberNotFound
from accessd.events import format_ts, utcnow

if TYPE_CHECKING:
    from accessd.central.store import CentralStore

PREFIX = "erased-"
CSV_COLUMNS = ("record", "ts", "site", "door", "type", "result", "reason", "plan", "status",
               "name", "details")
_CHANGE_TYPES = ("member.enrolled", "member.updated", "credential.revoked")


def _events(store: CentralStore, site: str, member_id: str) -> list[dict[str, Any]]:
    out = []
    for r in store.rows(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE site = ? AND "
                        "member_id = ? ORDER BY ts, door, seq", (site, member_id)):
        e = dict(zip(EVENT_COLUMNS, r, strict=True))
        e["detail"] = json.loads(e["detail"])
        e["clock_trusted"] = bool(e["clock_trusted"])
        out.append(e)
    return out


def export(store: CentralStore, site: str, member_id: str) -> dict[str, Any]:
    """Everything the office holds about one member of one site."""
    row = member(store, site, member_id)
    held = cards(store, site, member_id)
    events = _events(store, site, member_id)
    proposals = [p for p in store.proposals(site, state="all") if p["member_id"] == member_id]
    if row is None and not events and not proposals:
        raise MemberNotFound(f"the office holds nothing about {member_id!r} at site {site}")
    billing = [dict(zip(BILLING_COLUMNS, r, strict=True)) for r in store.rows(
        f"SELECT {', '.join(BILLING_COLUMNS)} FROM billing_lines WHERE site = ? AND "
        "member_id = ? ORDER BY month", (site, member_id))]
    hashes = [c["hash"] for c in held]
    revoked = [{"kind": k, "key": key, "revoked_at": at} for k, key, at in store.rows(
        "SELECT kind, key, revoked_at FROM revocations WHERE site = ? ORDER BY revoked_at",
        (site,)) if (k == "member" and key == member_id) or key in hashes]
    return {"exported_at": format_ts(utcnow()), "site": site, "member_id": member_id,
            "member": row, "cards": held, "events": events, "proposals": proposals,
            "billing": billing, "revocations": revoked,
            "audit": audit.entries(store, site=site, target=member_id, limit=10_000)}


def export_csv(data: dict[str, Any]) -> str:
    """The export as one CSV file: one line per record, `record` saying which."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    site = data["site"]

    def put(record: str, **values: Any) -> None:
        row = {c: "" for c in CSV_COLUMNS}
        row.update({"record": record, "site": site})
        for k, v in values.items():
            row[k] = json.dumps(v, sort_keys=True, ensure_ascii=False) \
                if isinstance(v, dict | list) else ("" if v is None else v)
        w.writerow(row)

    m = data["member"]
    if m:
        put("member", ts=m["updated_at"], plan=m["plan"], status=m["status"], name=m["name"],
            details={k: m[k] for k in ("id", "valid_from", "valid_until", "origin")})
    for c in data["cards"]:
        put("card", ts=c["enrolled_at"], status=c["status"],
            details={k: c[k] for k in ("hash", "technology", "origin", "updated_at")})
    for e in data["events"]:
        put("event", ts=e["ts"], door=e["door"], type=e["type"], result=e["result"],
            reason=e["reason"], plan=e["plan"], name=e["member_name"],
            details={"seq": e["seq"], "reader": e["reader"], "credential": e["credential"],
                     "detail": e["detail"]})
    for p in data["proposals"]:
        put("proposal", ts=p["received_at"], door=p["door"], type=p["kind"],
            status=p["state"], details={"proposed": p["proposed"], "decided_at":
                                        p["decided_at"], "note": p["note"]})
    for b in data["billing"]:
        put("billing", ts=b["month"], name=b["member_name"],
            details={k: b[k] for k in ("visits", "hours", "visits_closed_at_closing_time")})
    for r in data["revocations"]:
        put("revocation", ts=r["revoked_at"], type=r["kind"], details={"key": r["key"]})
    for a in data["audit"]:
        put("audit", ts=a["ts"], type=a["action"], result=a["outcome"],
            details={"actor": a["actor"], "ip": a["ip"], "detail": a["detail"]})
    return buf.getvalue()


def erase(store: CentralStore, site: str, member_id: str) -> dict[str, Any]:
    """Remove the member's identity from the office (see the module docstring); returns the
    pseudonym and what was changed. Publish the site's rules afterwards, then
    `prune_versions`."""
    pseudonym = PREFIX + secrets.token_hex(6)
    done: dict[str, Any] = {"pseudonym": pseudonym}
    with store.transaction():
        row = member(store, site, member_id)
        hashes = {c["hash"] for c in cards(store, site, member_id)}
        hashes |= {r[0] for r in store.rows(
            "SELECT credential_hash FROM proposals WHERE site = ? AND member_id = ? AND "
            "credential_hash IS NOT NULL", (site, member_id))}
        found = store.rows("SELECT count(*) FROM events WHERE site = ? AND member_id = ?",
                           (site, member_id))[0][0]
        proposals = store.rows("SELECT count(*) FROM proposals WHERE site = ? AND "
                               "member_id = ?", (site, member_id))[0][0]
        if row is None and not found and not proposals:
            raise MemberNotFound(f"the office holds nothing about {member_id!r} at site {site}")
        done["events"] = store.execute(
            "UPDATE events SET member_id = ?, member_name = NULL, credential = NULL "
            "WHERE site = ? AND member_id = ?", (pseudonym, site, member_id)).rowcount
        shorts = sorted({short(h) for h in hashes})
        if shorts:
            done["events"] += store.execute(
                f"UPDATE events SET credential = NULL WHERE site = ? AND credential IN "
                f"({', '.join('?' * len(shorts))})", [site, *shorts]).rowcount
        store.execute(
            f"UPDATE events SET detail = ? WHERE site = ? AND member_id = ? AND type IN "
            f"({', '.join('?' * len(_CHANGE_TYPES))})",
            [json.dumps({"erased": True}), site, pseudonym, *_CHANGE_TYPES])
        done["proposals"] = store.execute("DELETE FROM proposals WHERE site = ? AND "
                                          "member_id = ?", (site, member_id)).rowcount
        done["conflicts"] = 0
        for pattern in (f'%"member_id": {json.dumps(member_id)}%',
                        f'%"member_id":{json.dumps(member_id)}%'):
            done["conflicts"] += store.execute(
                "DELETE FROM conflicts WHERE site = ? AND (kept LIKE ? OR refused LIKE ?)",
                (site, pattern, pattern)).rowcount
        done["cards"] = store.execute("DELETE FROM credentials WHERE site = ? AND "
                                      "member_id = ?", (site, member_id)).rowcount
        done["member"] = store.execute("DELETE FROM members WHERE site = ? AND id = ?",
                                       (site, member_id)).rowcount
        store.execute("UPDATE revocations SET key = ? WHERE site = ? AND kind = 'member' AND "
                      "key = ?", (pseudonym, site, member_id))
        done["audit"] = audit.rename_target(store, site, [member_id], pseudonym)
    return done


def prune_versions(store: CentralStore, site: str) -> int:
    """Delete every signed rule version of the site but the latest (after an erasure)."""
    return store.execute("DELETE FROM rule_versions WHERE site = ? AND version < (SELECT "
                         "max(version) FROM rule_versions WHERE site = ?)",
                         (site, site)).rowcount
