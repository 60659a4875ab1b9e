"""On the wire an integer is an integer: never 6.0, never true, in every schema and in the
compiled fast paths (a float acknowledgement once wedged a door's uplink, a float rule
version stopped every tap)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from accessd.errors import ProtocolError
from accessd.protocol.codec import SCHEMAS, _event_ok, _Rows, schema, validate

J = "0123456789abcdef" * 2
MEMBER = {"id": "m-1", "name": "Zoé", "plan": "occasional", "status": "active"}
CRED = {"hash": "ab" * 32, "member_id": "m-1", "status": "active"}
EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "event": [{"v": 2, "seq": 7, "id": "abc", "site": "s1", "door": "d1", "journal": J,
               "type": "access.granted", "ts": "2026-11-27T07:00:00.000Z",
               "clock_trusted": True, "detail": {}, "floor": 3}],
    "ack": [{"v": 2, "site": "s1", "door": "d1", "journal": J, "acked": 29,
             "resend": [30, 31], "rebase": {"after": 40, "journal": J}}],
    "status": [{"v": 1, "online": True, "site": "s1", "door": "d1", "rule_version": 6,
                "outbox_depth": 0, "acked_seq": 29, "last_seq": 30, "journal": J}],
    "command": [{"v": 1, "id": "abcdefgh", "type": "release", "site": "s1", "door": "d1",
                 "issued_at": "2026-11-27T07:00:00.000Z",
                 "expires_at": "2026-11-27T07:00:30.000Z", "operator": "o", "seconds": 5}],
    "rules": [{"v": 1, "kind": "snapshot", "site": "s1", "version": 6,
               "issued_at": "2026-11-27T07:00:00.000Z", "stored_seq": {"d1": 4},
               "pending": {"d1": [3]},
               "members": [MEMBER], "credentials": [CRED],
               "access": {"doors": [{"id": "d1", "kind": "entrance"}],
                          "plans": {"occasional": ["d1"]}, "booking_lead_min": 10}},
              {"v": 1, "kind": "delta", "site": "s1", "version": 7, "base_version": 6,
               "issued_at": "2026-11-27T07:00:00.000Z", "members": [], "credentials": [],
               "removed_members": [], "removed_credentials": []}],
    "rules_request": [{"v": 1, "site": "s1", "door": "d1", "have_version": 6,
                       "reason": "version_gap"}],
    "signed": [{"payload": {}, "sig": "A" * 86 + "==", "key_id": "0" * 16}],
    "signed_events": [{"v": 3, "events": "{}", "sig": "A" * 86 + "==", "key_id": "0" * 16}],
}


def _int_paths(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(doc, bool):
        return []
    if isinstance(doc, int):
        return [path]
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) \
        if isinstance(doc, list) else ()
    return [p for k, v in items for p in _int_paths(v, (*path, k))]


def _schema_ints(node: Any, name: str = "") -> set[str]:
    """Names of every integer field a schema declares (type integer, or an integer const)."""
    out: set[str] = set()
    if isinstance(node, dict):
        types = node.get("type")
        if types == "integer" or (isinstance(types, list) and "integer" in types) or (
                type(node.get("const")) is int):
            out.add(name)
        for key, value in node.items():
            if key == "properties":
                for prop, sub in value.items():
                    out |= _schema_ints(sub, prop)
            elif key in ("additionalProperties", "items"):
                out |= _schema_ints(value, name)
            elif key == "prefixItems":
                for sub in value:
                    out |= _schema_ints(sub, name)
            elif key == "$defs":
                for sub in value.values():
                    out |= _schema_ints(sub, "")
    return out - {""} if name == "" else out


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def test_every_schema_has_examples_covering_each_of_its_integer_fields():
    assert set(EXAMPLES) == set(SCHEMAS)
    for name, docs in EXAMPLES.items():
        for doc in docs:
            validate(name, doc)
        seen = {k for d in docs for p in _int_paths(d) for k in p if isinstance(k, str)}
        missing = _schema_ints(schema(name)) - seen
        assert not missing, f"{name}: integer fields without an example: {missing}"


NUMBERS = {("command", "seconds")}  # numbers, not integers (the release time): 6.0 is fine
CASES = [(name, i, path, odd) for name, docs in EXAMPLES.items() for i, doc in enumerate(docs)
         for path in _int_paths(doc) for odd in (6.0, 1.0, True, False, "6")
         if not (type(odd) is float and (name, path[-1]) in NUMBERS)]


@pytest.mark.parametrize(("name", "i", "path", "odd"), CASES,
                         ids=[f"{n}{i}:{'/'.join(map(str, p))}={o!r}" for n, i, p, o in CASES])
def test_a_float_or_a_boolean_where_an_integer_belongs_is_refused(name, i, path, odd):
    doc = EXAMPLES[name][i]
    with pytest.raises(ProtocolError, match="invalid"):
        validate(name, _set(doc, path, odd))


@pytest.mark.parametrize(("name", "field", "odd"), [
    ("ack", ("acked",), 29.0), ("ack", ("acked",), True), ("rules", ("version",), 6.0),
    ("rules", ("stored_seq", "d1"), 4.0), ("event", ("seq",), 7.0),
    ("command", ("seconds",), True),
])
def test_the_cases_seen_in_the_field(name, field, odd):
    with pytest.raises(ProtocolError, match="invalid"):
        validate(name, _set(EXAMPLES[name][0], field, odd))


def test_the_fast_event_check_refuses_them_too():
    event = EXAMPLES["event"][0]
    assert _event_ok(event)
    for path in _int_paths(event):
        for odd in (7.0, True):
            assert not _event_ok(_set(event, path, odd)), path


def test_compiled_row_checkers_are_strict_about_integers():
    rows = _Rows({}, {"type": "object", "additionalProperties": False,
                      "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9},
                                     "x": {"type": "number"}}})
    assert rows.check_one({"n": 1, "x": 1.5}) and rows.check_one({"n": 9, "x": 2})
    for bad in ({"n": 1.0}, {"n": True}, {"n": 0}, {"n": 10}, {"n": "1"}, {"x": True},
                {"x": "1"}):
        assert not rows.check_one(bad), bad
    with pytest.raises(ProtocolError, match=r"invalid: t: rows/1/n"):
        rows.check([{"n": 1}, {"n": 2.0}], "t", "rows")
