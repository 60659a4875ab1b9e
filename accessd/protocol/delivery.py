"""Events and acknowledgements on the wire: each signed by its sender, bound to one door.

A door signs every event it publishes with its own key (`DoorKey`, made on the device); the
office stores only what a key it registered for that very door signed. Since version 3 a
door signs up to 100 events at once, as the lines of one text carried exactly as signed (a
backlog costs the office one signature check per message, not per event); version 2 (one
event, signed over its canonical JSON) is still read. The office signs
every acknowledgement, resend request and rebase instruction with its key; a door uses none
it cannot verify with the office's public keys. Both are about one journal of one door
(`journal`, a random id made with the journal), so nothing said about a door's previous
journal (an SD card replaced) is ever applied to the new one. docs/protocol.md describes it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from accessd.errors import ProtocolError
from accessd.protocol.codec import (
    EVENT_FIELDS,
    EVENT_MAX_BYTES,
    EVENT_VERSION,
    EVENTS_VERSION,
    MAX_DEPTH,
    decode,
    depth,
    encode,
    event_ok,
    validate,
    validate_strictly,
)
from accessd.protocol.signing import (
    PublicKeys,
    SigningKey,
    canonical,
    key_id,
    raw_public_bytes,
)

ACK_VERSION = 2
ACK_MAX_BYTES = 2048


# -- a door's events (version 2: one per message; version 3: signed lines, one or more) -------

BATCH_MAX_EVENTS = 1000  # lines of one version 3 message
BATCH_MAX_BYTES = 1024 * 1024  # a version 3 message, whole (a door's text budget, escaped)
BATCH_TEXT_BYTES = 256 * 1024  # a door's lines in one message (escaped: at most twice that)
V2_ENVELOPE_BYTES = 137  # {"key_id":"<16>","payload":…,"sig":"<88>"} around a payload
LINE_MAX_BYTES = EVENT_MAX_BYTES - V2_ENVELOPE_BYTES  # an event that fits a version 2 message
LINE_MAX_DEPTH = MAX_DEPTH - 1  # within a version 2 envelope, an event is one level down


class DoorKeys:
    """The door public keys the office registered: which key id belongs to which door."""

    def __init__(self, keys: Iterable[tuple[str, str, Ed25519PublicKey]]) -> None:
        self.owner: dict[str, tuple[str, str]] = {}
        self.raw: dict[str, bytes] = {}
        for site, door, public in keys:
            kid = key_id(public)
            self.owner[kid], self.raw[kid] = (site, door), raw_public_bytes(public)

    def __len__(self) -> int:
        return len(self.owner)

    def key_for(self, envelope: Any, site: str, door: str) -> bytes:
        """The raw public key that must have signed this (version 2) envelope, if it is
        registered for (site, door); else ProtocolError with reason unsigned, unknown_key
        or wrong_door."""
        if not isinstance(envelope, dict) or "sig" not in envelope:
            raise ProtocolError("unsigned: the event carries no signature")
        validate("signed", envelope)
        return self.registered(envelope["key_id"], site, door)

    def registered(self, kid: str, site: str, door: str) -> bytes:
        """The raw public key `kid`, if it is registered for (site, door)."""
        owner = self.owner.get(kid)
        if owner is None:
            raise ProtocolError(f"unknown_key: key {kid} is not registered for {site}/{door}")
        if owner != (site, door):
            raise ProtocolError(f"wrong_door: signed by key {kid}, registered for "
                                f"{owner[0]}/{owner[1]}")
        return self.raw[kid]

    def verify(self, envelope: Any, site: str, door: str) -> dict[str, Any]:
        """The payload, if a key registered for (site, door) signed it; else ProtocolError
        with reason unsigned, unknown_key, wrong_door or bad_signature."""
        raw = self.key_for(envelope, site, door)
        if not signature_holds(raw, envelope):
            raise ProtocolError("bad_signature: the signature does not match")
        return envelope["payload"]


def signed_bytes(envelope: dict[str, Any]) -> tuple[bytes, bytes]:
    """(signature, the bytes it signs) of an envelope that passed schemas/signed.json."""
    return base64.b64decode(envelope["sig"]), canonical(envelope["payload"])


def signature_holds(raw: bytes, envelope: dict[str, Any]) -> bool:
    sig, message = signed_bytes(envelope)
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(sig, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def check_event(payload: dict[str, Any], *, site: str, door: str) -> dict[str, Any]:
    """The rest of an event's checks, once its signature holds: schema, site and door, floor."""
    validate("event", payload)
    return _same_door(payload, site, door)


