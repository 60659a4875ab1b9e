"""Decoding untrusted payloads: size first, then JSON, then depth, then the schema.

The size is checked on the raw bytes before any parsing, so a 2 GB payload costs nothing; the
nesting depth is bounded so that a hostile document cannot exhaust the stack; the schema
(accessd/schemas/*.json) is checked last, with a message naming the faulty field.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from accessd.errors import ProtocolError

SNAPSHOT_MAX_BYTES = 32 * 1024 * 1024  # ~100k members with two cards each
COMMAND_MAX_BYTES = 4 * 1024
EVENT_MAX_BYTES = 64 * 1024
MAX_DEPTH = 16
SCHEMAS = ("event", "ack", "status", "signed", "command", "rules", "rules_request")


def encode(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).encode("utf-8")


def _depth(doc: Any) -> int:
    """Nesting depth, iteratively (a recursive walk could itself overflow)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in node)
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
    if _depth(doc) > max_depth:
        raise ProtocolError(f"too_deep: nesting deeper than {max_depth}")
    return doc


@cache
def schema(name: str) -> dict[str, Any]:
    text = resources.files("accessd.schemas").joinpath(f"{name}.json").read_text("utf-8")
    return json.loads(text)


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name), format_checker=FormatChecker())


def validate(name: str, doc: Any) -> None:
    """Check `doc` against schemas/<name>.json; the error names the first faulty field."""
    errors = sorted(_validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(document)"
        message = err.message if len(err.message) < 200 else err.message[:200] + "..."
        raise ProtocolError(f"invalid: {name}: {where}: {message}")
