"""Keyed hashes of card numbers, and the per-site secret they are keyed with.

Raw card numbers are never stored or logged: a credential is known only by
HMAC-SHA-256(site secret, UID). Without the secret, a stolen SD card does not give the card
numbers to clone, and the hashes of one site say nothing about another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pwd
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from accessd.errors import ConfigError, SecretPermissionError

if TYPE_CHECKING:
    from accessd.config import Config

SECRET_BYTES = 32


def _account(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def check_secret_permissions(path: Path, where: str = "") -> None:
    """Refuse a secret that anyone but its owner can reach, or that another account owns.

    Mode 0600 owned by the account that reads it (the service user): the group is not trusted
    either, so that a person in the service's group cannot read the site key. `where` names
    the configuration file and key ("/etc/accessd/accessd.toml: site.secret_file: ").
    """
    st = path.stat()
    me = os.geteuid()
    if st.st_mode & 0o077:
        raise SecretPermissionError(
            f"{where}{path}: permissions {stat.filemode(st.st_mode)} are too open for a "
            f"secret (only its owner may read it); run: chmod 600 {path}")
    if st.st_uid != me:
        owner, user = _account(st.st_uid), _account(me)
        raise SecretPermissionError(
            f"{where}{path}: owned by {owner}, not by {user} who reads it: a secret belongs "
            f"to the account that runs accessd; run: chown {user} {path} && chmod 600 {path}"
            f" (or run accessd as the service user)")


def check_secrets(cfg: Config) -> None:
    """Check every secret file the configuration names, before anything starts.

    Each error is one line naming the configuration file, the key and the secret's path.
    """
    for key, path in secret_files(cfg):
        if path.exists():
            check_secret_permissions(path, f"{cfg.path or '<config>'}: {key}: ")


def secret_files(cfg: Config) -> list[tuple[str, Path]]:
    """(dotted key, path) of each secret file the configuration names."""
    found: list[tuple[str, Path | None]] = [
        ("site.secret_file", cfg.site.secret_file),
        ("site.door_key_file", cfg.site.door_key_file),
        *((f"doors[{i}].door_key_file", d.door_key_file) for i, d in enumerate(cfg.doors)
          if cfg.several_doors),
        ("mqtt.password_file", cfg.mqtt.password_file),
        ("mqtt.key_file", cfg.mqtt.key_file),
        ("cards.master_key_file", cfg.cards.master_key_file if cfg.cards.enabled else None),
    ]
    return [(k, p) for k, p in found if p is not None]


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