def _same_door(payload: dict[str, Any], site: str, door: str) -> dict[str, Any]:
    if (payload["site"], payload["door"]) != (site, door):
        raise ProtocolError(f"wrong_door: an event of {payload['site']}/{payload['door']} "
                            f"on the topic of {site}/{door}")
    if payload.get("floor", 1) > payload["seq"]:
        raise ProtocolError(f"invalid: event: floor {payload['floor']} above its own "
                            f"seq {payload['seq']}")
    return payload


def read_event(raw: bytes, keys: DoorKeys, *, site: str, door: str) -> dict[str, Any]:
    """The payload of a version 2 event published on (site, door)'s topic, checked whole:
    size, JSON, signature by one of that door's keys, schema, site and door, floor."""
    payload = keys.verify(decode(raw, max_bytes=EVENT_MAX_BYTES), site, door)
    return check_event(payload, site=site, door=door)


def encode_event(key: SigningKey, payload: dict[str, Any]) -> bytes:
    """One event alone in a version 2 message (a door set to `event_version = 2`, for an
    office older than version 3)."""
    return encode(key.sign(payload))


def encode_events(key: SigningKey, payloads: list[dict[str, Any]]) -> bytes:
    """One version 3 message: these events as lines of one text, signed as it is carried."""
    return _signed_lines(key, [canonical(p) for p in payloads])


def event_messages(key: SigningKey, payloads: list[dict[str, Any]], *,
                   version: int = EVENTS_VERSION,
                   max_events: int = BATCH_MAX_EVENTS) -> list[tuple[int, bytes]]:
    """The messages that carry these events, in order, as (how many events, bytes): version
    3 packs up to `max_events` in one signed message within BATCH_TEXT_BYTES (one
    signature for all of them, where a door catching up sent one each); version 2 sends each
    alone."""
    if version == 2:
        return [(1, encode_event(key, p)) for p in payloads]
    out: list[tuple[int, bytes]] = []
    lines: list[bytes] = []
    size = 0
    for p in payloads:
        line = canonical(p)
        if lines and (len(lines) >= max_events or size + len(line) + 1 > BATCH_TEXT_BYTES):
            out.append((len(lines), _signed_lines(key, lines)))
            lines, size = [], 0
        lines.append(line)
        size += len(line) + 1
    if lines:
        out.append((len(lines), _signed_lines(key, lines)))
    return out


def _signed_lines(key: SigningKey, lines: list[bytes]) -> bytes:
    text = b"\n".join(lines)
    return encode({"v": EVENTS_VERSION, "events": text.decode("utf-8"),
                   "sig": key.sign_bytes(text), "key_id": key.key_id})


@dataclass(frozen=True)
class Opened:
    """An event message whose door key is known and whose signature is still to be checked:
    `public` must have signed `signed` with `sig`. `single`: the payload of a version 2
    message; else `text` holds a version 3 message's lines."""

    public: bytes
    sig: bytes
    signed: bytes
    single: dict[str, Any] | None = None
    text: str = ""


