"""The overview: every site and door the user may see, their health, and the open alarms."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from accessd.central.health import overview
from accessd.central.web.core import Forbidden, NotFound, Req, page


@page("operator", "manager")
def show(req: Req) -> Response:
    sites = req.sites()
    data = overview(req.store, sites)
    counts = {"doors": sum(len(s["doors"]) for s in data),
              "offline": sum(1 for s in data for d in s["doors"] if d["online"] is False),
              "alarms": sum(len(s["alarms"]) for s in data),
              "behind": sum(1 for s in data for d in s["doors"]
                            if d["rule_version"] is not None
                            and d["rule_version"] < d["published"])}
    return req.render("overview.html", sites=data, counts=counts, title="Overview")


@page("operator", "manager")
def clear_alarm(req: Req) -> Response:
    alarm_id = req.request.path_params["alarm_id"]
    found = [a for a in req.store.alarms(open_only=True) if a["id"] == alarm_id]
    if not found:
        raise NotFound("this alarm is not open (someone cleared it?)")
    alarm = found[0]
    if not req.user.can_see(alarm["site"]):
        raise Forbidden(f"site {alarm['site']} is not yours")
    req.store.clear_alarm(alarm_id)
    req.audit("alarm.clear", site=alarm["site"], target=f"{alarm['door']}/{alarm['kind']}",
              detail={"alarm": alarm_id, "detail": alarm["detail"],
                      "first_seen": alarm["first_seen"], "count": alarm["count"]})
    return req.redirect("/", f"Alarm {alarm['kind']} at {alarm['site']}/{alarm['door']} "
                             "cleared.")


ROUTES = [
    Route("/", show),
    Route("/alarms/{alarm_id}/clear", clear_alarm, methods=["POST"]),
]
