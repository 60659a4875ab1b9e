"""What every page shares: configuration, a pool of store connections, the request wrapper that
enforces log-in, roles and CSRF, templates, security headers.

Every route but the log-in page and static files goes through `page(...)`, which, in a worker
thread with a store from the pool: finds the session from its cookie (none: to the log-in
page), refuses a role the route does not allow (403), checks a POST's CSRF token and Origin
(403), then calls the route's synchronous handler with a `Req`. Nothing lives in the process
that another worker would need: sessions, rate limits, flash messages and the audit log are
in the store.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from accessd.central import audit
from accessd.central.memberops import Publishing
from accessd.central.store import CentralStore, open_store
from accessd.central.users import Session, User, Users, same
from accessd.events import parse_ts

HERE = Path(__file__).resolve().parent
COOKIE = "__Host-accessd-session"
LOGIN_COOKIE = "__Host-accessd-login"
MAX_FORM_BYTES = 5 * 1024 * 1024


@dataclass
class WebConfig:
    store: str
    publishing: Publishing = field(default_factory=lambda: Publishing(None, None))
    timezone: str = "Europe/Paris"  # dates when no site is chosen
    poll_s: float = 0.1  # SQLite: how often the live feed looks at the doors' marks
    notified_poll_s: float = 2.0  # PostgreSQL: a look this often besides the NOTIFYs
    retention: bool = True  # run the office's retention hourly
    pool_size: int = 8


class StorePool:
    """Store connections for worker threads (a SQLite connection, or a PostgreSQL one, is
    used by one thread at a time)."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size = url, size
        self._free: queue.LifoQueue[CentralStore] = queue.LifoQueue()
        self._made = 0
        self._lock = threading.Lock()
        self._free.put(open_store(url))  # fails early on a bad URL; creates the tables
        self._made = 1

    @contextlib.contextmanager
    def store(self) -> Iterator[CentralStore]:
        """A connection of its own for the caller's thread, returned afterwards."""
        with self._lock:
            make = self._free.empty() and self._made < self.size
            if make:
                self._made += 1
        if make:
            try:
                s = open_store(self.url)
            except BaseException:
                with self._lock:
                    self._made -= 1
                raise
        else:
            s = self._free.get()  # waits for one when all are in use
        try:
            yield s
        finally:
            self._free.put(s)

    def close(self) -> None:
        while not self._free.empty():
            self._free.get().close()


# -- templates ----------------------------------------------------------------------------------
def _local(ts: str | None, tz: ZoneInfo | str | None = None, fmt: str = "%Y-%m-%d %H:%M:%S"
           ) -> str:
    if not ts:
        return ""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    value = parse_ts(ts)
    return (value.astimezone(zone) if zone else value).strftime(fmt)


def _ago(ts: str | None, now: datetime | None = None) -> str:
    """'3 min', '2 h 05 min', '4 days': how long since `ts`."""
    if not ts:
        return ""
    from accessd.events import utcnow

    seconds = max(0, int(((now or utcnow()) - parse_ts(ts)).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} days"


def make_env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["html", "svg"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["local"] = _local
    env.filters["ago"] = _ago
    env.filters["short"] = lambda h: (h or "")[:12]
    env.filters["tojson"] = lambda v: json.dumps(v, sort_keys=True, ensure_ascii=False)
    env.globals["urlencode"] = urlencode
    env.globals["quote"] = lambda v: quote(str(v), safe="")
    return env


# -- the request wrapper ------------------------------------------------------------------------
class Forbidden(Exception):
    """The user's role or sites do not allow this (403)."""


class NotFound(Exception):
    """Nothing here (404)."""


@dataclass
class Req:
    request: Request
    store: CentralStore
    session: Session
    token: str
    form: FormData | None
    app: Any  # the Office (accessd.central.web.app)

    @property
    def user(self) -> User:
        return self.session.user

    @property
    def ip(self) -> str:
        return client_ip(self.request)

    def q(self, name: str, default: str = "") -> str:
        return (self.request.query_params.get(name) or default).strip()

    def f(self, name: str, default: str = "") -> str:
        value = self.form.get(name) if self.form is not None else None
        return value.strip() if isinstance(value, str) else default

    def sites(self) -> list[str]:
        """The sites this user may see."""
        from accessd.central.health import known_sites

        return self.user.visible(known_sites(self.store))

    def site(self, name: str, *, required: bool = True) -> str:
        """A site named in the query or form, which the user may see."""
        site = self.f(name) if self.form is not None and self.f(name) else self.q(name)
        if not site:
            if required:
                raise NotFound("no site named")
            return ""
        if not self.user.can_see(site):
            raise Forbidden(f"site {site} is not yours")
        return site

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(self.app.render(template, req=self, **context), status_code=status)

    def redirect(self, url: str, flash: str | None = None) -> RedirectResponse:
        if flash:
            Users(self.store).leave_flash(self.token, flash)
        return RedirectResponse(url, status_code=303)

    def audit(self, action: str, *, site: str | None = None, target: str | None = None,
              detail: dict[str, Any] | None = None, outcome: str = "done") -> None:
        audit.record(self.store, actor=self.user.username, role=self.user.role, ip=self.ip,
                     action=action, site=site, target=target, detail=detail, outcome=outcome)


def safe_path(value: str | None, default: str = "/") -> str:
    """A path of this site to go back to, never another site (`//host`, a scheme, `\\`)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def client_ip(request: Request) -> str:
    """The client's address (uvicorn puts the proxy's X-Forwarded-For there when the proxy
    is trusted: --forwarded-allow-ips)."""
    return request.client.host if request.client else "unknown"


def same_origin(request: Request) -> bool:
    """A POST's Origin (or Referer) names this host, or says nothing."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin != "null"
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    return urlsplit(origin).netloc == host


Handler = Callable[[Req], Response]


def page(*roles: str, csrf: bool = True, take_flash: bool = True) -> Callable[[Handler], Any]:
    """Wrap a synchronous handler: session, role (any of `roles`), CSRF on POST."""
    allowed = roles or ("operator", "manager", "viewer")

    def wrap(fn: Handler) -> Any:
        async def endpoint(request: Request) -> Response:
            office = request.app.state.office
            form = None
            if request.method == "POST":
                form = await request.form(max_files=1, max_fields=2000,
                                          max_part_size=MAX_FORM_BYTES)
            return await run_in_threadpool(office.handle, fn, request, form, allowed, csrf,
                                           take_flash)
        endpoint.__name__ = fn.__name__
        return endpoint
    return wrap


def check_csrf(session: Session, form: FormData | None) -> bool:
    token = form.get("csrf") if form is not None else None
    return isinstance(token, str) and same(token, session.csrf)


SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"strict-transport-security", b"max-age=31536000"),
]


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response (a plain ASGI middleware: streams untouched)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                if scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"public, max-age=3600"))
                else:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
