"""Decoding untrusted payloads: size first, then JSON, then depth, then the schema.

The size is checked on the raw bytes before any parsing, so a 2 GB payload costs nothing; the
nesting depth is bounded so that a hostile document cannot exhaust the stack; the schema
(accessd/schemas/*.json) is checked last, with a message naming the faulty field.

A rule document carries up to hundreds of thousands of rows: jsonschema would take ~14 s
over 200,000 of them (a recursive descent per value), so the rows of its arrays are checked
by small checkers compiled from the same schema file (`_Rows`), every row, every field, and
jsonschema checks the rest of the document. Both agree (tests/test_protocol_codec.py).

The documents a door checks while it runs (acknowledgements, signed envelopes, rule documents
and commands; events at the office) first meet small hand-written checkers that may be
stricter than the schema, never more lenient; whatever they refuse goes on to jsonschema, which
decides and words the error. jsonschema is imported only then: a door that only ever receives
valid documents never loads it (~3 MiB of its memory, docs/performance.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from accessd.errors import ProtocolError

SNAPSHOT_MAX_BYTES = 32 * 1024 * 1024  # ~100k members with two cards each
COMMAND_MAX_BYTES = 4 * 1024
EVENT_MAX_BYTES = 64 * 1024
MAX_DEPTH = 16
SCHEMAS = ("event", "ack", "status", "signed", "command", "rules", "rules_request",
           "signed_events")


def encode(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).encode("utf-8")


def depth(doc: Any) -> int:
    """Nesting depth, iteratively (a recursive walk could itself overflow); only containers
    are pushed, so the scalars of a 100,000-row document cost one isinstance each."""
    if not isinstance(doc, dict | list):
        return 0
    deepest, stack = 1, [(doc, 1)]
    containers = (dict, list)
    while stack:
        node, level = stack.pop()
        if level > deepest:
            deepest = level
        values = node.values() if isinstance(node, dict) else node
        nested = [v for v in values if isinstance(v, containers)]
        if nested:
            stack.extend((v, level + 1) for v in nested)
    return deepest


def decode(payload: bytes | str, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a JSON payload within limits; raise ProtocolError saying which limit broke."""
    size = len(payload.encode("utf-8") if isinstance(payload, str) else payload)
    if size > max_bytes:
        raise ProtocolError(f"too_large: {size} bytes, the limit is {max_bytes}")
    try:
        doc = json.loads(payload)
    except RecursionError:
        raise ProtocolError(f"too_deep: nesting deeper than {max_depth}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed: not JSON: {exc}") from None
    if depth(doc) > max_depth:
        raise ProtocolError(f"too_deep: nesting deeper than {max_depth}")
    return doc


@cache
def schema(name: str) -> dict[str, Any]:
    text = resources.files("accessd.schemas").joinpath(f"{name}.json").read_text("utf-8")
    return json.loads(text)


def _same(a: Any, b: Any) -> bool:
    """JSON equality that tells 6 from 6.0 and 1 from true (jsonschema's does not)."""
    numbers = (bool, int, float)
    if isinstance(a, numbers) or isinstance(b, numbers):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@cache
def _strict_class() -> Any:
    """jsonschema's Draft 2020-12 validator with strict integers, const and enum.

    JSON Schema's "integer" accepts 6.0 and its const/enum take 1.0 for 1: on the wire an
    integer is an integer (a float sequence number or rule version wedged doors), so every
    schema is checked with these stricter meanings; booleans were never numbers. Built on
    first use: importing jsonschema costs a door ~3 MiB it does not need while documents
    pass the hand-written checkers.
    """
    from jsonschema import Draft202012Validator, ValidationError, validators

    def const(_v: Any, const: Any, instance: Any, _s: Any) -> Any:
        if not _same(instance, const):
            yield ValidationError(f"{const!r} was expected")

    def enum(_v: Any, enums: Any, instance: Any, _s: Any) -> Any:
        if not any(_same(instance, e) for e in enums):
            yield ValidationError(f"{instance!r} is not one of {enums!r}")

    return validators.extend(
        Draft202012Validator, validators={"const": const, "enum": enum},
        type_checker=Draft202012Validator.TYPE_CHECKER.redefine(
            "integer", lambda _c, v: type(v) is int))


