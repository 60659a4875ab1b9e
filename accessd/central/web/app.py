"""The office's web application: `create_app(WebConfig)` returns the ASGI app.

Run by `accessd central web` under uvicorn (one or more worker processes sharing the store).
Routes are in `overview`, `entries`, `roster` (members), `reports` (billing and usage) and
`auditlog`; this module holds the log-in and log-out, the request handling every route shares
(`Office.handle`), and the background tasks of a worker: the live feed, hourly retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from accessd.central import audit, retention
from accessd.central.users import Users, same
from accessd.central.web import auditlog, entries, overview, reports, roster
from accessd.central.web.core import (
    COOKIE,
    HERE,
    LOGIN_COOKIE,
    Forbidden,
    NotFound,
    Req,
    SecurityHeaders,
    StorePool,
    WebConfig,
    check_csrf,
    client_ip,
    make_env,
    safe_path,
    same_origin,
)
from accessd.central.web.feed import Feed
from accessd.errors import AccessdError

log = logging.getLogger(__name__)

NAV = [  # (path, label, roles)
    ("/", "Overview", ("operator", "manager")),
    ("/entries", "Live entries", ("operator", "manager")),
    ("/members", "Members", ("operator", "manager")),
    ("/billing", "Billing", ("operator", "manager")),
    ("/usage", "Usage report", ("operator", "manager", "viewer")),
    ("/audit", "Audit log", ("operator",)),
]


class Office:
    """One worker's application state: the store pool, templates, the live feed."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self.pool = StorePool(config.store, config.pool_size)
        self.env = make_env()
        self.feed = Feed(self)
        self.publishing = config.publishing

    def render(self, template: str, **context: Any) -> str:
        req: Req | None = context.get("req")
        user = req.user if req else None
        nav = [(p, label) for p, label, roles in NAV if user and user.role in roles]
        return self.env.get_template(template).render(
            nav=nav, user=user, csrf=req.session.csrf if req else "",
            flash=req.session.flash if req else None,
            path=req.request.url.path if req else "", can_publish=self.can_publish,
            **context)

    @property
    def can_publish(self) -> bool:
        return self.publishing.key is not None

    def handle(self, fn: Any, request: Request, form: FormData | None,
               roles: tuple[str, ...], csrf: bool, take_flash: bool) -> Response:
        """Run a route's handler (in a worker thread) once the request has passed the
        checks every route shares."""
        token = request.cookies.get(COOKIE, "")
        with self.pool.store() as store:
            session = Users(store).session(token, take_flash=take_flash)
            if session is None:
                if request.method == "GET" and "text/event-stream" not in \
                        request.headers.get("accept", ""):
                    target = request.url.path + (f"?{request.url.query}"
                                                 if request.url.query else "")
                    return RedirectResponse(f"/login?next={_q(target)}", status_code=303)
                return PlainTextResponse("log in first", status_code=401)
            req = Req(request, store, session, token, form, self)
            if session.user.role not in roles:
                return self._refuse(req, "this page is not for your role")
            if request.method == "POST" and csrf and (not check_csrf(session, form)
                                                      or not same_origin(request)):
                req.audit("csrf.refused", detail={"path": request.url.path},
                          outcome="refused")
                return req.render("error.html", status=403, title="Form expired",
                                  message="This form is out of date or did not come from this "
                                          "site. Go back, reload the page and try again.")
            try:
                return fn(req)
            except Forbidden as exc:
                return self._refuse(req, str(exc))
            except NotFound as exc:
                return req.render("error.html", status=404, title="Not found",
                                  message=str(exc) or "Nothing here.")

    def _refuse(self, req: Req, why: str) -> Response:
        if req.request.method == "POST":
            req.audit("refused", detail={"path": req.request.url.path, "why": why},
                      outcome="refused")
        return req.render("error.html", status=403, title="Not allowed", message=why)


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _safe_next(value: str | None) -> str:
    return safe_path(value, "/")


# -- log-in ---------------------------------------------------------------------------------------
def _cookie(response: Response, name: str, value: str, max_age: int | None,
            same_site: str = "lax") -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True,
                        samesite=same_site)  # type: ignore[arg-type]


def _login_page(office: Office, request: Request, *, error: str | None = None,
                username: str = "", status: int = 200) -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    insecure = request.url.scheme == "http" and request.url.hostname not in (
        "localhost", "127.0.0.1", "::1") and not request.headers.get("x-forwarded-proto")
    html = office.env.get_template("login.html").render(
        nav=[], user=None, csrf=nonce, error=error, username=username, insecure=insecure,
        next=_safe_next(request.query_params.get("next")), flash=None, path="/login")
    response = HTMLResponse(html, status_code=status)
    _cookie(response, LOGIN_COOKIE, nonce, 3600, "strict")
    return response


