"""Signed commands: remote release and snapshot request, fresh for a short window only."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from accessd.errors import ProtocolError
from accessd.events import format_ts, parse_ts, utcnow
from accessd.protocol.codec import COMMAND_MAX_BYTES, decode, validate
from accessd.protocol.signing import OfficeKey, PublicKeys

DEFAULT_TTL_S = 30.0
MAX_WINDOW_S = 300.0  # a command valid for longer is refused: it could be replayed later
CLOCK_SKEW_S = 30.0  # issued "in the future" by at most this much is tolerated


def make_command(key: OfficeKey, *, type: str, site: str, door: str, operator: str,
                 ttl_s: float = DEFAULT_TTL_S, seconds: float | None = None,
                 now: datetime | None = None) -> dict[str, Any]:
    """A signed command envelope, ready to publish on the door's command topic."""
    now = now or utcnow()
    payload: dict[str, Any] = {
        "v": 1, "id": uuid.uuid4().hex, "type": type, "site": site, "door": door,
        "issued_at": format_ts(now), "expires_at": format_ts(now + timedelta(seconds=ttl_s)),
        "operator": operator,
    }
    if seconds is not None:
        payload["seconds"] = seconds
    validate("command", payload)
    return key.sign(payload)


def verify_command(raw: bytes, keys: PublicKeys, *, site: str, door: str,
                   now: datetime | None) -> dict[str, Any]:
    """The payload of a command meant for this door and fresh now; ProtocolError otherwise.

    `now` is None when the door's clock is not trusted: freshness cannot be proven then, so
    the command is refused rather than risk accepting a recorded one.
    """
    payload = keys.verify(decode(raw, max_bytes=COMMAND_MAX_BYTES))
    validate("command", payload)
    if payload["site"] != site or payload["door"] != door:
        raise ProtocolError(f"wrong_door: meant for {payload['site']}/{payload['door']}")
    if now is None:
        raise ProtocolError("clock_untrusted: cannot tell whether the command is fresh")
    issued, expires = _instant(payload, "issued_at"), _instant(payload, "expires_at")
    if (expires - issued).total_seconds() > MAX_WINDOW_S or expires <= issued:
        raise ProtocolError("bad_window: a command may be valid for at most "
                            f"{MAX_WINDOW_S:g} s")
    if now < issued - timedelta(seconds=CLOCK_SKEW_S):
        raise ProtocolError(f"not_yet_valid: issued at {payload['issued_at']}")
    if now >= expires:
        raise ProtocolError(f"expired: at {payload['expires_at']}")
    return payload


def _instant(payload: dict[str, Any], key: str) -> datetime:
    """A date-time of the payload with its UTC offset; the schema's format is not enforced
    by jsonschema alone, so an unreadable one is refused here, as failing the schema."""
    try:
        value = parse_ts(payload[key])
    except ValueError:
        raise ProtocolError(f"invalid: {key}: not a date-time") from None
    if value.tzinfo is None:
        raise ProtocolError(f"invalid: {key}: a date-time needs its UTC offset")
    return value
