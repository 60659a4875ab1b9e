"""Events and acknowledgements on the wire: each signed by its sender, bound to one door.

A door signs every event it publishes with its own key (`DoorKey`, made on the device); the
office stores only what a key it registered for that very door signed. The office signs
every acknowledgement, resend request and rebase instruction with its key; a door uses none
it cannot verify with the office's public keys. Both are about one journal of one door
(`journal`, a random id made with the journal), so nothing said about a door's previous
journal (an SD card replaced) is ever applied to the new one. docs/protocol.md describes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from accessd.errors import ProtocolError
from accessd.protocol.codec import EVENT_MAX_BYTES, EVENT_VERSION, decode, validate
from accessd.protocol.signing import PublicKeys, SigningKey, key_id

ACK_VERSION = 2
ACK_MAX_BYTES = 2048


def signed_event(key: SigningKey, payload: dict[str, Any]) -> dict[str, Any]:
    """The envelope a door publishes for one event payload (schemas/event.json)."""
    return key.sign(payload)


class DoorKeys:
    """The door public keys the office registered: which key id belongs to which door."""

    def __init__(self, keys: Iterable[tuple[str, str, Ed25519PublicKey]]) -> None:
        by_door: dict[tuple[str, str], list[Ed25519PublicKey]] = {}
        self.owner: dict[str, tuple[str, str]] = {}
        for site, door, public in keys:
            by_door.setdefault((site, door), []).append(public)
            self.owner[key_id(public)] = (site, door)
        self.doors = {door: PublicKeys(keys) for door, keys in by_door.items()}

    def __len__(self) -> int:
        return len(self.owner)

    def verify(self, envelope: Any, site: str, door: str) -> dict[str, Any]:
        """The payload, if a key registered for (site, door) signed it; else ProtocolError
        with reason unsigned, unknown_key, wrong_door or bad_signature."""
        if not isinstance(envelope, dict) or "sig" not in envelope:
            raise ProtocolError("unsigned: the event carries no signature")
        validate("signed", envelope)
        kid = envelope["key_id"]
        keys = self.doors.get((site, door))
        if keys is None or kid not in keys.by_id:
            owner = self.owner.get(kid)
            if owner is not None:
                raise ProtocolError(f"wrong_door: signed by key {kid}, registered for "
                                    f"{owner[0]}/{owner[1]}")
            raise ProtocolError(f"unknown_key: key {kid} is not registered for {site}/{door}")
        return keys.verify(envelope)


def read_event(raw: bytes, keys: DoorKeys, *, site: str, door: str) -> dict[str, Any]:
    """The payload of an event published on (site, door)'s topic, checked whole: size,
    JSON, signature by one of that door's keys, schema, site and door, floor."""
    payload = keys.verify(decode(raw, max_bytes=EVENT_MAX_BYTES), site, door)
    validate("event", payload)
    if (payload["site"], payload["door"]) != (site, door):
        raise ProtocolError(f"wrong_door: an event of {payload['site']}/{payload['door']} "
                            f"on the topic of {site}/{door}")
    if payload.get("floor", 1) > payload["seq"]:
        raise ProtocolError(f"invalid: event: floor {payload['floor']} above its own "
                            f"seq {payload['seq']}")
    return payload


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


__all__ = ["ACK_MAX_BYTES", "ACK_VERSION", "EVENT_VERSION", "DoorKeys", "make_ack",
           "read_ack", "read_event", "signed_event"]