def strict_validator(schema_doc: dict[str, Any]) -> Any:
    """A jsonschema validator for `schema_doc` with strict integers (see `_strict_class`)."""
    from jsonschema import FormatChecker

    return _strict_class()(schema_doc, format_checker=FormatChecker())


@cache
def _validator(name: str) -> Any:
    return strict_validator(schema(name))


_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$").search
_TYPE = re.compile(r"^[a-z_]+\.[a-z_]+$").search
_JOURNAL = re.compile(r"^[0-9a-f]{32}$").search
_SIG = re.compile(r"^[A-Za-z0-9+/]{86}==$").search
_KEY_ID = re.compile(r"^[0-9a-f]{16}$").search
_EVENT_REQUIRED = frozenset({"v", "seq", "id", "site", "door", "journal", "type", "ts",
                             "clock_trusted", "detail"})
_SIGNED_KEYS = frozenset({"payload", "sig", "key_id"})
_OPTIONAL_STR = ("reader", "member_id", "member_name", "reason", "credential")
#: every field schemas/event.json names (an event may carry others, which it does not check)
EVENT_FIELDS = _EVENT_REQUIRED | {*_OPTIONAL_STR, "plan", "result", "floor"}
EVENT_VERSION = 2


def _positive_int(v: Any) -> bool:
    return type(v) is int and v >= 1


def _event_ok(d: Any) -> bool:
    """schemas/event.json by hand, for the collector's hot path (thousands a second).

    It may be stricter than the schema, never more lenient: anything it refuses goes on to
    jsonschema, which decides and words the error (tests/test_protocol_codec.py checks that
    whatever this accepts, jsonschema accepts).
    """
    if type(d) is not dict or not d.keys() >= _EVENT_REQUIRED:
        return False
    v = d["v"]
    ident = d["id"]
    journal = d["journal"]
    if not (type(v) is int and v == EVENT_VERSION and _positive_int(d["seq"])
            and type(ident) is str and 1 <= len(ident) <= 64
            and type(d["site"]) is str and _ID(d["site"])
            and type(d["door"]) is str and _ID(d["door"])
            and type(journal) is str and _JOURNAL(journal)
            and type(d["type"]) is str and _TYPE(d["type"])
            and type(d["ts"]) is str and type(d["clock_trusted"]) is bool
            and type(d["detail"]) is dict):
        return False
    for key in _OPTIONAL_STR:
        x = d.get(key)
        if x is not None and type(x) is not str:
            return False
    return (d.get("plan") in (None, "subscriber", "occasional")
            and d.get("result") in (None, "granted", "denied")
            and ("floor" not in d or _positive_int(d["floor"])))


def _signed_ok(d: Any) -> bool:
    """schemas/signed.json by hand (every event arrives in such an envelope)."""
    if type(d) is not dict or d.keys() != _SIGNED_KEYS:
        return False
    sig, kid = d["sig"], d["key_id"]
    return (type(d["payload"]) is dict and type(sig) is str and _SIG(sig) is not None
            and type(kid) is str and _KEY_ID(kid) is not None)


_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$").search
_COMMAND_KEYS = frozenset({"v", "id", "type", "site", "door", "issued_at", "expires_at",
                           "operator", "seconds"})
_COMMAND_REQUIRED = _COMMAND_KEYS - {"seconds"}
_COMMAND_ID = re.compile(r"^[A-Za-z0-9_-]+$").search
_RULES_KEYS = frozenset({"v", "kind", "site", "version", "base_version", "issued_at",
                         "stored_seq", "pending", "members", "credentials", "removed_members",
                         "removed_credentials", "schedule"})
