"""The wire protocol between doors and the central office: topics, payloads, signatures.

Nothing here touches the network; both ends (accessd.uplink, accessd.central) build on it, and
docs/protocol.md describes it for anyone writing their own central office.
"""

from accessd.protocol.codec import (
    COMMAND_MAX_BYTES,
    EVENT_MAX_BYTES,
    MAX_DEPTH,
    SNAPSHOT_MAX_BYTES,
    decode,
    encode,
    validate,
)
from accessd.protocol.signing import OfficeKey, PublicKeys, canonical, key_id
from accessd.protocol.topics import Topics

__all__ = [
    "COMMAND_MAX_BYTES",
    "EVENT_MAX_BYTES",
    "MAX_DEPTH",
    "SNAPSHOT_MAX_BYTES",
    "OfficeKey",
    "PublicKeys",
    "Topics",
    "canonical",
    "decode",
    "encode",
    "key_id",
    "validate",
]
