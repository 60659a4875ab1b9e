"""The audit log, for operators: every action, newest first, filtered."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from accessd.central import audit
from accessd.central.web.core import Req, page

PAGE = 200


@page("operator")
def show(req: Req) -> Response:
    filters = {k: req.q(k) for k in ("actor", "action", "site", "target")}
    before = req.q("before") or None
    rows = audit.entries(req.store, **{k: v or None for k, v in filters.items()},
                         before=before, limit=PAGE + 1)
    older = rows[PAGE - 1]["ts"] if len(rows) > PAGE else None
    return req.render("audit.html", title="Audit log", rows=rows[:PAGE], filters=filters,
                      actions=audit.actions(req.store), older=older)


ROUTES = [Route("/audit", show)]