_RULES_REQUIRED = frozenset({"v", "kind", "site", "version", "issued_at"})
_ROWS = ("members", "credentials", "removed_members", "removed_credentials")
_SCHEDULE_KEYS = frozenset({"timezone", "opens", "closes", "days", "closures"})
_HOUR = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$").search
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$").search
_WEEKDAYS = frozenset({"mon", "tue", "wed", "thu", "fri", "sat", "sun"})


def _int_at_least(v: Any, low: int) -> bool:
    return type(v) is int and v >= low


def _is(v: Any, version: int) -> bool:
    return type(v) is int and v == version


def _date_time(v: Any) -> bool:
    """An RFC 3339 date-time with its offset (stricter than jsonschema's format check)."""
    if type(v) is not str or _DATE_TIME(v) is None or v.endswith("\n"):
        return False
    try:
        datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _command_ok(d: Any) -> bool:
    """schemas/command.json by hand."""
    if type(d) is not dict or not _COMMAND_REQUIRED <= d.keys() <= _COMMAND_KEYS:
        return False
    ident, operator = d["id"], d["operator"]
    if not (_is(d["v"], 1)
            and type(ident) is str and 8 <= len(ident) <= 64 and _COMMAND_ID(ident)
            and d["type"] in ("release", "request_snapshot") and type(d["type"]) is str
            and type(d["site"]) is str and type(d["door"]) is str
            and _date_time(d["issued_at"]) and _date_time(d["expires_at"])
            and type(operator) is str and 1 <= len(operator) <= 100):
        return False
    if "seconds" in d:
        s = d["seconds"]
        return type(s) in (int, float) and 3 <= s <= 600
    return True


def _schedule_ok(d: Any) -> bool:
    if type(d) is not dict or d.keys() != _SCHEDULE_KEYS:
        return False
    days, closures = d["days"], d["closures"]
    return (type(d["timezone"]) is str
            and type(d["opens"]) is str and _HOUR(d["opens"]) is not None
            and type(d["closes"]) is str and _HOUR(d["closes"]) is not None
            and type(days) is list and all(type(x) is str and x in _WEEKDAYS for x in days)
            and len(set(days)) == len(days)
            and type(closures) is list
            and all(type(x) is str and _DAY(x) is not None for x in closures))


def _rules_ok(d: Any) -> bool:
    """schemas/rules.json by hand, once the compiled checkers have passed its rows (their
    arrays are empty here)."""
    if type(d) is not dict or not _RULES_REQUIRED <= d.keys() <= _RULES_KEYS:
        return False
    kind = d["kind"]
    if not (_is(d["v"], 1)
            and kind in ("snapshot", "delta") and type(kind) is str
            and type(d["site"]) is str and _ID(d["site"])
            and _int_at_least(d["version"], 1) and _date_time(d["issued_at"])
            and all(d.get(k, []) == [] for k in _ROWS)):
        return False
    if "base_version" in d and not _int_at_least(d["base_version"], 0):
        return False
    if kind == "snapshot" and not ({"members", "credentials"} <= d.keys()
                                   and not d.keys() & {"removed_members",
                                                       "removed_credentials"}):
        return False
    if kind == "delta" and "base_version" not in d:
        return False
    stored, pending = d.get("stored_seq", {}), d.get("pending", {})
    if not (type(stored) is dict and all(_int_at_least(v, 0) for v in stored.values())):
        return False
    if not (type(pending) is dict and all(
            type(v) is list and all(_int_at_least(x, 1) for x in v)
            for v in pending.values())):
        return False
    return "schedule" not in d or _schedule_ok(d["schedule"])


_SIGNED_EVENTS_KEYS = frozenset({"v", "events", "sig", "key_id"})
EVENTS_VERSION = 3


def _signed_events_ok(d: Any) -> bool:
    """schemas/signed_events.json by hand (a door's events, version 3)."""
    if type(d) is not dict or d.keys() != _SIGNED_EVENTS_KEYS:
        return False
    v, text, sig, kid = d["v"], d["events"], d["sig"], d["key_id"]
    return (type(v) is int and v == EVENTS_VERSION and type(text) is str and len(text) >= 2
            and type(sig) is str and _SIG(sig) is not None
            and type(kid) is str and _KEY_ID(kid) is not None)


