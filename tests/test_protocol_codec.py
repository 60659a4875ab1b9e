"""The wire format: schemas, limits before parsing, canonical signatures, topics, commands."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from accessd.errors import ConfigError, ProtocolError
from accessd.events import Event, EventType, JournalEntry, utcnow
from accessd.protocol.codec import SCHEMAS, decode, encode, schema, strict_validator, validate
from accessd.protocol.commands import make_command, verify_command
from accessd.protocol.signing import OfficeKey, PublicKeys, canonical, public_line, reason_of
from accessd.protocol.topics import Topics, all_events, parse_door_topic
from accessd.uplink.outbox import event_message

DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_schema_is_valid_and_documented(name):
    Draft202012Validator.check_schema(schema(name))
    assert f"`{name}.json`" in DOCS.read_text()


def test_a_journal_entry_on_the_wire_matches_the_event_schema():
    entry = JournalEntry(7, "abc", "s1", "d1", Event(EventType.ACCESS_DENIED, reader="r",
                                                     result="denied", reason="expired",
                                                     detail={"direction": "entry"}))
    msg = event_message(entry, "ab" * 16)
    validate("event", msg)
    assert json.loads(encode(msg))["seq"] == 7
    with pytest.raises(ProtocolError, match="invalid: event: seq"):
        validate("event", {**msg, "seq": 0})


def test_size_is_checked_before_parsing():
    with pytest.raises(ProtocolError, match="too_large"):
        decode(b"[" * 5000, max_bytes=4096)  # would be a too_deep if parsed
    assert decode(b"[1]", max_bytes=3) == [1]


@pytest.mark.parametrize(("raw", "reason"), [
    (b"[" * 17 + b"]" * 17, "too_deep"),
    (b"[" * 100000 + b"]" * 100000, "too_deep"),
    (b"{'single': 'quotes'}", "malformed"),
    (b"\xc3\x28", "malformed"),
    (b"", "malformed"),
])
def test_decode_rejects_with_a_reason(raw, reason):
    with pytest.raises(ProtocolError) as exc:
        decode(raw, max_bytes=10**7)
    assert reason_of(exc.value) == reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)
KEY = OfficeKey.generate()


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_signature_round_trip_through_the_wire(payload):
    env = json.loads(encode(KEY.sign(payload)))  # any key order, any re-encoding
    assert PublicKeys([KEY.public]).verify(env) == payload


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(), min_size=1))
def test_any_change_breaks_the_signature(payload):
    env = KEY.sign(payload)
    key = next(iter(payload))
    env["payload"] = {**payload, key: payload[key] + 1}
    with pytest.raises(ProtocolError, match="bad_signature"):
        PublicKeys([KEY.public]).verify(env)


def test_canonical_form_is_stable():
    assert canonical({"b": 1, "a": "é", "c": [1, {"y": 2, "x": 1}]}) == \
        '{"a":"é","b":1,"c":[1,{"x":1,"y":2}]}'.encode()


def test_public_key_file_allows_a_key_rollover(tmp_path):
    old, new = OfficeKey.generate(), OfficeKey.generate()
    f = tmp_path / "office.pub"
    f.write_text(f"# office keys\n{public_line(old.public)}\n{public_line(new.public)}\n")
    keys = PublicKeys.load(f)
    assert keys.verify(old.sign({"a": 1})) == keys.verify(new.sign({"a": 1}))
    f.write_text("nothing here\n")
    with pytest.raises(ConfigError, match="no Ed25519 public key"):
        PublicKeys.load(f)


def test_private_key_permissions_are_checked(tmp_path):
    KEY.save(tmp_path / "k.key", tmp_path / "k.pub")
    assert OfficeKey.load(tmp_path / "k.key").key_id == KEY.key_id
    (tmp_path / "k.key").chmod(0o644)
    with pytest.raises(ConfigError, match="too open"):
        OfficeKey.load(tmp_path / "k.key")


def test_topics():
    t = Topics("accessd", "morez", "front")
    assert t.event == "accessd/morez/front/event"
    assert t.rules_snapshot == "accessd/morez/rules/snapshot"
    assert all_events("accessd") == "$share/accessd-collectors/accessd/+/+/event"
    assert parse_door_topic(t.event, "accessd") == ("morez", "front", "event")
    assert parse_door_topic(t.rules_delta, "accessd") is None
    with pytest.raises(ValueError):
        _ = Topics("accessd", "morez").event


def test_command_window():
    keys = PublicKeys([KEY.public])
    now = utcnow()
    raw = encode(make_command(KEY, type="release", site="s", door="d", operator="o", now=now))
    assert verify_command(raw, keys, site="s", door="d", now=now)["type"] == "release"
    for when, reason in ((now + timedelta(seconds=31), "expired"),
                         (now - timedelta(seconds=31), "not_yet_valid"),
                         (None, "clock_untrusted")):
        with pytest.raises(ProtocolError) as exc:
            verify_command(raw, keys, site="s", door="d", now=when)
        assert reason_of(exc.value) == reason
    long = encode(make_command(KEY, type="release", site="s", door="d", operator="o",
                               ttl_s=3600, now=now))
    with pytest.raises(ProtocolError, match="bad_window"):
        verify_command(long, keys, site="s", door="d", now=now)
    with pytest.raises(ProtocolError, match="too_large"):
        verify_command(b" " * 5000, keys, site="s", door="d", now=now)


# -- the compiled checkers of a rule document's rows agree with jsonschema ------------------

_MEMBER = {"id": "m-1", "name": "Zoé", "plan": "occasional", "status": "active",
           "valid_from": None, "valid_until": "2026-12-31", "origin": "site",
           "updated_at": "2026-11-02T09:00:00.000Z"}
_CRED = {"hash": "ab" * 32, "member_id": "m-1", "status": "revoked", "technology": None,
         "origin": "central", "enrolled_at": "x", "updated_at": "y"}
_ODD = [None, True, 0, 1.5, "", "x", "a" * 65, "a" * 201, "ab" * 32, "AB" * 32, "ab" * 32 + "\n",
        "2026-12-31", "2026-12-31\n", "31/12/2026", "subscriber", "vip", "site", "active",
        "revoked", [], {}, ["active"]]


def _rows_doc(**arrays: object) -> dict:
    return {"v": 1, "kind": "delta", "site": "s1", "version": 2, "base_version": 1,
            "issued_at": "2026-11-02T09:00:00.000Z", **arrays}


def _agree(doc: dict) -> None:
    expected = not list(strict_validator(schema("rules")).iter_errors(doc))
    try:
        validate("rules", doc)
        got = True
    except ProtocolError as exc:
        got = False
        assert str(exc).startswith("invalid: rules: ")
    assert got == expected, doc


@pytest.mark.parametrize(("key", "row"), [("members", _MEMBER), ("credentials", _CRED)])
def test_row_checkers_agree_with_jsonschema_on_every_field(key, row):
    _agree(_rows_doc(**{key: [row]}))
    for field in [*row, "extra"]:
        _agree(_rows_doc(**{key: [{k: v for k, v in row.items() if k != field}]}))
        for odd in _ODD:
            _agree(_rows_doc(**{key: [row, {**row, field: odd}]}))
    for odd in _ODD:
        _agree(_rows_doc(**{key: [odd]}))
        _agree(_rows_doc(removed_members=[odd], removed_credentials=["ab" * 32]))
        _agree(_rows_doc(removed_credentials=[odd]))
    _agree(_rows_doc(**{key: {"not": "a list"}}))


@given(st.lists(st.dictionaries(st.sampled_from(sorted({*_MEMBER, *_CRED})),
                                st.sampled_from(_ODD + list(_MEMBER.values())
                                                + list(_CRED.values())), max_size=8),
                max_size=3), st.sampled_from(["members", "credentials"]))
def test_row_checkers_agree_with_jsonschema_on_random_rows(rows, key):
    _agree(_rows_doc(**{key: rows}))


def test_a_faulty_row_is_named_by_its_index_and_field():
    rows = [dict(_MEMBER, id=f"m-{i}") for i in range(50)]
    rows[37] = dict(rows[37], plan="vip")
    with pytest.raises(ProtocolError, match=r"invalid: rules: members/37/plan: 'vip' is not"):
        validate("rules", _rows_doc(members=rows))
    with pytest.raises(ProtocolError, match=r"invalid: rules: removed_credentials/1: "):
        validate("rules", _rows_doc(removed_credentials=["ab" * 32, "C0FFEE"]))


def test_depth_counts_containers_only():
    from accessd.protocol.codec import depth as _depth

    assert [_depth(x) for x in (1, "s", None, [], {}, [1, [2]], {"a": [{"b": 1}]})] == \
        [0, 0, 0, 1, 1, 2, 3]
    with pytest.raises(ProtocolError, match="too_deep"):
        decode(b'{"a": [[[{"b": [1]}]]]}', max_bytes=100, max_depth=5)
    assert decode(b'{"a": [[[{"b": 1}]]]}', max_bytes=100, max_depth=5)


_SAMPLE_EVENT = {"v": 2, "seq": 7, "id": "abc", "site": "s1", "door": "d1", "journal": "0" * 32,
                 "type": "access.granted", "ts": "2026-11-27T07:00:00.000Z",
                 "clock_trusted": True, "detail": {}, "reader": "door", "plan": "subscriber",
                 "result": "granted", "floor": 3}
_ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.floats(allow_nan=False),
                 st.text(max_size=70), st.sampled_from(["s1", "a.b", "subscriber", "denied"]),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                 st.lists(st.integers(), max_size=2))


@given(st.dictionaries(st.sampled_from([*_SAMPLE_EVENT, "extra"]), _ODD_VALUES, max_size=6),
       st.sets(st.sampled_from(list(_SAMPLE_EVENT)), max_size=3))
def test_fast_event_check_is_never_more_lenient_than_the_schema(changes, dropped):
    from accessd.protocol.codec import _event_ok

    _never_more_lenient(_event_ok, "event", _SAMPLE_EVENT, changes, dropped)


def _never_more_lenient(fast, name: str, sample: dict, changes: dict, dropped: set) -> None:
    """`sample` changed and with keys dropped: if the fast check takes it, so does the
    schema (by jsonschema, strict integers)."""
    doc = {**sample, **changes}
    for key in dropped:
        doc.pop(key, None)
    if fast(doc):
        assert not list(strict_validator(schema(name)).iter_errors(doc)), doc


def test_fast_event_check_accepts_what_the_door_sends():
    from accessd.protocol.codec import _event_ok

    entry = JournalEntry(3, "id", "s1", "d1", Event(EventType.DOOR_FORCED, ts=utcnow()))
    assert _event_ok(event_message(entry, "f" * 32, None))
    assert _event_ok(_SAMPLE_EVENT)


_SAMPLE_ACK = {"v": 2, "site": "s1", "door": "d1", "journal": "0" * 32, "acked": 29,
               "resend": [30, 31], "rebase": {"after": 40, "journal": "1" * 32}}
_ACK_ODD = st.one_of(_ODD_VALUES, st.lists(st.integers(-1, 3), max_size=3),
                     st.just([1.0, 2]), st.just([True, 2]),
                     st.dictionaries(st.sampled_from(["after", "journal", "x"]),
                                     st.one_of(st.integers(-1, 3), st.just("1" * 32),
                                               st.just(4.0)), max_size=3))


@given(st.dictionaries(st.sampled_from([*_SAMPLE_ACK, "extra"]), _ACK_ODD, max_size=5),
       st.sets(st.sampled_from(list(_SAMPLE_ACK)), max_size=4))
def test_fast_ack_check_is_never_more_lenient_than_the_schema(changes, dropped):
    from accessd.protocol.codec import _ack_ok

    _never_more_lenient(_ack_ok, "ack", _SAMPLE_ACK, changes, dropped)


_SAMPLE_SIGNED_EVENTS = {"v": 3, "events": "{}", "sig": "A" * 86 + "==", "key_id": "0" * 16}


@given(st.dictionaries(st.sampled_from([*_SAMPLE_SIGNED_EVENTS, "extra"]),
                       st.one_of(_ODD_VALUES, st.just("A" * 86 + "=="), st.just("0" * 16),
                                 st.just(3.0)), max_size=4),
       st.sets(st.sampled_from(list(_SAMPLE_SIGNED_EVENTS)), max_size=2))
def test_fast_signed_events_check_is_never_more_lenient_than_the_schema(changes, dropped):
    from accessd.protocol.codec import _signed_events_ok

    _never_more_lenient(_signed_events_ok, "signed_events", _SAMPLE_SIGNED_EVENTS, changes,
                        dropped)


def test_fast_ack_and_envelope_checks_accept_what_is_sent():
    from accessd.protocol.codec import _ack_ok, _signed_events_ok

    assert _ack_ok(_SAMPLE_ACK) and _signed_events_ok(_SAMPLE_SIGNED_EVENTS)
    for key in ("resend", "rebase"):
        assert _ack_ok({k: v for k, v in _SAMPLE_ACK.items() if k != key})
    assert not _ack_ok({k: v for k, v in _SAMPLE_ACK.items()
                        if k not in ("acked", "resend", "rebase")})  # says nothing


# -- the door's documents: hand-written checkers first, jsonschema only to refuse -----------
_SAMPLE_COMMAND = {"v": 1, "id": "abcdefgh12", "type": "release", "site": "s1", "door": "d1",
                   "issued_at": "2026-11-27T07:00:00.000Z",
                   "expires_at": "2026-11-27T07:01:00+01:00", "operator": "Claire",
                   "seconds": 5}
_SAMPLE_RULES = {"v": 1, "kind": "delta", "site": "s1", "version": 3, "base_version": 2,
                 "issued_at": "2026-11-27T07:00:00Z", "stored_seq": {"d1": 4},
                 "pending": {"d1": [5, 6]}, "members": [], "credentials": [],
                 "removed_members": [], "removed_credentials": [],
                 "schedule": {"timezone": "Europe/Paris", "opens": "09:00", "closes": "18:00",
                              "days": ["mon", "tue"], "closures": ["2026-12-25"]}}
_DOC_VALUES = st.one_of(
    _ODD_VALUES, st.sampled_from(["snapshot", "delta", "release", "request_snapshot",
                                  "2026-11-27T07:00:00Z", "2026-13-01T00:00:00Z", "09:00",
                                  "24:00", "a" * 32, "abcdefgh12", "", "x\n"]),
    st.lists(st.one_of(st.integers(-1, 3), st.sampled_from(["mon", "mon", "xyz"])),
             max_size=3),
    st.dictionaries(st.sampled_from(["d1", "after", "journal", "timezone", "opens", "closes",
                                     "days", "closures"]),
                    st.one_of(st.integers(-1, 3), st.lists(st.integers(-1, 3), max_size=2),
                              st.sampled_from(["b" * 32, "09:00", "UTC"])), max_size=5))


@pytest.mark.parametrize(("name", "sample"), [("command", _SAMPLE_COMMAND),
                                              ("rules", _SAMPLE_RULES)])
@given(data=st.data())
def test_fast_command_and_rules_checks_are_never_more_lenient_than_the_schema(name, sample,
                                                                              data):
    from accessd.protocol.codec import _FAST

    changes = data.draw(st.dictionaries(st.sampled_from([*sample, "extra"]), _DOC_VALUES,
                                        max_size=4))
    dropped = data.draw(st.sets(st.sampled_from(list(sample)), max_size=3))
    _never_more_lenient(_FAST[name], name, sample, changes, dropped)


@pytest.mark.parametrize("schedule_change", [
    {}, {"days": ["mon", "mon"]}, {"opens": "9:00"}, {"closures": ["2026-1-1"]},
    {"timezone": 3}, {"extra": 1}])
def test_fast_rules_check_on_schedules(schedule_change):
    from accessd.protocol.codec import _rules_ok

    doc = {**_SAMPLE_RULES, "schedule": {**_SAMPLE_RULES["schedule"], **schedule_change}}
    if _rules_ok(doc):
        assert not list(strict_validator(schema("rules")).iter_errors(doc)), doc
    assert _rules_ok(doc) == (schedule_change == {})


STEADY_STATE = """
import sys
from accessd.protocol.codec import validate
from accessd.protocol.commands import make_command
from accessd.protocol.delivery import make_ack
from accessd.protocol.rules import make_delta, make_snapshot
from accessd.protocol.signing import OfficeKey
key = OfficeKey.generate()
schedule = {"timezone": "Europe/Paris", "opens": "09:00", "closes": "18:00",
            "days": ["mon"], "closures": ["2026-12-25"]}
member = {"id": "m1", "name": "Ana", "plan": "subscriber", "status": "active"}
card = {"hash": "ab" * 32, "member_id": "m1", "status": "active"}
for env in (make_snapshot(key, site="s1", version=2, members=[member], credentials=[card],
                          schedule=schedule, stored_seq={"d1": 3}, pending={"d1": [4]}),
            make_delta(key, site="s1", version=3, base_version=2, members=[member],
                       removed_credentials=["cd" * 32]),
            make_ack(key, site="s1", door="d1", journal="a" * 32, acked=9),
            make_command(key, type="release", site="s1", door="d1", operator="o", seconds=5)):
    validate("signed", env)
print("jsonschema" in sys.modules)
try:
    validate("ack", {"v": 2, "site": "s1", "door": "d1", "journal": "a" * 32, "acked": -1})
except Exception as exc:
    print(exc)
print("jsonschema" in sys.modules)
"""


def test_a_door_receiving_valid_documents_never_imports_jsonschema():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", STEADY_STATE], capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert out == ["False", "invalid: ack: acked: -1 is less than the minimum of 0", "True"]