def open_message(raw: bytes, keys: DoorKeys, *, site: str, door: str) -> Opened:
    """The collector's first step on an event message from (site, door)'s topic: size, JSON,
    depth, envelope, the door's key. ProtocolError (too_large, malformed, too_deep, unsigned,
    invalid, unknown_key, wrong_door) refuses the whole message."""
    envelope = decode(raw, max_bytes=BATCH_MAX_BYTES)
    if type(envelope) is dict and "events" in envelope and "payload" not in envelope:
        if "sig" not in envelope:
            raise ProtocolError("unsigned: the events carry no signature")
        validate("signed_events", envelope)
        public = keys.registered(envelope["key_id"], site, door)
        text = envelope["events"]
        try:
            signed = text.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("malformed: events: not UTF-8 text") from None
        return Opened(public, base64.b64decode(envelope["sig"]), signed, text=text)
    if len(raw) > EVENT_MAX_BYTES:
        raise ProtocolError(f"too_large: {len(raw)} bytes, the limit is {EVENT_MAX_BYTES}")
    public = keys.key_for(envelope, site, door)
    sig, signed = signed_bytes(envelope)
    return Opened(public, sig, signed, single=envelope["payload"])


def events_in(opened: Opened, *, site: str, door: str
              ) -> tuple[list[dict[str, Any]], list[ProtocolError]]:
    """Once the signature of `opened` holds: its events that pass every check of an event
    (size, JSON, depth, schema, site and door, floor), and why each other one was refused.
    A version 3 message with more than BATCH_MAX_EVENTS lines is refused whole
    (ProtocolError)."""
    if opened.single is not None:
        try:
            return [check_event(opened.single, site=site, door=door)], []
        except ProtocolError as exc:
            return [], [exc]
    lines = opened.text.split("\n")
    if len(lines) > BATCH_MAX_EVENTS:
        raise ProtocolError(f"invalid: signed_events: {len(lines)} events, at most "
                            f"{BATCH_MAX_EVENTS} in one message")
    good: list[dict[str, Any]] = []
    bad: list[ProtocolError] = []
    for line in lines:
        try:
            good.append(_line_event(line, site, door))
        except ProtocolError as exc:
            bad.append(exc)
    return good, bad


def _line_event(line: str, site: str, door: str) -> dict[str, Any]:
    """One line of a version 3 text, checked as the same event alone in a version 2 message
    would be (tests/test_protocol_delivery.py holds the two to the same verdicts)."""
    if len(line) * 4 > LINE_MAX_BYTES and len(line.encode("utf-8")) > LINE_MAX_BYTES:
        raise ProtocolError(f"too_large: an event of {len(line.encode('utf-8'))} bytes, the "
                            f"limit is {LINE_MAX_BYTES}")
    try:
        payload = json.loads(line)
    except RecursionError:
        raise ProtocolError(f"too_deep: nesting deeper than {LINE_MAX_DEPTH}") from None
    except ValueError as exc:
        raise ProtocolError(f"malformed: not JSON: {exc}") from None
    if event_ok(payload) and payload.keys() <= EVENT_FIELDS:
        # every field but `detail` is a scalar (event_ok saw to it): only its depth counts
        if depth(payload["detail"]) + 1 > LINE_MAX_DEPTH:
            raise ProtocolError(f"too_deep: nesting deeper than {LINE_MAX_DEPTH}")
        return _same_door(payload, site, door)
    if depth(payload) > LINE_MAX_DEPTH:
        raise ProtocolError(f"too_deep: nesting deeper than {LINE_MAX_DEPTH}")
    return check_event(payload, site=site, door=door)


