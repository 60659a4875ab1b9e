"""Who may use the office in a browser: users and roles, sessions, failed logins.

Three roles, enforced by the web application on every request (docs/central.md):

- `operator`: every site, every page and action, the audit log;
- `manager` (a site's host): the sites named for them: overview, entries, members and their
  actions, door enrolments, billing, the usage report;
- `viewer` (the council): the usage report of the sites named, or of every site.

Passwords are hashed with argon2id (argon2-cffi); a session is a random token in a cookie,
of which the store keeps only a SHA-256, so a copy of the database opens no session.
Failed logins are rows in the store, so several web workers share the rate limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from accessd.errors import AccessdError, UserError
from accessd.events import format_ts, parse_ts, utcnow

if TYPE_CHECKING:
    from accessd.central.store import CentralStore

ROLES = ("operator", "manager", "viewer")
MIN_PASSWORD = 10
SESSION_IDLE = timedelta(hours=12)  # a session not used for this long is over
SESSION_MAX = timedelta(days=7)  # and none lasts longer than this
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_USER = 5  # in FAILURE_WINDOW: that name is locked until the window moves on
MAX_FAILURES_PER_IP = 20  # in FAILURE_WINDOW: that address is locked likewise
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-@")


@dataclass(frozen=True)
class User:
    username: str
    role: str
    sites: tuple[str, ...]  # empty: every site (operators, and viewers of every site)

    def can_see(self, site: str) -> bool:
        return self.role == "operator" or not self.sites or site in self.sites

    def visible(self, all_sites: list[str]) -> list[str]:
        return [s for s in all_sites if self.can_see(s)]

    @property
    def manages(self) -> bool:
        """Members, entries, billing: operators and managers."""
        return self.role in ("operator", "manager")


@dataclass(frozen=True)
class Session:
    username: str
    csrf: str
    user: User
    flash: str | None = None  # a message left by the previous request (once)


def _hasher() -> Any:
    try:
        from argon2 import PasswordHasher
    except ImportError:
        raise AccessdError("the office's web users need argon2-cffi: "
                           "pip install 'accessd[office]'") from None
    return PasswordHasher()


def check_name(username: str) -> str:
    name = username.strip().lower()
    if not name or len(name) > 64 or set(name) - _NAME_CHARS:
        raise UserError(f"user name {username!r}: 1 to 64 of a-z 0-9 . _ - @")
    return name


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise UserError("the password is longer than 1024 characters")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    """Users, sessions and failed logins of one store."""

    def __init__(self, store: CentralStore) -> None:
        self.store = store

    # -- users ------------------------------------------------------------------------------
    def add(self, username: str, password: str, role: str, sites: list[str]) -> User:
        name = check_name(username)
        user = self._user(name, role, sites)
        check_password(password)
        now = format_ts(utcnow())
        with self.store.transaction():
            if self.get(name):
                raise UserError(f"user {name} exists (passwd changes the password)")
            self.store.execute(
                "INSERT INTO web_users (username, password_hash, role, sites, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, _hasher().hash(password), role, ",".join(user.sites), now, now))
        return user

    def _user(self, name: str, role: str, sites: list[str]) -> User:
        if role not in ROLES:
            raise UserError(f"role: one of {', '.join(ROLES)}, not {role!r}")
        clean = tuple(sorted({s.strip() for s in sites if s.strip()}))
        if role == "manager" and not clean:
            raise UserError("a manager manages one or more sites: name them (--site)")
        if role == "operator" and clean:
            raise UserError("an operator sees every site: --site is for managers and viewers")
        return User(name, role, clean)

    def set_password(self, username: str, password: str) -> None:
        """A new password; every session of the user ends."""
        check_password(password)
        name = check_name(username)
        with self.store.transaction():
            n = self.store.execute("UPDATE web_users SET password_hash = ?, updated_at = ? "
                                   "WHERE username = ?",
                                   (_hasher().hash(password), format_ts(utcnow()),
                                    name)).rowcount
            if not n:
                raise UserError(f"no user {name}")
            self.store.execute("DELETE FROM web_sessions WHERE username = ?", (name,))

    def remove(self, username: str) -> None:
        name = check_name(username)
        with self.store.transaction():
            if not self.store.execute("DELETE FROM web_users WHERE username = ?",
                                      (name,)).rowcount:
                raise UserError(f"no user {name}")
            self.store.execute("DELETE FROM web_sessions WHERE username = ?", (name,))

    def get(self, username: str) -> User | None:
        rows = self.store.rows("SELECT username, role, sites FROM web_users WHERE username = ?",
                               (username,))
        if not rows:
            return None
        name, role, sites = rows[0]
        return User(name, role, tuple(s for s in sites.split(",") if s))

    def list(self) -> list[dict[str, Any]]:
        out = []
        for name, role, sites, created, updated in self.store.rows(
                "SELECT username, role, sites, created_at, updated_at FROM web_users "
                "ORDER BY username"):
            out.append({"username": name, "role": role,
                        "sites": [s for s in sites.split(",") if s], "created_at": created,
                        "updated_at": updated})
        return out

    def verify(self, username: str, password: str) -> User | None:
        """The user if the password is theirs. An unknown name costs a hash all the same, so
        timing does not tell which names exist."""
        hasher = _hasher()
        rows = self.store.rows("SELECT password_hash FROM web_users WHERE username = ?",
                               (username.strip().lower(),))
        if not rows:
            with contextlib.suppress(Exception):
                hasher.verify(_DUMMY.get(hasher), password)
            return None
        try:
            hasher.verify(rows[0][0], password)
        except Exception:
            return None
        if hasher.check_needs_rehash(rows[0][0]):
            self.store.execute("UPDATE web_users SET password_hash = ? WHERE username = ?",
                               (hasher.hash(password), username.strip().lower()))
        return self.get(username.strip().lower())

    # -- sessions ---------------------------------------------------------------------------
    def open_session(self, user: User, ip: str | None, user_agent: str | None) -> str:
        """A new session; returns the cookie's token (only its hash is stored)."""
        token = secrets.token_urlsafe(32)
        now = format_ts(utcnow())
        self.store.execute(
            "INSERT INTO web_sessions (token_hash, username, csrf, created_at, last_seen, ip, "
            "user_agent) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (_token_hash(token), user.username, secrets.token_urlsafe(32), now, now, ip,
             (user_agent or "")[:200]))
        return token

    def session(self, token: str | None, *, take_flash: bool = True) -> Session | None:
        """The live session of a cookie, its idle time renewed (at most once a minute); its
        flash message is handed over once (`take_flash`: a page, not a download)."""
        if not token or len(token) > 100:
            return None
        key = _token_hash(token)
        rows = self.store.rows(
            "SELECT s.username, s.csrf, s.created_at, s.last_seen, u.role, u.sites, s.flash FROM "
            "web_sessions s JOIN web_users u ON u.username = s.username WHERE s.token_hash = ?",
            (key,))
        if not rows:
            return None
        name, csrf, created, seen, role, sites, flash = rows[0]
        now = utcnow()
        if now - parse_ts(seen) > SESSION_IDLE or now - parse_ts(created) > SESSION_MAX:
            self.store.execute("DELETE FROM web_sessions WHERE token_hash = ?", (key,))
            return None
        flash = flash if take_flash else None
        if flash or now - parse_ts(seen) > timedelta(minutes=1):
            self.store.execute("UPDATE web_sessions SET last_seen = ?, flash = NULL WHERE "
                               "token_hash = ?", (format_ts(now), key))
        user = User(name, role, tuple(s for s in sites.split(",") if s))
        return Session(name, csrf, user, flash)

    def leave_flash(self, token: str | None, message: str) -> None:
        """A message for the session's next page (after a redirect)."""
        if token:
            self.store.execute("UPDATE web_sessions SET flash = ? WHERE token_hash = ?",
                               (message[:2000], _token_hash(token)))

    def close_session(self, token: str | None) -> None:
        if token:
            self.store.execute("DELETE FROM web_sessions WHERE token_hash = ?",
                               (_token_hash(token),))

    def sessions(self, username: str) -> int:
        return self.store.rows("SELECT count(*) FROM web_sessions WHERE username = ?",
                               (username,))[0][0]

    # -- failed logins ----------------------------------------------------------------------
    def locked_for(self, username: str, ip: str) -> timedelta | None:
        """How long until this name or address may try again, or None if it may now."""
        since = format_ts(utcnow() - FAILURE_WINDOW)
        name = username.strip().lower()
        (by_user, first_u), = self.store.rows(
            "SELECT count(*), min(ts) FROM web_login_failures WHERE username = ? AND ts >= ?",
            (name, since))
        (by_ip, first_i), = self.store.rows(
            "SELECT count(*), min(ts) FROM web_login_failures WHERE ip = ? AND ts >= ?",
            (ip, since))
        waits = [parse_ts(first) + FAILURE_WINDOW - utcnow()
                 for count, first, limit in ((by_user, first_u, MAX_FAILURES_PER_USER),
                                             (by_ip, first_i, MAX_FAILURES_PER_IP))
                 if count >= limit and first]
        return max(waits) if waits else None

    def record_failure(self, username: str, ip: str) -> None:
        now = utcnow()
        with self.store.transaction():
            self.store.execute("INSERT INTO web_login_failures (id, username, ip, ts) VALUES "
                               "(?, ?, ?, ?)", (uuid.uuid4().hex, username.strip().lower()[:64],
                                                ip, format_ts(now)))
            self.store.execute("DELETE FROM web_login_failures WHERE ts < ?",
                               (format_ts(now - FAILURE_WINDOW * 4),))

    def clear_failures(self, username: str) -> None:
        self.store.execute("DELETE FROM web_login_failures WHERE username = ?",
                           (username.strip().lower(),))


class _Dummy:
    """A hash to verify against when the name is unknown (made once per process)."""

    def __init__(self) -> None:
        self._hash: str | None = None

    def get(self, hasher: Any) -> str:
        if self._hash is None:
            self._hash = hasher.hash(secrets.token_hex(16))
        return self._hash


_DUMMY = _Dummy()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(a.encode(), b.encode())
