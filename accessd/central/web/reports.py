"""Billing (occasional members' hours, the figures of `accessd central report`) and the usage
report for the council (charts drawn on the server as SVG, a print stylesheet)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from accessd.central import retention, usage
from accessd.central.report import monthly_billing
from accessd.central.web import charts
from accessd.central.web.core import Req, page
from accessd.central.web.entries import site_tz
from accessd.errors import UnknownSite

BILLING_CSV = retention.BILLING_COLUMNS


def _month(req: Req, tz: Any) -> tuple[str, str | None]:
    """The month asked for (YYYY-MM), else the current one; and an error for a bad one."""
    text = req.q("month")
    now = datetime.now(tz)
    current = f"{now.year:04d}-{now.month:02d}"
    if not text:
        return current, None
    if len(text) == 7 and text[4] == "-" and text[:4].isdigit() and text[5:].isdigit() \
            and 1 <= int(text[5:]) <= 12 and int(text[:4]) >= 2000:
        return text, None
    return current, "a month, YYYY-MM"


def _site(req: Req) -> tuple[list[str], str]:
    sites = req.sites()
    site = req.site("site", required=False) or (sites[0] if sites else "")
    return sites, site


@page("operator", "manager")
def billing(req: Req) -> Response:
    sites, site = _site(req)
    tz = site_tz(req.store, site, req.app.config.timezone) if site else None
    month, error = _month(req, tz)
    lines: list[dict[str, Any]] = []
    live, frozen = None, False
    if site:
        try:
            live = monthly_billing(req.store, site, month)
        except UnknownSite:
            live = None
        lines = retention.billing(req.store, site, month, live) if live else []
        frozen = retention.is_frozen(req.store, site, month)
    totals = {"visits": sum(r["visits"] for r in lines),
              "hours": round(sum(r["hours"] for r in lines), 2),
              "guessed": sum(r["visits_closed_at_closing_time"] for r in lines),
              "no_end": sum(r["visits_without_end"] for r in lines)}
    return req.render("billing.html", title="Billing", sites=sites, site=site, month=month,
                      errors={"month": error} if error else {}, lines=lines,
                      visits=live.visits if live else [],
                      in_progress=live.in_progress if live else [],
                      warnings=live.warnings if live else [], totals=totals, frozen=frozen,
                      tz=tz)


@page("operator", "manager", take_flash=False)
def billing_csv(req: Req) -> Response:
    """The month's lines, columns as `accessd central report --csv` (always the same)."""
    site = req.site("site")
    month, error = _month(req, site_tz(req.store, site, req.app.config.timezone))
    if error:
        return Response(f"month: {error}\n", status_code=400, media_type="text/plain")
    try:
        lines = retention.billing(req.store, site, month)
    except UnknownSite:
        lines = []
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=BILLING_CSV, lineterminator="\n")
    w.writeheader()
    w.writerows({k: r[k] for k in BILLING_CSV} for r in lines)
    req.audit("billing.export", site=site, detail={"month": month, "lines": len(lines)})
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition":
                             f'attachment; filename="billing-{site}-{month}.csv"'})


def _usage(req: Req, sites: list[str], site: str, month: str,
           errors: dict[str, str]) -> dict[str, Any]:
    ctx: dict[str, Any] = {"title": "Usage report", "sites": sites, "site": site,
                           "month": month, "errors": errors, "form": {}}
    if site:
        f = usage.figures(req.store, site, month)
        year = usage.year(req.store, site, month)
        target = usage.targets(req.store, site)
        ctx.update(
            f=f, year=year, target=target, enrolled=usage.enrolled(req.store, site),
            name=(req.store.site(site) or {}).get("name") or site,
            heat={g: charts.heatmap(f[g]["heat"], label=f"Average {g}s present, "
                                    "by weekday and hour") for g in usage.GROUPS},
            days=charts.day_lines({g: f[g]["days"] for g in usage.GROUPS}, month),
            trend=charts.month_bars(year, target["subscriber"]),
            met={g: _met(f[g]["active"], target[g]) for g in usage.GROUPS})
    return ctx


@page()
def usage_page(req: Req) -> Response:
    sites, site = _site(req)
    tz = site_tz(req.store, site, req.app.config.timezone) if site else None
    month, error = _month(req, tz)
    return req.render("usage.html", **_usage(req, sites, site, month,
                                             {"month": error} if error else {}))


def _met(value: int, target: list[int | None]) -> str | None:
    lo, hi = target
    if lo is None and hi is None:
        return None
    if lo is not None and value < lo:
        return "below"
    if hi is not None and value > hi:
        return "above"
    return "met"


@page("operator")
def set_targets(req: Req) -> Response:
    site = req.site("site")
    errors: dict[str, str] = {}
    value: dict[str, list[int | None]] = {}
    for g in usage.GROUPS:
        pair: list[int | None] = []
        for end in ("min", "max"):
            text = req.f(f"{g}_{end}")
            if not text:
                pair.append(None)
            elif text.isdigit() and int(text) <= 100_000:
                pair.append(int(text))
            else:
                errors[f"{g}_{end}"] = "a whole number, or empty"
                pair.append(None)
        if pair[0] is not None and pair[1] is not None and pair[1] < pair[0]:
            errors[f"{g}_max"] = "below the minimum"
        value[g] = pair
    month = req.f("month") if len(req.f("month")) == 7 else ""
    back = f"/usage?site={site}" + (f"&month={month}" if month else "")
    if errors:
        req.audit("usage.targets", site=site, detail={"errors": errors}, outcome="refused")
        ctx = _usage(req, req.sites(), site, month or _month(req, None)[0], errors)
        ctx["form"] = {k: req.f(k) for k in errors}
        return req.render("usage.html", status=400, **ctx)
    usage.set_targets(req.store, site, value)
    req.audit("usage.targets", site=site, detail=value)
    return req.redirect(back, "Targets saved.")


ROUTES = [
    Route("/billing", billing),
    Route("/billing.csv", billing_csv),
    Route("/usage", usage_page),
    Route("/usage/targets", set_targets, methods=["POST"]),
]
