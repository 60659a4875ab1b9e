"""Random sequences of what hosts, the office and the wires do, against a small model.

Two doors of one site and a real office (in-memory SQLite, real signed documents). Hosts
enrol, add cards, suspend, resume and revoke at their door; the office imports its file,
revokes, approves, rejects and publishes; documents (and crafted ones, signed with the
office's key, that try to un-revoke) reach doors late or not at all; door events reach the
collector whenever. The model keeps what the office decided (its last file, its approvals)
and, per door, what the documents it applied said. After every step:

- revocation is terminal: a member or card once seen revoked at a door, or in the office's
  rows, is never anything else there again;
- the office's rows grant nothing the office did not decide: no member, card, plan, status or
  validity beyond its file and its approvals (what doors send is never a row by itself);
- a door grants nothing beyond the documents it applied, except what its own host did there:
  another door's change never opens it before the office accepts it, and the host never
  raises a member the office set.
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
from accessd.rights import PLAN_RANK, RANK

CARDS = [f"0C{i:08X}" for i in range(8)]
FILE_CARDS = CARDS[:5]  # hosts also use cards the office never heard of
HOST_ONLY = {Office.hasher_of(uid) for uid in CARDS[5:]}
OFFICE_IDS = ["o0", "o1"]
UNTILS = [None, "2090-06-30", "2091-01-01"]
DOORS = ("a", "b")
PLANS = ("occasional", "subscriber")
STATUSES = ("active", "suspended", "revoked")
PICK = st.integers(0, 63)  # which of whatever there is (see SiteMachine._pick)


def within(row: dict[str, Any], limit: dict[str, Any]) -> list[str]:
    """What `row` (a member) grants beyond `limit`: a better status, plan or validity.

    The model's own oracle, written apart from `accessd.rights.raises` on purpose: the model
    must not share a mistake with the code it checks."""
    out = []
    if RANK[Status(row["status"])] < RANK[Status(limit["status"])]:
        out.append(f"status {limit['status']} -> {row['status']}")
    if PLAN_RANK[Plan(row["plan"])] > PLAN_RANK[Plan(limit["plan"])]:
        out.append(f"plan {limit['plan']} -> {row['plan']}")
    lu, ru = limit.get("valid_until"), row.get("valid_until")
    if lu is not None and (ru is None or ru > lu):
        out.append(f"until {lu} -> {ru}")
    return out


class SiteMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.o = Office(None, DOORS)
        self.h = {uid: self.o.hasher(uid) for uid in CARDS}
        assert {self.h[u] for u in CARDS[5:]} == HOST_ONLY
        # what each door's host created there
        self.local_cards: dict[str, set[str]] = {d: set() for d in DOORS}
        self.local_members: dict[str, set[str]] = {d: set() for d in DOORS}
        # what the office decided: its last file, and the approvals since
        self.office: dict[str, dict[str, Any]] = {}  # member id -> the most it may grant
        self.from_doors: set[str] = set()  # approved new members no file has named since
        self.file_cards: set[str] = set()  # active in the last file
        self.approved_cards: set[str] = set()  # approved, not named by a file since
        # per door, the rules its applied documents add up to
        self.view: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
            d: ({}, {}) for d in DOORS}
        # revocations seen so far, per place ("office" and each door)
        self.seen_m: dict[str, set[str]] = {p: set() for p in ("office", *DOORS)}
        self.seen_c: dict[str, set[str]] = {p: set() for p in ("office", *DOORS)}
        self.docs: list[Any] = []
        self.doc_cards: dict[str, set[str]] = {d: set() for d in DOORS}
        self.enrolments = 0

    def teardown(self) -> None:
        self.o.close()

    def _applied(self, door: str, payload: dict[str, Any]) -> None:
        members, cards = self.view[door]
        if payload["kind"] == "snapshot":
            members.clear()
            cards.clear()
        for m in payload.get("members", []):
            members[m["id"]] = m
        for c in payload.get("credentials", []):
            cards[c["hash"]] = c
            self.doc_cards[door].add(c["hash"])  # an office row there from now on
        for mid in payload.get("removed_members", []):
            members.pop(mid, None)
        for h in payload.get("removed_credentials", []):
            cards.pop(h, None)
        gone = set(payload.get("removed_members", []))
        for h in [h for h, c in cards.items() if c["member_id"] in gone]:
            del cards[h]

    def _pick(self, door: str, pick: int, office_first: bool) -> Any:
        """A member at the door, the office's when asked (where the rights bite).

        Choices are drawn before the state is looked at, and applied to it (`pick` modulo
        what there is), so that a replayed example draws the same values whatever the state.
        """
        members = self.o.doors[door].rules.members()
        office = [m for m in members if m.origin == "central"]
        if office and office_first:
            members = office
        return members[pick % len(members)] if members else None

    # -- hosts at doors ---------------------------------------------------------------------
    @rule(door=st.sampled_from(DOORS), uid=st.sampled_from(CARDS), plan=st.sampled_from(PLANS),
          until=st.sampled_from(UNTILS))
    def host_enrols(self, door, uid, plan, until):
        d = self.o.doors[door]
        self.enrolments += 1  # ids the test chooses, so that every replay is the same
        try:
            m = admin.enroll(d.site, name="New", plan=Plan(plan), uid=uid,
                             member_id=f"m-{door}{self.enrolments}",
                             valid_until=date.fromisoformat(until) if until else None)
        except RevokedError:
            assert self.h[uid] in d.rules.revoked()[1]
            return
        except DuplicateCredential:
            assert d.rules.lookup(self.h[uid]) is not None
            return
        assert self.h[uid] not in self.seen_c[door]
        self.local_cards[door].add(self.h[uid])
        self.local_members[door].add(m.id)

    @rule(door=st.sampled_from(DOORS), uid=st.sampled_from(CARDS), raise_plan=st.booleans(),
          pick=PICK, office_first=st.booleans())
    def host_adds_a_card(self, door, uid, raise_plan, pick, office_first):
        d = self.o.doors[door]
        m = self._pick(door, pick, office_first)
        if m is None:
            return
        plan = Plan.SUBSCRIBER if raise_plan else m.plan
        try:
            admin.enroll(d.site, name=m.name, plan=plan, uid=uid, member_id=m.id)
        except OfficeOwnedError:
            assert m.origin == "central" and plan is not m.plan
            return
        except (RevokedError, DuplicateCredential):
            return
        assert m.origin == "site" or plan is m.plan
        assert m.id not in self.seen_m[door] and self.h[uid] not in self.seen_c[door]
        self.local_cards[door].add(self.h[uid])

    @rule(door=st.sampled_from(DOORS),
          status=st.sampled_from(("active", "active", "suspended", "revoked")), pick=PICK,
          office_first=st.booleans())
    def host_sets_status(self, door, status, pick, office_first):
        d = self.o.doors[door]
        m = self._pick(door, pick, office_first)
        if m is None:
            return
        before = d.journal.last_seq
        try:
            done = admin.set_status(d.site, m.id, Status(status))
        except RevokedError:
            assert m.status is Status.REVOKED and status != "revoked"
            return
        assert m.id not in self.seen_m[door] or status == "revoked"
        if done.change == "unchanged":
            assert d.journal.last_seq == before and m.status is Status(status)
        if done.change == "proposed":
            assert m.origin == "central" and d.rules.member(m.id).status is m.status

    @rule(door=st.sampled_from(DOORS), pick=PICK)
    def host_revokes_a_card(self, door, pick):
        d = self.o.doors[door]
        cards = [h for h in self.h.values() if d.rules.lookup(h) is not None]
        if cards:
            admin.revoke_card(d.site, credential=cards[pick % len(cards)])

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
        if out.applied:
            self._applied(door, (docs.snapshot if kind == "snapshot" else docs.delta)
                          ["payload"])

    @rule()
    def everything_is_delivered_and_published(self):
        for door in DOORS:
            self.o.deliver(door)
        docs = self.o.publish()
        self.docs.append(docs)
        for door in DOORS:
            if self.o.apply(door, docs).applied:
                self._applied(door, docs.snapshot["payload"])
        self._kept_while_pending()

    def _kept_while_pending(self) -> None:
        """Everything is delivered and the latest rules applied: a door holds its host's own
        rows exactly while the office has the change that made them pending."""
        pending = self.o.store.pending_seqs(SITE)
        for door in DOORS:
            d = self.o.doors[door]
            named_m, named_c = set(), {}
            seqs = pending.get(door, [])
            for e in (x for s in seqs for x in d.journal.entries(s, s)):
                named_m.add(e.event.member_id)
                if isinstance(e.event.detail.get("credential_hash"), str):
                    named_c[e.event.detail["credential_hash"]] = e.event.member_id
            members, cards = self._door_rows(door)
            for m in members:
                assert m["origin"] == "central" or m["id"] in named_m, \
                    f"{door}: the host's member {m['id']} stays, the office decided on it"
            for c in cards:
                assert c["origin"] == "central" or c["hash"] in named_c, \
                    f"{door}: the host's card {c['hash'][:8]} stays, the office decided on it"
            present_m = {m["id"] for m in members}
            present_c = {c["hash"] for c in cards}
            for mid in named_m & self.local_members[door]:
                assert mid in present_m, f"{door}: the host's member {mid} went, still pending"
            for h, mid in named_c.items():  # (an office member's cards go with it)
                if h in HOST_ONLY and mid in present_m & self.local_members[door] \
                        and h not in self.doc_cards[door]:
                    assert h in present_c, f"{door}: the host's card {h[:8]} went, still pending"

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
        out = d.applier.handle(encode(doc), "snapshot")
        assert out.applied
        refused = out.detail.get("refused_unrevoke", {})
        assert set(refused.get("members", [])) == gone_m & set(members)
        # its rows are what the office signed, except the un-revocations the door refused
        self._applied(door, {**doc["payload"], "members": [
            {**m, "status": "revoked"} if m["id"] in gone_m else m for m in members.values()],
            "credentials": [{**c, "status": "revoked"} if c["hash"] in gone_c else c
                            for c in creds.values()]})
        # as if the office had published it: its next versions follow on from this one
        self.o.store.record_version(SITE, version, doc["payload"]["issued_at"],
                                    encode(doc).decode(), None)

    # -- the office -------------------------------------------------------------------------
    @rule(rows=st.lists(st.tuples(st.sampled_from(OFFICE_IDS), st.sampled_from(PLANS),
                                  st.sampled_from(("active", "suspended", "suspended",
                                                   "revoked")), st.sampled_from(UNTILS),
                                  st.sampled_from(FILE_CARDS), st.sampled_from(STATUSES)),
                        max_size=3, unique_by=lambda r: r[4]))
    def office_imports_its_file(self, rows):
        file = []
        first: dict[str, tuple] = {}
        for mid, plan, status, until, uid, card_status in rows:
            plan, status, until = first.setdefault(mid, (plan, status, until))
            file.append({"id": mid, "plan": plan, "status": status, "valid_until": until,
                         "card": uid, "card_status": card_status})
        self.o.import_members(file)
        named = {r["id"] for r in file}
        self.office = {m: row for m, row in self.office.items() if m in self.from_doors
                       and m not in named}
        self.from_doors -= named
        for r in file:
            self.office[r["id"]] = {"plan": r["plan"], "status": r["status"],
                                    "valid_until": r["valid_until"]}
        hashes = {self.h[r["card"]] for r in file}
        self.approved_cards -= hashes
        self.file_cards = {self.h[r["card"]] for r in file if r["card_status"] == "active"}

    @rule(member=st.booleans(), pick=PICK)
    def office_revokes(self, member, pick):
        members, creds = self.o.store.rules(SITE)
        pool = [m["id"] for m in members] if member else [c["hash"] for c in creds]
        if not pool:
            return
        key = pool[pick % len(pool)]
        try:
            self.o.store.revoke(SITE, **({"member_id": key} if member
                                         else {"credential_hash": key}))
        except MemberNotFound:
            raise AssertionError(f"{key} is in the office's rows") from None

    @rule(everything=st.booleans(), pick=PICK)
    def office_approves(self, everything, pick):
        pending = self.o.store.proposals(SITE)
        if not pending:
            return
        ids = None if everything else [pending[pick % len(pending)]["id"]]
        try:
            done = self.o.store.approve(SITE, ids, by="olivia")
        except AccessdError:  # a card whose member is not accepted yet
            return
        for p in done:
            if p["state"] != "approved":
                continue
            row = p["proposed"]
            if p["kind"] == "member":
                if row["id"] not in self.office:
                    self.from_doors.add(row["id"])
                self.office[row["id"]] = {k: row.get(k) for k in ("plan", "status",
                                                                  "valid_until")}
            elif row["status"] == "active":
                self.approved_cards.add(p["credential_hash"])

    @rule(pick=PICK)
    def office_rejects(self, pick):
        pending = self.o.store.proposals(SITE)
        if pending:
            self.o.store.reject(SITE, [pending[pick % len(pending)]["id"]], by="olivia")

    # -- what must hold ---------------------------------------------------------------------
    def _door_rows(self, door: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        c = self.o.doors[door].rules.db.conn
        members = [dict(zip(("id", "plan", "status", "valid_until", "origin"), r, strict=True))
                   for r in c.execute("SELECT id, plan, status, valid_until, origin FROM "
                                      "members")]
        cards = [dict(zip(("hash", "member_id", "status", "origin"), r, strict=True))
                 for r in c.execute("SELECT hash, member_id, status, origin FROM credentials")]
        return members, cards

    @invariant()
    def revocation_is_terminal(self):
        places = {"office": self.o.store.rules(SITE)}
        places.update({d: self._door_rows(d) for d in DOORS})
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
    def the_office_grants_only_what_it_decided(self):
        members, creds = self.o.store.rules(SITE)
        ids = {m["id"] for m in members}
        for m in members:
            assert m["id"] in self.office, f"office: member {m['id']} nobody accepted"
            beyond = within(m, self.office[m["id"]])
            assert not beyond, f"office: {m['id']} {beyond}"
        for c in creds:
            assert c["member_id"] in ids, "office: a card without its member"
            if c["status"] == "active":
                assert c["hash"] in self.file_cards | self.approved_cards, \
                    f"office: card {c['hash'][:8]} active, nobody accepted it"

    @invariant()
    def a_door_grants_only_its_documents_and_its_own_hosts_changes(self):
        for door in DOORS:
            office_m, office_c = self.view[door]
            members, cards = self._door_rows(door)
            for m in members:
                if m["id"] in self.local_members[door]:
                    continue  # this door's host made it
                assert m["id"] in office_m, f"{door}: member {m['id']} came from elsewhere"
                beyond = within(m, office_m[m["id"]])
                assert not beyond, f"{door}: {m['id']} {beyond}"
            for c in cards:
                if c["status"] != "active" or c["hash"] in self.local_cards[door]:
                    continue
                got = office_c.get(c["hash"])
                assert got is not None and got["status"] == "active", \
                    f"{door}: card {c['hash'][:8]} active, no document or host of its own"


SiteMachine.TestCase.settings = settings(settings.default, stateful_step_count=40)
test_rights_hold_over_random_sequences = SiteMachine.TestCase