_ACK_KEYS = frozenset({"v", "site", "door", "journal", "acked", "resend", "rebase"})
_REBASE_KEYS = frozenset({"after", "journal"})


def _ack_ok(d: Any) -> bool:
    """schemas/ack.json by hand: the office signs one per door and batch, a door reads each
    (jsonschema took ~150 µs an acknowledgement). Never more lenient than the schema
    (tests/test_protocol_strict.py); what it refuses goes on to jsonschema."""
    if type(d) is not dict or not d.keys() <= _ACK_KEYS:
        return False
    v, journal = d.get("v"), d.get("journal")
    if not (type(v) is int and v == 2 and type(d.get("site")) is str and _ID(d["site"])
            and type(d.get("door")) is str and _ID(d["door"])
            and type(journal) is str and _JOURNAL(journal)):
        return False
    some = False
    if "acked" in d:
        acked = d["acked"]
        if not (type(acked) is int and acked >= 0):
            return False
        some = True
    if "resend" in d:
        r = d["resend"]
        if not (type(r) is list and len(r) == 2 and _positive_int(r[0])
                and _positive_int(r[1])):
            return False
        some = True
    if "rebase" in d:
        b = d["rebase"]
        if not (type(b) is dict and b.keys() == _REBASE_KEYS and type(b["after"]) is int
                and b["after"] >= 0 and type(b["journal"]) is str and _JOURNAL(b["journal"])):
            return False
        some = True
    return some


event_ok = _event_ok  # public for the collector's hot path (accessd.protocol.delivery)

_FAST: dict[str, Callable[[Any], bool]] = {"event": _event_ok, "signed": _signed_ok,
                                           "signed_events": _signed_events_ok, "ack": _ack_ok,
                                           "command": _command_ok, "rules": _rules_ok}


def validate(name: str, doc: Any) -> None:
    """Check `doc` against schemas/<name>.json; the error names the first faulty field."""
    rows = _row_arrays(name)
    if rows and isinstance(doc, dict):
        arrays = {k: doc[k] for k in rows if isinstance(doc.get(k), list)}
        if arrays:  # the rows by their compiled checkers, the rest of the document as below
            for key, items in arrays.items():
                rows[key].check(items, name, key)
            doc = {**doc, **{key: [] for key in arrays}}
    fast = _FAST.get(name)
    if fast is not None and fast(doc):
        return
    _jsonschema(name, doc)


def validate_strictly(name: str, doc: Any) -> None:
    """`validate` by jsonschema alone, no fast path: the reference the fast paths are held to
    (for small documents; a rule document's rows are what the compiled checkers are for)."""
    _jsonschema(name, doc)


