"""The decision's new inputs (what the card proved) and the controller's CardGate."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accessd.config import parse_config
from accessd.decision import CardCheck, Grant, Plan, Proof, Reason, Status, decide
from accessd.errors import ConfigError
from accessd.readers.base import CardProof, CardRead
from accessd.schedule import Schedule
from accessd.store.cards import CardState, CardStore
from accessd.store.rules import RuleCache

PARIS = ZoneInfo("Europe/Paris")
SCHEDULE = Schedule(PARIS, time(9), time(18), frozenset({"mon", "tue", "wed", "thu", "fri"}),
                    frozenset())
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=PARIS).astimezone(UTC)
ANA = Grant(Status.ACTIVE, "m-ana", "Ana", Plan.SUBSCRIBER, Status.ACTIVE)


def at(record: Grant | None, card: CardCheck, **kw: object):
    return decide(record, now=NOON, clock_trusted=True, schedule=SCHEDULE, card=card, **kw)


@pytest.mark.parametrize(("proof", "reason"), [
    (Proof.FAILED, Reason.AUTHENTICATION_FAILED),
    (Proof.INCOMPLETE, Reason.AUTHENTICATION_INCOMPLETE),
    (Proof.KEY_RETIRED, Reason.KEY_VERSION_RETIRED),
    (Proof.REPLAYED, Reason.REPLAYED),
])
def test_a_bad_proof_is_its_own_denial(proof: Proof, reason: Reason) -> None:
    assert at(None, CardCheck(proof)).reason is reason
    d = at(ANA, CardCheck(proof))
    assert (d.granted, d.reason) == (False, reason)


def test_clone_of_an_authenticated_card() -> None:
    d = at(ANA, CardCheck(Proof.UID_ONLY, enrolled_authenticated=True))
    assert (d.granted, d.reason, d.member_id) == (False, Reason.NOT_AUTHENTICATED, "m-ana")
    assert at(ANA, CardCheck(Proof.AUTHENTICATED, enrolled_authenticated=True)).granted


def test_plan_policy_and_migration() -> None:
    required = frozenset({Plan.SUBSCRIBER})
    assert at(ANA, CardCheck(required_for=required)).reason is Reason.NOT_AUTHENTICATED
    occasional = Grant(Status.ACTIVE, "m-occ", "Occ", Plan.OCCASIONAL, Status.ACTIVE)
    assert at(occasional, CardCheck(required_for=required)).granted  # still on EM4100
    assert at(ANA, CardCheck(Proof.AUTHENTICATED, required_for=required)).granted


def test_mismatch_and_lockout_order() -> None:
    assert at(ANA, CardCheck(Proof.MISMATCH)).reason is Reason.CARD_MISMATCH
    assert at(ANA, CardCheck(Proof.FAILED), locked_out=True).reason is Reason.READER_LOCKED_OUT
    assert at(ANA, CardCheck(Proof.UID_ONLY, True), direction="exit").reason is (
        Reason.NOT_AUTHENTICATED)


def test_uid_only_reads_decide_as_before() -> None:
    assert at(ANA, CardCheck()).reason is Reason.SUBSCRIBER
    assert at(None, CardCheck()).reason is Reason.UNKNOWN_CREDENTIAL


@given(st.sampled_from(list(Proof)), st.booleans(), st.sampled_from(list(Plan)),
       st.frozensets(st.sampled_from(list(Plan))), st.sampled_from(["entry", "exit"]))
def test_only_an_authenticated_card_opens_for_who_needs_one(
        proof: Proof, enrolled: bool, plan: Plan, required: frozenset[Plan],
        direction: str) -> None:
    record = Grant(Status.ACTIVE, "m", "M", plan, Status.ACTIVE)
    d = at(record, CardCheck(proof, enrolled, required), direction=direction)
    if proof not in (Proof.UID_ONLY, Proof.AUTHENTICATED):
        assert not d.granted
    if (enrolled or plan in required) and proof is not Proof.AUTHENTICATED:
        assert not d.granted


# -- the gate: replay, mismatch, what gets written -------------------------------------------


@pytest.fixture
def rules(tmp_path: Path):
    cache = RuleCache(tmp_path / "rules.db")
    cache.enroll(name="Ana", plan=Plan.SUBSCRIBER, credential_hash="h-ana", member_id="m-ana",
                 technology="ntag424")
    yield cache
    cache.close()


def sun_read(counter: int, ref: str | None = None) -> CardRead:
    return CardRead("door", "04A1B2C3D4E5F6", "ntag424",
                    proof=CardProof(Proof.AUTHENTICATED, "ntag424", 1, ref, counter))


def test_gate_refuses_replays_in_memory_and_on_disk(rules: RuleCache) -> None:
    from accessd.cards.gate import CardGate

    gate = CardGate(CardStore(rules.db.conn))
    record = rules.lookup("h-ana")
    first = gate.check(sun_read(7), "h-ana", record)
    assert first.facts.proof is Proof.AUTHENTICATED and first.facts.enrolled_authenticated
    assert gate.check(sun_read(7), "h-ana", record).facts.proof is Proof.REPLAYED  # not yet
    gate.settle(first)                                                             # on disk
    again = CardGate(CardStore(rules.db.conn))  # a restart
    assert again.check(sun_read(6), "h-ana", record).facts.proof is Proof.REPLAYED
    assert again.check(sun_read(8), "h-ana", record).facts.proof is Proof.AUTHENTICATED
    assert CardStore(rules.db.conn).state("h-ana").sun_counter == 7  # type: ignore[union-attr]


def test_gate_mismatch_and_detail(rules: RuleCache) -> None:
    from accessd.cards.gate import CardGate

    gate = CardGate(CardStore(rules.db.conn))
    record = rules.lookup("h-ana")
    checked = gate.check(sun_read(1, ref="m-bob"), "h-ana", record)
    assert checked.facts.proof is Proof.MISMATCH and checked.write is None
    assert checked.detail == {"proof": "mismatch", "card": "ntag424", "key_version": 1,
                              "sun_counter": 1}
    failed = CardRead("door", "0801020304", "iso14443a",
                      proof=CardProof(Proof.FAILED, "desfire", 3, why="bad key"))
    assert not gate.identifies(failed)
    assert gate.check(failed, None, None).detail["why"] == "bad key"


def test_card_store_counts_versions(rules: RuleCache) -> None:
    store = CardStore(rules.db.conn)
    store.record("h-ana", key_version=2)
    store.record("h-ana", sun_counter=5)
    store.record("h-ana", sun_counter=3)  # a counter never goes down
    assert store.state("h-ana") == CardState(2, 5)
    assert store.versions() == {2: 1}


# -- the [cards] table of the configuration ------------------------------------------------


def cards(text: str):
    return parse_config(f'[[readers]]\ntype = "simulated"\n\n[cards]\n{text}').cards


def test_cards_config_defaults_and_plans() -> None:
    c = cards("")
    assert not c.enabled and c.ntag424_mode == "authenticate" and c.required_plans == set()
    assert cards("require_authenticated = true").required_plans == {"subscriber", "occasional"}
    assert cards('require_authenticated_plans = ["subscriber"]').required_plans == {
        "subscriber"}


@pytest.mark.parametrize(("text", "key"), [
    ('require_authenticated_plans = ["vip"]', "cards.require_authenticated_plans"),
    ('desfire_aid = "000000"', "cards.desfire_aid"),
    ('desfire_aid = "F5A0"', "cards.desfire_aid"),
    ('sun_url = "ftp://x"', "cards.sun_url"),
    ('ntag424_mode = "uid"', "cards.ntag424_mode"),
    ("master_key = 1", "cards.master_key"),
])
def test_cards_config_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cards(text)