async def login(request: Request) -> Response:
    office: Office = request.app.state.office
    if request.method == "GET":
        return _login_page(office, request)
    form = await request.form(max_fields=10)
    return await run_in_threadpool(_login, office, request, form)


def _login(office: Office, request: Request, form: FormData) -> Response:
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    sent = str(form.get("csrf") or "")
    if not nonce or not same(nonce, sent) or not same_origin(request):
        return _login_page(office, request, error="The form expired: try again.",
                           username=username, status=403)
    ip = client_ip(request)
    with office.pool.store() as store:
        users = Users(store)
        wait = users.locked_for(username, ip)
        if wait is not None:
            audit.record(store, actor=username[:64] or "?", ip=ip, action="login",
                         outcome="refused", detail={"why": "rate limited"})
            minutes = max(1, int(wait.total_seconds() // 60) + 1)
            return _login_page(office, request, username=username, status=429,
                               error=f"Too many failed attempts: try again in {minutes} min.")
        user = users.verify(username, password) if username and password else None
        if user is None:
            users.record_failure(username or "?", ip)
            audit.record(store, actor=username[:64] or "?", ip=ip, action="login",
                         outcome="refused", detail={"why": "wrong user name or password"})
            return _login_page(office, request, username=username, status=401,
                               error="Wrong user name or password.")
        users.clear_failures(username)
        token = users.open_session(user, ip, request.headers.get("user-agent"))
        audit.record(store, actor=user.username, role=user.role, ip=ip, action="login")
    target = _safe_next(str(form.get("next") or ""))
    if user.role == "viewer" and target == "/":
        target = "/usage"
    response = RedirectResponse(target, status_code=303)
    _cookie(response, COOKIE, token, None)
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True)
    return response


async def logout(request: Request) -> Response:
    office: Office = request.app.state.office
    form = await request.form(max_fields=10)
    return await run_in_threadpool(_logout, office, request, form)


def _logout(office: Office, request: Request, form: FormData) -> Response:
    token = request.cookies.get(COOKIE, "")
    with office.pool.store() as store:
        users = Users(store)
        session = users.session(token, take_flash=False)
        if session is not None and check_csrf(session, form):
            users.close_session(token)
            audit.record(store, actor=session.username, role=session.user.role,
                         ip=client_ip(request), action="logout")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True)
    return response


async def healthz(request: Request) -> Response:
    office: Office = request.app.state.office

    def check() -> str:
        with office.pool.store() as store:
            store.rows("SELECT 1")
        return "ok"

    try:
        return PlainTextResponse(await run_in_threadpool(check))
    except AccessdError as exc:
        return PlainTextResponse(f"store unavailable: {exc}", status_code=503)


# -- background tasks -----------------------------------------------------------------------------
async def _retention_loop(office: Office) -> None:
    """Hourly, in the one worker that claims the hour in the store."""
    while True:
        try:
            def run() -> None:
                with office.pool.store() as store:
                    if retention.claim(store):
                        done = retention.apply(store)
                        audit.record(store, actor="system", action="retention.applied",
                                     detail={"cutoff": done.cutoff, "deleted": done.deleted,
                                             "frozen": len(done.frozen)})
            await run_in_threadpool(run)
        except Exception:
            log.exception("retention failed; trying again in an hour")
        await asyncio.sleep(300 + secrets.randbelow(60))


def create_app(config: WebConfig) -> Starlette:
    office = Office(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(office.feed.run())]
        if config.retention:
            tasks.append(asyncio.create_task(_retention_loop(office)))
        try:
            yield
        finally:
            office.feed.close()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            office.pool.close()

    routes = [
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        *overview.ROUTES, *entries.ROUTES, *roster.ROUTES, *reports.ROUTES, *auditlog.ROUTES,
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.office = office
    app.add_middleware(SecurityHeaders)
    return app


def from_env() -> Starlette:
    """The app for uvicorn's workers: `accessd central web` puts its settings in the
    environment (ACCESSD_WEB_CONFIG, JSON) before starting them."""
    import json

    from accessd.central.web.settings import config_from_json

    return create_app(config_from_json(json.loads(os.environ["ACCESSD_WEB_CONFIG"])))