def _jsonschema(name: str, doc: Any) -> None:
    errors = sorted(_validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(document)"
        message = err.message if len(err.message) < 200 else err.message[:200] + "..."
        raise ProtocolError(f"invalid: {name}: {where}: {message}")


# -- compiled row checkers -------------------------------------------------------------------
#
# Each row schema is turned into the source of one Python function (`_Rows`): a call per row,
# no call per field. Only the keywords below are understood; a row schema using any other
# stays with jsonschema. Semantics are jsonschema's: `pattern` is a re.search, string
# keywords ignore other types, `enum` compares values.

_TYPES = {"string": "type(v) is str", "null": "v is None", "boolean": "type(v) is bool",
          "object": "type(v) is dict", "array": "type(v) is list",
          "integer": "type(v) is int", "number": "(type(v) is int or type(v) is float)"}
_KEYWORDS = {"type", "enum", "pattern", "minLength", "maxLength", "$ref", "description",
             "required", "properties", "additionalProperties", "items", "minimum",
             "maximum"}


class _Unsupported(Exception):
    pass


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/$defs/") or len(node) > 1:
            raise _Unsupported(ref)
        node = root["$defs"][ref.removeprefix("#/$defs/")]
    return node


def _expression(root: dict[str, Any], node: dict[str, Any], env: dict[str, Any]) -> str:
    """A Python expression true when the value `v` satisfies the scalar schema `node`."""
    node = _resolve(root, node)
    if set(node) - _KEYWORDS or {"properties", "items", "required"} & set(node):
        raise _Unsupported(str(sorted(node)))
    parts = []
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        if any(t not in _TYPES for t in types):
            raise _Unsupported(str(types))
        parts.append("(" + " or ".join(_TYPES[t] for t in types) + ")")
    if "enum" in node:
        if any(not isinstance(a, str | type(None)) for a in node["enum"]):
            raise _Unsupported("enum")
        name = f"E{len(env)}"
        env[name] = frozenset(node["enum"])
        parts.append(f"(v is None or type(v) is str) and v in {name}")
    strings = []
    if "pattern" in node:
        name = f"P{len(env)}"
        env[name] = re.compile(node["pattern"]).search
        strings.append(f"{name}(v) is not None")
    if "minLength" in node:
        strings.append(f"len(v) >= {int(node['minLength'])}")
    if "maxLength" in node:
        strings.append(f"len(v) <= {int(node['maxLength'])}")
    if strings:
        parts.append("(type(v) is not str or (" + " and ".join(strings) + "))")
    bounds = [f"v {op} {float(node[k])!r}" for k, op in (("minimum", ">="), ("maximum", "<="))
              if k in node]
    if bounds:
        parts.append("(type(v) not in (int, float) or (" + " and ".join(bounds) + "))")
    return " and ".join(parts) or "True"


class _Rows:
    """Every item of one array of a schema, checked by one compiled function."""

    def __init__(self, root: dict[str, Any], items: dict[str, Any]) -> None:
        self.items = {**items, "$defs": root.get("$defs", {})}  # to word an error
        node = _resolve(root, items)
        env: dict[str, Any] = {"_MISSING": object()}
        if node.get("type") == "object":
            if set(node) - _KEYWORDS or node.get("additionalProperties") is not False:
                raise _Unsupported("object")
            env["ALLOWED"] = frozenset(node["properties"])
            env["REQUIRED"] = frozenset(node.get("required", ()))
            lines = ["def check(o):",
                     "    if type(o) is not dict or not o.keys() <= ALLOWED "
                     "or not REQUIRED <= o.keys():",
                     "        return False"]
            for field, sub in node["properties"].items():
                lines += [f"    v = o.get({field!r}, _MISSING)",
                          f"    if v is not _MISSING and not ({_expression(root, sub, env)}):",
                          "        return False"]
            lines.append("    return True")
        else:
            lines = ["def check(v):", f"    return bool({_expression(root, node, env)})"]
        exec("\n".join(lines), env)  # the source is built above from the schema file
        self.check_one: Callable[[Any], bool] = env["check"]

    def check(self, items: list[Any], name: str, key: str) -> None:
        if all(map(self.check_one, items)):
            return
        for n, item in enumerate(items):
            if not self.check_one(item):
                self._fail(name, key, n, item)

    def _fail(self, name: str, key: str, n: int, item: Any) -> None:
        """The faulty row, worded by jsonschema (one row: cheap)."""
        validator = strict_validator(self.items)
        errors = sorted(validator.iter_errors(item), key=lambda e: list(e.absolute_path))
        err = errors[0] if errors else None
        where = "/".join([key, str(n), *(str(p) for p in err.absolute_path)] if err else
                         [key, str(n)])
        message = err.message if err else "not accepted"
        message = message if len(message) < 200 else message[:200] + "..."
        raise ProtocolError(f"invalid: {name}: {where}: {message}")


@cache
def _row_arrays(name: str) -> dict[str, _Rows]:
    """The top-level arrays of schemas/<name>.json whose rows get a compiled checker."""
    root = schema(name)
    out = {}
    for key, prop in root.get("properties", {}).items():
        if prop.get("type") == "array" and "items" in prop and set(prop) <= {"type", "items",
                                                                             "description"}:
            try:
                out[key] = _Rows(root, prop["items"])
            except _Unsupported:
                continue
    return out
