"""Ed25519 signatures over canonical JSON: the office signs rules, commands and
acknowledgements; each door signs its own events.

A door holds the office's public keys and its own private key only, so a stolen Pi cannot
forge rules, commands or another door's events. Several public keys may be trusted at once
(one per line in a key file) so that a key can be rolled without a flag day; `key_id` says
which one signed.

A door loads its key at every start and signs and verifies all day long: none of that needs
`cryptography.hazmat.primitives.serialization` (~0.8 MiB of a door's memory), which is
imported only to write a key, or to read one in another form than the PKCS#8 PEM this module
writes (docs/performance.md).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from accessd.errors import ConfigError, ProtocolError
from accessd.protocol.codec import validate


def canonical(payload: Any) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).encode("utf-8")


def raw_public_bytes(public: Ed25519PublicKey) -> bytes:
    """The 32 bytes of a public key."""
    return public.public_bytes_raw()


# RFC 8410: an Ed25519 private key in PKCS#8 is this DER prefix and the 32-byte seed
_PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")
_PEM_PRIVATE = ("-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----")


def _load_private(data: bytes) -> Any:
    """The private key in a PEM file: the exact form `private_pem` writes is read here,
    anything else by cryptography's loader."""
    text = data.decode("ascii", errors="replace").strip()
    head, tail = _PEM_PRIVATE
    if text.startswith(head) and text.endswith(tail):
        try:
            der = base64.b64decode("".join(text[len(head):-len(tail)].split()), validate=True)
        except binascii.Error:
            der = b""
        if len(der) == 48 and der.startswith(_PKCS8_ED25519):
            return Ed25519PrivateKey.from_private_bytes(der[16:])
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(data, password=None)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public_bytes(public)).hexdigest()[:16]


class SigningKey:
    """An Ed25519 private key (PEM, PKCS#8, unencrypted, mode 0600)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self.key_id})"

    @classmethod
    def generate(cls) -> Self:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> Self:
        """The key in `path`, made there first (mode 0600) if there is none."""
        if not path.exists():
            cls.create(path)
        return cls.load(path)

    @classmethod
    def create(cls, path: Path, *, replace: bool = False) -> Self:
        """A new key written to `path` (mode 0600): through a temporary file linked (or,
        with `replace`, renamed) into place, so a power cut never leaves half a key and two
        processes starting at once end with the same one."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)  # not the umask's
        key = cls.generate()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(key.private_pem())
                fh.flush()
                os.fsync(fh.fileno())
            if replace:
                os.replace(tmp, path)
            else:
                with contextlib.suppress(FileExistsError):  # another process was first
                    os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return key

    @classmethod
    def load(cls, path: Path) -> Self:
        from accessd.credentials import check_secret_permissions

        try:
            check_secret_permissions(path)
            key = _load_private(path.read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"{path}: private key not found") from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path}: not an Ed25519 key")
        return cls(key)

    def private_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())

    def save(self, private_path: Path, public_path: Path) -> None:
        """Write the pair; refuses to overwrite an existing private key."""
        private_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.private_pem())
        public_path.write_text(public_line(self.public) + "\n", encoding="ascii")

    def sign(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The signed envelope of a payload."""
        return {"payload": payload, "sig": self.sign_bytes(canonical(payload)),
                "key_id": self.key_id}

    def sign_bytes(self, data: bytes) -> str:
        """The signature (base64) of exactly these bytes: for a text carried as it was signed
        (a door's events, version 3), which nobody re-encodes to check."""
        return base64.b64encode(self._private.sign(data)).decode("ascii")


class OfficeKey(SigningKey):
    """The central office's key: signs rules, commands, acknowledgements."""


class DoorKey(SigningKey):
    """A door's own key, made on the device (`site.door_key_file`): signs its events."""


def public_line(public: Ed25519PublicKey, label: str = "") -> str:
    """One trusted key as a line: `ed25519 <base64 raw key> <key id> [label]`."""
    line = f"ed25519 {base64.b64encode(raw_public_bytes(public)).decode('ascii')} {key_id(public)}"
    return f"{line} {label}" if label else line


def parse_public_line(line: str) -> tuple[Ed25519PublicKey, str]:
    """(key, label) of one `ed25519 <base64> [key id] [label]` line; ValueError if it is
    not one, or if the key id written on it is not the key's (a copy-and-paste slip)."""
    fields = line.split("#", 1)[0].split()
    if len(fields) < 2 or fields[0] != "ed25519":
        raise ValueError("expected a line 'ed25519 <base64 key> <key id>'")
    try:
        raw = base64.b64decode(fields[1], validate=True)
        public = Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error):
        raise ValueError("not an Ed25519 public key") from None
    rest = fields[2:]
    if rest and len(rest[0]) == 16 and all(c in "0123456789abcdef" for c in rest[0]):
        if rest[0] != key_id(public):
            raise ValueError(f"the key id on the line ({rest[0]}) is not the key's "
                             f"({key_id(public)}): was the line cut or mixed up?")
        rest = rest[1:]
    return public, " ".join(rest)


class PublicKeys:
    """The keys a door trusts, by key id."""

    def __init__(self, keys: list[Ed25519PublicKey]) -> None:
        self.by_id = {key_id(k): k for k in keys}

    @classmethod
    def load(cls, path: Path) -> PublicKeys:
        """Read `ed25519 <base64>` lines (or a PEM public key); '#' starts a comment."""
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the office public key: {exc}") from None
        keys: list[Ed25519PublicKey] = []
        if "BEGIN PUBLIC KEY" in text:
            from cryptography.hazmat.primitives import serialization

            key = serialization.load_pem_public_key(text.encode("ascii"))
            if isinstance(key, Ed25519PublicKey):
                keys.append(key)
        for n, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2 or fields[0] != "ed25519":
                continue
            try:
                keys.append(parse_public_line(line)[0])
            except ValueError as exc:
                raise ConfigError(f"{path}: line {n}: {exc}") from None
        if not keys:
            raise ConfigError(f"{path}: no Ed25519 public key in the file")
        return cls(keys)

    def verify(self, envelope: Any) -> dict[str, Any]:
        """The payload of a validly signed envelope, else ProtocolError("unsigned"/...)."""
        if not isinstance(envelope, dict) or "sig" not in envelope:
            raise ProtocolError("unsigned: the document carries no signature")
        validate("signed", envelope)
        public = self.by_id.get(envelope["key_id"])
        if public is None:
            raise ProtocolError(f"unknown_key: key {envelope['key_id']} is not trusted")
        try:
            public.verify(base64.b64decode(envelope["sig"]), canonical(envelope["payload"]))
        except (InvalidSignature, binascii.Error, ValueError):
            raise ProtocolError("bad_signature: the signature does not match") from None
        return envelope["payload"]


def reason_of(exc: ProtocolError) -> str:
    """The short reason code an error message starts with ("bad_signature: ...")."""
    head = str(exc).split(":", 1)[0]
    return head if head.replace("_", "").isalpha() else "invalid"
