"""Events and acknowledgements on the wire: each signed by its sender, bound to one door.

A door signs every event it publishes with its own key (`DoorKey`, made on the device); the
office stores only what a key it registered for that very door signed. The office signs
every acknowledgement, resend request and rebase instruction with its key; a door uses none
it cannot verify with the office's public keys. Both are about one journal of one door
(`journal`, a random id made with the journal), so nothing said about a door's previous
journal (an SD card replaced) is ever applied to the new one. docs/protocol.md describes it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from accessd.errors import ProtocolError
from accessd.protocol.codec import EVENT_MAX_BYTES, EVENT_VERSION, decode, encode, validate
from accessd.protocol.signing import (
    PublicKeys,
    SigningKey,
    canonical,
    key_id,
    raw_public_bytes,
)

ACK_VERSION = 2
ACK_MAX_BYTES = 2048


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
        """The raw public key that must have signed this envelope, if it is registered for
        (site, door); else ProtocolError with reason unsigned, unknown_key or wrong_door."""
        if not isinstance(envelope, dict) or "sig" not in envelope:
            raise ProtocolError("unsigned: the event carries no signature")
        validate("signed", envelope)
        kid = envelope["key_id"]
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
    if (payload["site"], payload["door"]) != (site, door):
        raise ProtocolError(f"wrong_door: an event of {payload['site']}/{payload['door']} "
                            f"on the topic of {site}/{door}")
    if payload.get("floor", 1) > payload["seq"]:
        raise ProtocolError(f"invalid: event: floor {payload['floor']} above its own "
                            f"seq {payload['seq']}")
    return payload


def read_event(raw: bytes, keys: DoorKeys, *, site: str, door: str) -> dict[str, Any]:
    """The payload of an event published on (site, door)'s topic, checked whole: size,
    JSON, signature by one of that door's keys, schema, site and door, floor."""
    payload = keys.verify(decode(raw, max_bytes=EVENT_MAX_BYTES), site, door)
    return check_event(payload, site=site, door=door)


def encode_event(key: SigningKey, payload: dict[str, Any]) -> bytes:
    """One event on the wire, alone in its message (version 2): what a live tap sends."""
    return encode(key.sign(payload))


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


__all__ = ["ACK_MAX_BYTES", "ACK_VERSION", "EVENT_VERSION", "DoorKeys", "check_event",
           "make_ack", "read_ack", "read_event", "signature_holds", "signed_bytes"]
