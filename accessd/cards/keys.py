"""The site's card master keys: a versioned keyring file, and the per-card keys derived from it.

The file (`[cards] master_key_file`) holds one AES-128 master key per version, one per line:

    # accessd card master keys
    1 8F3A...32 hex digits... retired
    2 1C07...32 hex digits...

The current version is the highest one not marked `retired`; cards are issued with it and
cards holding an older, not retired version are re-keyed to it when presented. Retired
versions stay in the file so that the host can still re-key or wipe such cards, but the door
refuses them. Version 0 is the factory's (all-zero keys) and is never in the file.

Only the service user may read the file: anything looser than 0600 is refused with an error
naming the configuration key and the path. The keys never leave this process: no log line, no
repr, no event carries them.

Per-card keys follow NXP AN10922 (AES-128, CMAC with padding to 32 bytes): the master key of a
version diversified with M = UID || application id || key number || site id (8 bytes of
SHA-256 of the site id), so that a key read out of one card (were that possible) opens no
other card and no other site. Keys every card shares (the SUN meta-read key, needed before the
UID is known, and the UID-retrieval key of random-ID cards) drop the UID from M.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from accessd.cards import crypto
from accessd.errors import ConfigError, SecretPermissionError

CONFIG_KEY = "cards.master_key_file"
FACTORY_KEY = bytes(16)
MAX_VERSION = 255
_LINE = re.compile(r"^(\d{1,3})\s+([0-9a-fA-F]{32})(?:\s+(retired))?$")


@dataclass(frozen=True)
class MasterKey:
    version: int
    key: bytes = field(repr=False)
    retired: bool = False


def check_permissions(path: Path) -> None:
    """Refuse a master key file that anyone but its owner can read or change."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretPermissionError(
            f"{CONFIG_KEY}: {path}: permissions {stat.filemode(mode)} are too open for the "
            f"card master keys (readable by the service user only); run: chmod 600 {path}")


def site_tag(site_id: str) -> bytes:
    return hashlib.sha256(site_id.encode("utf-8")).digest()[:8]


class Keyring:
    """The versions of one site's master key, and the card keys derived from them."""

    def __init__(self, keys: dict[int, MasterKey], site_id: str, path: Path | None = None
                 ) -> None:
        self.keys = dict(sorted(keys.items()))
        self.site = site_tag(site_id)
        self.path = path

    def __repr__(self) -> str:
        return f"Keyring(versions={list(self.keys)}, path={self.path})"

    @classmethod
    def load(cls, path: Path, site_id: str) -> Keyring:
        try:
            check_permissions(path)
            text = path.read_text(encoding="utf-8")
        except SecretPermissionError:
            raise
        except FileNotFoundError:
            raise ConfigError(f"{CONFIG_KEY}: {path}: not found; create it with "
                              "'accessd card keygen'") from None
        except OSError as exc:
            raise ConfigError(f"{CONFIG_KEY}: {path}: cannot read: {exc.strerror}") from None
        return cls(parse(text, path), site_id, path)

    # -- versions -----------------------------------------------------------------------
    @property
    def current(self) -> MasterKey:
        usable = [k for k in self.keys.values() if not k.retired]
        if not usable:
            raise ConfigError(f"{CONFIG_KEY}: {self.path}: every version is retired; add one "
                              "with 'accessd card keygen'")
        return usable[-1]

    def get(self, version: int) -> MasterKey | None:
        return self.keys.get(version)

    def knows(self, version: int) -> bool:
        return version == 0 or version in self.keys

    # -- derived keys -------------------------------------------------------------------
    def card_key(self, version: int, app_id: bytes, slot: int, uid: bytes) -> bytes:
        """The key of `slot` on the card `uid` at `version` (0: the factory's zeros)."""
        if version == 0:
            return FACTORY_KEY
        return crypto.diversify(self._master(version), uid + app_id + bytes([slot]) + self.site)

    def site_key(self, version: int, app_id: bytes, slot: int) -> bytes:
        """A key every card of the site shares at `version` (needed before the UID is known)."""
        if version == 0:
            return FACTORY_KEY
        return crypto.diversify(self._master(version), app_id + bytes([slot]) + self.site)

    def _master(self, version: int) -> bytes:
        mk = self.keys.get(version)
        if mk is None:
            raise KeyError(f"key version {version} is not in the keyring")
        return mk.key


def parse(text: str, where: Path | str) -> dict[int, MasterKey]:
    keys: dict[int, MasterKey] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise ConfigError(f"{CONFIG_KEY}: {where}: line {number}: expected "
                              "'VERSION HEX32 [retired]'")
        version = int(m.group(1))
        if not 1 <= version <= MAX_VERSION or version in keys:
            raise ConfigError(f"{CONFIG_KEY}: {where}: line {number}: version must be "
                              f"1..{MAX_VERSION}, once")
        keys[version] = MasterKey(version, bytes.fromhex(m.group(2)), bool(m.group(3)))
    if not keys:
        raise ConfigError(f"{CONFIG_KEY}: {where}: no key in the file")
    return keys


def _format(keys: dict[int, MasterKey]) -> str:
    lines = ["# accessd card master keys: VERSION KEY [retired]. Keep this file secret (0600)."]
    lines += [f"{k.version} {k.key.hex().upper()}{' retired' if k.retired else ''}"
              for k in sorted(keys.values(), key=lambda k: k.version)]
    return "\n".join(lines) + "\n"


def _write(path: Path, keys: dict[int, MasterKey]) -> None:
    """Atomically, mode 0600 from the first byte, fsynced (a lost key means re-issuing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(_format(keys))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def new_version(path: Path) -> MasterKey:
    """Create the keyring with version 1, or add the next version (a rollover)."""
    keys: dict[int, MasterKey] = {}
    if path.exists():
        check_permissions(path)
        keys = parse(path.read_text(encoding="utf-8"), path)
    version = max(keys, default=0) + 1
    if version > MAX_VERSION:
        raise ConfigError(f"{CONFIG_KEY}: {path}: no version left (max {MAX_VERSION})")
    keys[version] = MasterKey(version, secrets.token_bytes(16))
    _write(path, keys)
    return keys[version]


def retire(path: Path, version: int) -> None:
    """Mark `version` retired: the door refuses cards still holding it."""
    check_permissions(path)
    keys = parse(path.read_text(encoding="utf-8"), path)
    if version not in keys:
        raise ConfigError(f"{CONFIG_KEY}: {path}: no version {version}")
    if all(k.retired or k.version == version for k in keys.values()):
        raise ConfigError(f"{CONFIG_KEY}: {path}: version {version} is the last one in use; "
                          "add a new one first ('accessd card keygen')")
    keys[version] = MasterKey(version, keys[version].key, True)
    _write(path, keys)
