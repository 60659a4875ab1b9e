"""Keyed hashes of card numbers, and the per-site secret they are keyed with.

Raw card numbers are never stored or logged: a credential is known only by
HMAC-SHA-256(site secret, UID). Without the secret, a stolen SD card does not give the card
numbers to clone, and the hashes of one site say nothing about another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from accessd.errors import ConfigError, SecretPermissionError

SECRET_BYTES = 32


def check_secret_permissions(path: Path) -> None:
    """Refuse a secret that others can read, or that the group can change."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise SecretPermissionError(
            f"{path}: permissions {stat.filemode(mode)} are too open for a secret; "
            f"run: chmod 600 {path}"
        )


def read_secret_file(path: Path) -> str:
    """Read a secret (a password, a key) after checking that only its owner can read it."""
    try:
        check_secret_permissions(path)
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"{path}: secret file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read secret: {exc.strerror}") from None


def load_or_create_site_secret(path: Path) -> bytes:
    """The site key; created with mode 0600 on first use so that a new site just works."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(SECRET_BYTES) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    text = read_secret_file(path)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{path}: the site key must be hexadecimal") from None
    if len(key) < 16:
        raise ConfigError(f"{path}: the site key must be at least 16 bytes")
    return key


class CredentialHasher:
    """Turns an upper-case hex UID into the credential id stored in the rule cache."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "CredentialHasher(key=<redacted>)"

    def __call__(self, uid: str) -> str:
        return hmac.new(self._key, uid.upper().encode("ascii"), hashlib.sha256).hexdigest()


def short(credential_hash: str) -> str:
    """The part of a credential hash shown to people and in events: enough to tell cards apart."""
    return credential_hash[:12]