def read_events(raw: bytes, keys: DoorKeys, *, site: str, door: str
                ) -> tuple[list[dict[str, Any]], list[ProtocolError]]:
    """The reference reader of an event message, either version, written plainly from
    docs/protocol.md: every schema by jsonschema, every key object made afresh, each line
    decoded alone. The collector's own path (`open_message`, a batch's signatures at once,
    `events_in`) must never accept what this refuses (tests/test_protocol_delivery.py)."""
    envelope = decode(raw, max_bytes=BATCH_MAX_BYTES)
    if isinstance(envelope, dict) and "events" in envelope and "payload" not in envelope:
        if "sig" not in envelope:
            raise ProtocolError("unsigned: the events carry no signature")
        validate_strictly("signed_events", envelope)
        public = keys.registered(envelope["key_id"], site, door)
        try:
            signed = envelope["events"].encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("malformed: events: not UTF-8 text") from None
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(
                base64.b64decode(envelope["sig"]), signed)
        except (InvalidSignature, ValueError):
            raise ProtocolError("bad_signature: the signature does not match") from None
        lines = envelope["events"].split("\n")
        if len(lines) > BATCH_MAX_EVENTS:
            raise ProtocolError(f"invalid: signed_events: {len(lines)} events")
        good, bad = [], []
        for line in lines:
            try:
                payload = decode(line, max_bytes=LINE_MAX_BYTES, max_depth=LINE_MAX_DEPTH)
                validate_strictly("event", payload)
                good.append(_same_door(payload, site, door))
            except ProtocolError as exc:
                bad.append(exc)
        return good, bad
    if len(raw) > EVENT_MAX_BYTES:
        raise ProtocolError(f"too_large: {len(raw)} bytes, the limit is {EVENT_MAX_BYTES}")
    if not isinstance(envelope, dict) or "sig" not in envelope:
        raise ProtocolError("unsigned: the event carries no signature")
    validate_strictly("signed", envelope)
    public = keys.registered(envelope["key_id"], site, door)
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(
            base64.b64decode(envelope["sig"]), canonical(envelope["payload"]))
    except (InvalidSignature, ValueError):
        raise ProtocolError("bad_signature: the signature does not match") from None
    try:
        validate_strictly("event", envelope["payload"])
        return [_same_door(envelope["payload"], site, door)], []
    except ProtocolError as exc:
        return [], [exc]


def make_ack(key: SigningKey, *, site: str, door: str, journal: str, acked: int | None = None,
             resend: tuple[int, int] | None = None,
             rebase: tuple[int, str] | None = None) -> dict[str, Any]:
    """A signed acknowledgement for one door's journal (schemas/ack.json).

    `acked`: stored up to here; `resend`: please send this range again; `rebase`: (after,
    new journal id), number your unacknowledged entries after `after`.
    """
    payload: dict[str, Any] = {"v": ACK_VERSION, "site": site, "door": door,
                               "journal": journal}
    if acked is not None:
        payload["acked"] = acked
    if resend is not None:
        payload["resend"] = [resend[0], resend[1]]
    if rebase is not None:
        payload["rebase"] = {"after": rebase[0], "journal": rebase[1]}
    validate("ack", payload)
    return key.sign(payload)


def read_ack(raw: bytes, keys: PublicKeys, *, site: str, door: str) -> dict[str, Any]:
    """The payload of an acknowledgement the office signed for this very door; else
    ProtocolError (unsigned, unknown_key, bad_signature, invalid, wrong_door...)."""
    payload = keys.verify(decode(raw, max_bytes=ACK_MAX_BYTES))
    validate("ack", payload)
    if (payload["site"], payload["door"]) != (site, door):
        raise ProtocolError(f"wrong_door: meant for {payload['site']}/{payload['door']}")
    if "resend" in payload and payload["resend"][0] > payload["resend"][1]:
        raise ProtocolError(f"invalid: ack: resend range {payload['resend']} is empty")
    return payload


__all__ = ["ACK_MAX_BYTES", "ACK_VERSION", "BATCH_MAX_BYTES", "BATCH_MAX_EVENTS",
           "EVENTS_VERSION", "EVENT_VERSION", "DoorKeys", "Opened", "check_event",
           "encode_event", "encode_events", "event_messages", "events_in", "make_ack",
           "open_message", "read_ack", "read_event", "read_events", "signature_holds",
           "signed_bytes"]
