"""Random sequences of what hosts, the office and the wires do, against a small model.

Two doors of one site and a real office (in-memory SQLite, real signed documents). Hosts
enrol, add cards, suspend, resume and revoke at their door; the office imports its file,
revokes, approves, rejects and publishes; documents (and crafted ones that try to un-revoke)
reach doors late or not at all; door events reach the collector whenever. After every step:

- revocation is terminal: a member or card once seen revoked at a door, or in the office's
  rows, is never anything else there again;
- a card grants at a door only if that door's host enrolled it, or the office accepted it
  (its file, or an approved proposal): a door's change never opens another door first;
- nothing grants more than the office set: a member not created by that door's host has, at
  that door and in the office's rows, only a plan, a status and a validity the office set.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from rights_helpers import SITE, Office

from accessd import admin
from accessd.decision import Plan, Status
from accessd.errors import (
    AccessdError,
    DuplicateCredential,
    MemberNotFound,
    OfficeOwnedError,
    RevokedError,
)
from accessd.protocol.codec import encode
from accessd.protocol.rules import make_snapshot

CARDS = [f"0C{i:08X}" for i in range(7)]
OFFICE_IDS = ["o0", "o1", "o2"]
UNTILS = [None, "2090-06-30", "2091-01-01"]
DOORS = ("a", "b")
PLANS = ("occasional", "subscriber")
STATUSES = ("active", "suspended", "revoked")


def _until_le(value: str | None, allowed: set[str | None]) -> bool:
    """A validity no longer than one the office set (None: open, the longest)."""
    if None in allowed:
        return True
    return value is not None and value <= max(u for u in allowed if u is not None)


class Site(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.o = Office(None, DOORS)
        self.h = {uid: self.o.hasher(uid) for uid in CARDS}
        # what each door's host created there
        self.local_cards: dict[str, set[str]] = {d: set() for d in DOORS}
        self.local_members: dict[str, set[str]] = {d: set() for d in DOORS}
        # what the office set (its file, its approvals): the most any row may grant
        self.accepted_cards: set[str] = set()
        self.plans: dict[str, set[str]] = {}
        self.statuses: dict[str, set[str]] = {}
        self.untils: dict[str, set[str | None]] = {}
        # revocations seen so far, per place ("office" and each door)
        self.seen_m: dict[str, set[str]] = {p: set() for p in ("office", *DOORS)}
        self.seen_c: dict[str, set[str]] = {p: set() for p in ("office", *DOORS)}
        self.docs: list[Any] = []

    def teardown(self) -> None:
        self.o.close()

    def _office_set(self, row: dict[str, Any]) -> None:
        mid = row["id"]
        self.plans.setdefault(mid, set()).add(row["plan"])
        self.statuses.setdefault(mid, set()).add(row["status"])
        self.untils.setdefault(mid, set()).add(row.get("valid_until"))

    # -- hosts at doors ---------------------------------------------------------------------
    @rule(door=st.sampled_from(DOORS), uid=st.sampled_from(CARDS), plan=st.sampled_from(PLANS),
          until=st.sampled_from(UNTILS))
    def host_enrols(self, door, uid, plan, until):
        d = self.o.doors[door]
        try:
            m = admin.enroll(d.site, name="New", plan=Plan(plan), uid=uid,
                             valid_until=date.fromisoformat(until) if until else None)
        except RevokedError:
            assert self.h[uid] in self.seen_c[door] or self.h[uid] in d.rules.revoked()[1]
            return
        except DuplicateCredential:
            assert d.rules.lookup(self.h[uid]) is not None
            return
        assert self.h[uid] not in self.seen_c[door]
        self.local_cards[door].add(self.h[uid])
        self.local_members[door].add(m.id)

    @rule(data=st.data(), door=st.sampled_from(DOORS), uid=st.sampled_from(CARDS),
          raise_plan=st.booleans())
    def host_adds_a_card(self, data, door, uid, raise_plan):
        d = self.o.doors[door]
        members = d.rules.members()
        if not members:
            return
        m = data.draw(st.sampled_from(members))
        plan = Plan.SUBSCRIBER if raise_plan else m.plan
        try:
            admin.enroll(d.site, name=m.name, plan=plan, uid=uid, member_id=m.id)
        except OfficeOwnedError:
            assert m.origin == "central" and plan is not m.plan
            return
        except RevokedError:
            return
        except DuplicateCredential:
            return
        assert m.origin == "site" or plan is m.plan
        assert m.id not in self.seen_m[door]
        self.local_cards[door].add(self.h[uid])

    @rule(data=st.data(), door=st.sampled_from(DOORS), status=st.sampled_from(STATUSES))
    def host_sets_status(self, data, door, status):
        d = self.o.doors[door]
        members = d.rules.members()
        if not members:
            return
        m = data.draw(st.sampled_from(members))
        before = d.journal.last_seq
        try:
            done = admin.set_status(d.site, m.id, Status(status))
        except RevokedError:
            assert m.status is Status.REVOKED and status != "revoked"
            return
        assert m.id not in self.seen_m[door] or status == "revoked"
        if done.change == "unchanged":
            assert d.journal.last_seq == before
        if done.change == "proposed":
            assert m.origin == "central" and d.rules.member(m.id).status is m.status

    @rule(data=st.data(), door=st.sampled_from(DOORS))
    def host_revokes_a_card(self, data, door):
        d = self.o.doors[door]
        cards = [h for h in self.h.values() if d.rules.lookup(h) is not None]
        if cards:
            admin.revoke_card(d.site, credential=data.draw(st.sampled_from(cards)))

    # -- wires ------------------------------------------------------------------------------
    @rule(door=st.sampled_from(DOORS))
    def door_events_reach_the_office(self, door):
        self.o.deliver(door)

    @rule(delta=st.booleans())
    def office_publishes(self, delta):
        self.docs.append(self.o.publish(delta=delta))

    @precondition(lambda self: self.docs)
    @rule(door=st.sampled_from(DOORS), age=st.integers(0, 2), delta=st.booleans())
    def a_document_reaches_a_door(self, door, age, delta):
        docs = self.docs[-1 - min(age, len(self.docs) - 1)]
        kind = "delta" if delta and docs.delta is not None else "snapshot"
        out = self.o.apply(door, docs, kind)
        assert out.applied or out.ignored or out.reason in ("stale_version", "version_gap")

    @precondition(lambda self: self.docs)
    @rule(door=st.sampled_from(DOORS))
    def a_crafted_document_says_active_for_everything(self, door):
        """Signed with the office's key, newer than anything: the latest rules, except that
        it says active for every member and card this door holds as revoked."""
        d = self.o.doors[door]
        p = self.docs[-1].snapshot["payload"]
        version = max(d.rules.version, self.o.store.latest_version(SITE)) + 1
        gone_m, gone_c = d.rules.revoked()
        members = {m["id"]: m for m in p["members"]}
        for mid in gone_m:
            members[mid] = {"id": mid, "name": "Back", "plan": "subscriber", "status": "active"}
        creds = {c["hash"]: c for c in p["credentials"]}
        for h in gone_c:
            owner = creds[h]["member_id"] if h in creds else next(iter(members), None)
            if owner is not None:
                creds[h] = {"hash": h, "member_id": owner, "status": "active"}
        doc = make_snapshot(self.o.key, site=SITE, version=version,
                            members=list(members.values()), credentials=list(creds.values()),
                            stored_seq=p.get("stored_seq"), pending=p.get("pending"))
        assert d.applier.handle(encode(doc), "snapshot").applied
        # as if the office had published it: its next versions follow on from this one
        self.o.store.record_version(SITE, version, doc["payload"]["issued_at"],
                                    encode(doc).decode(), None)

    # -- the office -------------------------------------------------------------------------
    @rule(rows=st.lists(st.tuples(st.sampled_from(OFFICE_IDS), st.sampled_from(PLANS),
                                  st.sampled_from(STATUSES), st.sampled_from(UNTILS),
                                  st.sampled_from(CARDS), st.sampled_from(STATUSES)),
                        max_size=4, unique_by=lambda r: r[4]))
    def office_imports_its_file(self, rows):
        file = []
        first: dict[str, tuple] = {}
        for mid, plan, status, until, uid, card_status in rows:
            plan, status, until = first.setdefault(mid, (plan, status, until))
            file.append({"id": mid, "plan": plan, "status": status, "valid_until": until,
                         "card": uid, "card_status": card_status})
        self.o.import_members(file)
        for r in file:
            self._office_set({"id": r["id"], "plan": r["plan"], "status": r["status"],
                              "valid_until": r["valid_until"]})
            if r["card_status"] != "revoked":
                self.accepted_cards.add(self.h[r["card"]])

    @rule(data=st.data(), member=st.booleans())
    def office_revokes(self, data, member):
        members, creds = self.o.store.rules(SITE)
        pool = [m["id"] for m in members] if member else [c["hash"] for c in creds]
        if not pool:
            return
        key = data.draw(st.sampled_from(pool))
        try:
            self.o.store.revoke(SITE, **({"member_id": key} if member
                                         else {"credential_hash": key}))
        except MemberNotFound:
            raise AssertionError(f"{key} is in the office's rows") from None

    @rule(data=st.data(), everything=st.booleans())
    def office_approves(self, data, everything):
        pending = self.o.store.proposals(SITE)
        if not pending:
            return
        ids = None if everything else [data.draw(st.sampled_from(pending))["id"]]
        try:
            done = self.o.store.approve(SITE, ids, by="olivia")
        except AccessdError:  # a card whose member is not accepted yet
            return
        for p in done:
            if p["state"] != "approved":
                continue
            if p["kind"] == "member":
                self._office_set(p["proposed"])
            elif p["proposed"]["status"] != "revoked":
                self.accepted_cards.add(p["credential_hash"])

    @rule(data=st.data())
    def office_rejects(self, data):
        pending = self.o.store.proposals(SITE)
        if pending:
            self.o.store.reject(SITE, [data.draw(st.sampled_from(pending))["id"]], by="olivia")

    # -- what must hold ---------------------------------------------------------------------
    @invariant()
    def revocation_is_terminal(self):
        places = {"office": self.o.store.rules(SITE)}
        for name, d in self.o.doors.items():
            c = d.rules.db.conn
            places[name] = (
                [{"id": r[0], "status": r[1]} for r in c.execute("SELECT id, status FROM "
                                                                 "members")],
                [{"hash": r[0], "status": r[1]} for r in c.execute("SELECT hash, status "
                                                                   "FROM credentials")])
        for place, (members, creds) in places.items():
            for m in members:
                if m["id"] in self.seen_m[place]:
                    assert m["status"] == "revoked", f"{place}: member {m['id']} un-revoked"
                elif m["status"] == "revoked":
                    self.seen_m[place].add(m["id"])
            for c in creds:
                if c["hash"] in self.seen_c[place]:
                    assert c["status"] == "revoked", f"{place}: card {c['hash'][:8]} un-revoked"
                elif c["status"] == "revoked":
                    self.seen_c[place].add(c["hash"])

    @invariant()
    def nothing_grants_beyond_the_office_or_the_doors_own_host(self):
        members, creds = self.o.store.rules(SITE)
        rows = {m["id"]: m for m in members}
        for c in creds:
            assert c["member_id"] in rows, "an office card without its member"
            if c["status"] == "active":
                assert c["hash"] in self.accepted_cards, "an office card nobody accepted"
        for m in members:
            self._within_office(m, "office")
        for name, d in self.o.doors.items():
            for h in self.h.values():
                g = d.rules.lookup(h)
                if g is None or g.credential_status is not Status.ACTIVE \
                        or g.member_status is not Status.ACTIVE:
                    continue
                assert h in self.local_cards[name] or h in self.accepted_cards, \
                    f"door {name} grants a card only another door's host enrolled"
                if g.member_id not in self.local_members[name]:
                    self._within_office(
                        {"id": g.member_id, "plan": str(g.plan), "status": str(g.member_status),
                         "valid_until": g.valid_until.isoformat() if g.valid_until else None},
                        name)

    def _within_office(self, m: dict[str, Any], place: str) -> None:
        mid = m["id"]
        assert mid in self.plans, f"{place}: member {mid} the office never accepted"
        if m["plan"] == "subscriber":
            assert "subscriber" in self.plans[mid], f"{place}: {mid} raised to subscriber"
        if m["status"] == "active":
            assert "active" in self.statuses[mid], f"{place}: {mid} made active"
        assert _until_le(m.get("valid_until"), self.untils[mid]), f"{place}: {mid} extended"


Site.TestCase.settings = settings(settings.default, stateful_step_count=25)
test_rights_hold_over_random_sequences = Site.TestCase
