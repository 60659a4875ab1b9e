"""Members: search, a member's page, every action on a member, door enrolments, the members
file import (previewed), and a member's rights (export, erase).

Each action is checked (accessd.central.memberops, accessd.rights), stored in one
transaction, audited, then signed and sent to the doors (`Publishing.publish`, the path of
`accessd central publish`). A form with a bad field comes back with the message beside the
field and nothing stored.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.responses import Response
from starlette.routing import Route

from accessd.central import memberops, privacy
from accessd.central.members import MembersFileError, read_members
from accessd.central.web.core import Forbidden, NotFound, Req, page, safe_path
from accessd.central.web.entries import site_tz
from accessd.credentials import CredentialHasher
from accessd.errors import MemberNotFound, OfficeActionError
from accessd.rights import Change

HISTORY = 30
STATUS_WORDS = {"suspended": "suspend", "active": "resume", "revoked": "revoke"}


def _member_url(site: str, member_id: str) -> str:
    from urllib.parse import quote

    return f"/members/{quote(site, safe='')}/{quote(member_id, safe='')}"


def _publish(req: Req, site: str) -> str:
    """Sign and send the site's rules; the words for the flash message."""
    return req.app.publishing.publish(req.store, site).words()


def _need_publishing(req: Req) -> None:
    if not req.app.can_publish:
        raise Forbidden("this office web has no signing key (--key): member actions are off "
                        "here; use `accessd central publish` where the key is")


# -- search and the list --------------------------------------------------------------------------
def _list_context(req: Req) -> dict[str, Any]:
    sites = req.sites()
    text = req.q("q")
    site = req.q("site")
    if site and not req.user.can_see(site):
        raise Forbidden(f"site {site} is not yours")
    shown = [site] if site else sites
    found = memberops.search(req.store, shown, text)
    pending = [p for s in shown for p in req.store.proposals(s)]
    return {"title": "Members", "sites": sites, "q": text, "site": site, "members": found,
            "pending": pending}


@page("operator", "manager")
def members(req: Req) -> Response:
    return req.render("members.html", **_list_context(req), form={}, errors={})


@page("operator", "manager")
def new_member(req: Req) -> Response:
    _need_publishing(req)
    site = req.site("site")
    data = {k: req.f(k) for k in ("id", "name", "plan", "valid_from", "valid_until", "card")}
    try:
        done = memberops.add_member(req.store, site, data)
    except OfficeActionError as exc:
        req.audit("member.add", site=site, target=data["id"] or None,
                  detail={"error": str(exc)}, outcome="refused")
        ctx = _list_context(req)
        return req.render("members.html", status=400, **ctx, form={**data, "site": site},
                          errors={exc.field or "id": str(exc)})
    req.audit("member.add", site=site, target=done["id"],
              detail={"plan": done["plan"], "valid_from": done["valid_from"],
                      "valid_until": done["valid_until"],
                      "card": (done["card"] or "")[:12] or None})
    words = _publish(req, site)
    return req.redirect(_member_url(site, done["id"]), f"Member {done['id']} enrolled; {words}.")


# -- a member's page ------------------------------------------------------------------------------
def _member(req: Req) -> tuple[str, str, dict[str, Any]]:
    site = req.request.path_params["site"]
    mid = req.request.path_params["member_id"]
    if not req.user.can_see(site):
        raise Forbidden(f"site {site} is not yours")
    m = memberops.member(req.store, site, mid)
    if m is None:
        raise NotFound(f"no member {mid} at {site}")
    return site, mid, m


def _member_page(req: Req, site: str, m: dict[str, Any], *, status: int = 200,
                 errors: dict[str, str] | None = None, form: dict[str, str] | None = None,
                 ) -> Response:
    history = req.store.rows(
        "SELECT ts, door, type, result, reason, reader, plan FROM events WHERE site = ? AND "
        f"member_id = ? ORDER BY ts DESC LIMIT {HISTORY}", (site, m["id"]))
    proposals = [p for p in req.store.proposals(site, state="all")
                 if p["member_id"] == m["id"]][-20:]
    return req.render("member.html", status=status, title=m["name"], site=site, m=m,
                      cards=memberops.cards(req.store, site, m["id"]),
                      history=[dict(zip(("ts", "door", "type", "result", "reason", "reader",
                                         "plan"), r, strict=True)) for r in history],
                      proposals=proposals, tz=site_tz(req.store, site, req.app.config.timezone),
                      errors=errors or {}, form=form or {})


@page("operator", "manager")
def member(req: Req) -> Response:
    site, _mid, m = _member(req)
    return _member_page(req, site, m)


def _action(req: Req, action: str, run: Any, **audit: Any) -> Response:
    """Run a member action; audit it; publish; back to the member's page."""
    _need_publishing(req)
    site, mid, m = _member(req)
    try:
        words = run(site, mid, m)
    except OfficeActionError as exc:
        req.audit(action, site=site, target=mid, detail={**audit, "error": str(exc)},
                  outcome="refused")
        form = {k: req.f(k) for k in ("name", "plan", "valid_from", "valid_until", "card")}
        return _member_page(req, site, m, status=400, errors={exc.field or "status": str(exc)},
                            form=form)
    if words is None:
        req.audit(action, site=site, target=mid, detail={**audit, "changed": False})
        return req.redirect(_member_url(site, mid), "Nothing to change.")
    req.audit(action, site=site, target=mid, detail={**audit, "changed": words})
    return req.redirect(_member_url(site, mid), f"{words}; {_publish(req, site)}.")


@page("operator", "manager")
def edit(req: Req) -> Response:
    data = {k: req.f(k) for k in ("name", "plan", "valid_from", "valid_until")}

    def run(site: str, mid: str, _m: dict[str, Any]) -> str | None:
        changed = memberops.change_member(req.store, site, mid, data)
        return ", ".join(changed).capitalize() if changed else None

    return _action(req, "member.change", run, fields=data)


@page("operator", "manager")
def add_card(req: Req) -> Response:
    number = req.f("card")

    def run(site: str, mid: str, _m: dict[str, Any]) -> str:
        h = memberops.add_card(req.store, site, mid, number)
        return f"Card {h[:12]} enrolled"

    return _action(req, "card.add", run)


@page("operator", "manager")
def set_status(req: Req) -> Response:
    wanted = req.f("status")
    if wanted not in STATUS_WORDS:
        raise NotFound("unknown status")
    site, mid, m = _member(req)
    if wanted == "revoked" and req.f("confirm") != "yes":
        _need_publishing(req)
        return req.render("confirm.html", title="Revoke for good?", site=site, m=m,
                          action=_member_url(site, mid) + "/status",
                          fields={"status": "revoked"},
                          message=f"Revoke {m['name']} ({mid}) at {site} for good? A revoked "
                                  "member is never made active again, and their cards stop "
                                  "opening every door of the site at the next publish.",
                          button="Revoke for good")

    def run(site: str, mid: str, _m: dict[str, Any]) -> str | None:
        done = memberops.set_status(req.store, site, mid, wanted)
        return None if done is Change.UNCHANGED else f"Member {mid} {wanted}"

    return _action(req, f"member.{STATUS_WORDS[wanted]}", run)


@page("operator", "manager")
def card_status(req: Req) -> Response:
    wanted = req.f("status")
    h = req.request.path_params["hash"]
    if wanted not in STATUS_WORDS:
        raise NotFound("unknown status")
    site, mid, m = _member(req)
    if wanted == "revoked" and req.f("confirm") != "yes":
        _need_publishing(req)
        return req.render("confirm.html", title="Revoke this card for good?", site=site, m=m,
                          action=_member_url(site, mid) + f"/card/{h}/status",
                          fields={"status": "revoked"},
                          message=f"Revoke card {h[:12]} of {m['name']} for good? It is never "
                                  "enrolled again (a lost card: enrol a new one).",
                          button="Revoke the card")

    def run(site: str, mid: str, _m: dict[str, Any]) -> str | None:
        done = memberops.set_card_status(req.store, site, mid, h, wanted)
        return None if done is Change.UNCHANGED else f"Card {h[:12]} {wanted}"

    return _action(req, f"card.{STATUS_WORDS[wanted]}", run, card=h[:12])


# -- door enrolments ----------------------------------------------------------------------------
@page("operator", "manager")
def decide(req: Req) -> Response:
    _need_publishing(req)
    site = req.request.path_params["site"]
    if not req.user.can_see(site):
        raise Forbidden(f"site {site} is not yours")
    verb = req.request.path_params["verb"]
    ids = [int(v) for v in req.form.getlist("id") if str(v).isdigit()] if req.form else []
    back = safe_path(req.f("back"), "/members")
    if not ids or verb not in ("approve", "reject"):
        return req.redirect(back, "Choose a proposal first.")
    try:
        if verb == "approve":
            done = memberops.approve(req.store, site, ids, req.user.username)
        else:
            done = memberops.reject(req.store, site, ids, req.user.username,
                                    req.f("note") or None)
    except OfficeActionError as exc:
        req.audit(f"proposal.{verb}", site=site, detail={"ids": ids, "error": str(exc)},
                  outcome="refused")
        return req.redirect(back, f"Nothing {verb}d: {exc}")
    for p in done:
        req.audit(f"proposal.{verb}", site=site, target=p["member_id"],
                  detail={"id": p["id"], "door": p["door"], "kind": p["kind"],
                          "state": p["state"], "grants": p["grants"]})
    states = ", ".join(f"#{p['id']} {p['state']}" for p in done)
    return req.redirect(back, f"{states}; {_publish(req, site)}.")


# -- the members file ------------------------------------------------------------------------------
class _Preview(Exception):
    """Raised to roll the trial import back."""


def _rows(store: Any, site: str) -> tuple[dict[str, Any], dict[str, Any]]:
    members, creds = store.rules(site)
    return ({m["id"]: m for m in members}, {c["hash"]: c for c in creds})


def preview(store: Any, site: str, members: list[dict[str, Any]],
            creds: list[dict[str, Any]], exact: bool) -> dict[str, Any]:
    """What importing would change: the import itself, run in a transaction rolled back."""
    before_m, before_c = _rows(store, site)
    out: dict[str, Any] = {}
    try:
        with store.transaction():
            out["counts"] = store.import_members(site, members, creds, exact=exact)
            after_m, after_c = _rows(store, site)
            raise _Preview
    except _Preview:
        pass
    keys = ("name", "plan", "status", "valid_from", "valid_until")
    out["added"] = [after_m[i] for i in sorted(set(after_m) - set(before_m))]
    out["removed"] = [before_m[i] for i in sorted(set(before_m) - set(after_m))]
    out["changed"] = [
        {"id": i, "name": after_m[i]["name"],
         "what": [f"{k} {before_m[i][k] or '…'} -> {after_m[i][k] or '…'}" for k in keys
                  if before_m[i][k] != after_m[i][k]]}
        for i in sorted(set(after_m) & set(before_m))
        if any(before_m[i][k] != after_m[i][k] for k in keys)]
    out["cards_added"] = sorted(set(after_c) - set(before_c))
    out["cards_removed"] = sorted(set(before_c) - set(after_c))
    out["cards_changed"] = sorted(h for h in set(after_c) & set(before_c)
                                  if (before_c[h]["member_id"], before_c[h]["status"])
                                  != (after_c[h]["member_id"], after_c[h]["status"]))
    out["digest"] = json.dumps([sorted(after_m), sorted((h, c["member_id"], c["status"])
                                                        for h, c in after_c.items()),
                                [(i, [after_m[i][k] for k in keys]) for i in sorted(after_m)]])
    return out


def _parse_upload(req: Req, site: str, name: str, text: str
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    suffix = ".json" if name.lower().endswith(".json") else ".csv"
    key = (req.store.site(site) or {}).get("credential_key")
    hasher = CredentialHasher(bytes.fromhex(key)) if key else None
    with tempfile.TemporaryDirectory(prefix="accessd-import-") as tmp:
        path = Path(tmp) / (Path(name).stem[:60] + suffix if name else "members" + suffix)
        path.write_text(text, encoding="utf-8")
        try:
            return read_members(path, hasher)
        except MembersFileError as exc:
            raise OfficeActionError(str(exc).replace(str(path), name or "the file"),
                                    "file") from None


@page("operator", "manager")
def import_form(req: Req) -> Response:
    return req.render("import.html", title="Import a members file", sites=req.sites(),
                      errors={}, form={}, result=None)


@page("operator", "manager")
def import_file(req: Req) -> Response:
    _need_publishing(req)
    site = req.site("site")
    exact = req.f("exact") == "yes"
    upload = req.form.get("file") if req.form else None
    if isinstance(upload, UploadFile) and upload.filename:
        name = upload.filename
        data = upload.file.read(5 * 1024 * 1024 + 1)
        if len(data) > 5 * 1024 * 1024:
            return req.render("import.html", status=400, title="Import a members file",
                              sites=req.sites(), form={"site": site}, result=None,
                              errors={"file": "larger than 5 MiB"})
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return req.render("import.html", status=400, title="Import a members file",
                              sites=req.sites(), form={"site": site}, result=None,
                              errors={"file": "not UTF-8 text (save it as CSV UTF-8)"})
    else:
        name, text = req.f("name"), str(req.form.get("text") or "") if req.form else ""
    if not text.strip():
        return req.render("import.html", status=400, title="Import a members file",
                          sites=req.sites(), form={"site": site}, result=None,
                          errors={"file": "choose a members file (.csv or .json)"})
    try:
        members, creds = _parse_upload(req, site, name, text)
    except OfficeActionError as exc:
        req.audit("members.import", site=site, detail={"file": name, "error": str(exc)},
                  outcome="refused")
        return req.render("import.html", status=400, title="Import a members file",
                          sites=req.sites(), form={"site": site}, result=None,
                          errors={"file": str(exc)})
    trial = preview(req.store, site, members, creds, exact)
    if req.f("apply") == "yes":
        if req.f("digest") != trial["digest"]:
            return req.render("import.html", status=409, title="Import a members file",
                              sites=req.sites(), form={"site": site}, errors={},
                              result=trial, name=name, text=text, exact=exact,
                              message="The office's members changed since the preview: "
                                      "check the changes again.")
        counts = req.store.import_members(site, members, creds, exact=exact)
        req.audit("members.import", site=site,
                  detail={"file": name, "exact": exact, "added": len(trial["added"]),
                          "removed": len(trial["removed"]), "changed": len(trial["changed"]),
                          **{k: v for k, v in counts.items() if isinstance(v, int)}})
        return req.redirect("/members?site=" + site,
                            f"{name}: {counts['members']} members, {counts['credentials']} "
                            f"cards imported; {_publish(req, site)}.")
    return req.render("import.html", title="Import a members file: preview", sites=req.sites(),
                      form={"site": site}, errors={}, result=trial, name=name, text=text,
                      exact=exact, message=None)


# -- a member's rights ---------------------------------------------------------------------------
def _export(req: Req) -> tuple[str, str, dict[str, Any]]:
    site = req.request.path_params["site"]
    mid = req.request.path_params["member_id"]
    if not req.user.can_see(site):
        raise Forbidden(f"site {site} is not yours")
    try:
        data = privacy.export(req.store, site, mid)
    except MemberNotFound as exc:
        raise NotFound(str(exc)) from None
    return site, mid, data


@page("operator", "manager", take_flash=False)
def export_json(req: Req) -> Response:
    site, mid, data = _export(req)
    req.audit("member.export", site=site, target=mid, detail={"format": "json"})
    return Response(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False),
                    media_type="application/json",
                    headers={"Content-Disposition":
                             f'attachment; filename="member-{site}-{_safe(mid)}.json"'})


@page("operator", "manager", take_flash=False)
def export_csv(req: Req) -> Response:
    site, mid, data = _export(req)
    req.audit("member.export", site=site, target=mid, detail={"format": "csv"})
    return Response(privacy.export_csv(data), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition":
                             f'attachment; filename="member-{site}-{_safe(mid)}.csv"'})


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]


@page("operator")
def erase(req: Req) -> Response:
    _need_publishing(req)
    site, mid, m = _member(req)
    if req.f("confirm") != mid:
        return req.render("confirm.html", title="Erase this member?", site=site, m=m,
                          action=_member_url(site, mid) + "/erase", fields={},
                          typed=mid, error="type the member id to confirm"
                          if req.f("confirm") else None,
                          message=f"Erase {m['name']} ({mid}) at {site}? Their row and cards "
                                  "are deleted at the office and, by the next signed rules, at "
                                  "the doors; their past entries keep only a pseudonym; billing "
                                  "lines of frozen months are kept. This cannot be undone.",
                          button="Erase for good")
    done = privacy.erase(req.store, site, mid)
    words = _publish(req, site)
    pruned = privacy.prune_versions(req.store, site)
    req.audit("member.erase", site=site, target=done["pseudonym"],
              detail={k: v for k, v in done.items() if k != "pseudonym"}
              | {"rule_versions_pruned": pruned})
    return req.redirect("/members?site=" + site,
                        f"Member erased; their entries now say {done['pseudonym']}; {words}.")


ROUTES = [
    Route("/members", members),
    Route("/members/new", new_member, methods=["POST"]),
    Route("/members/import", import_form),
    Route("/members/import", import_file, methods=["POST"]),
    Route("/proposals/{site}/{verb}", decide, methods=["POST"]),
    Route("/members/{site}/{member_id}", member),
    Route("/members/{site}/{member_id}/edit", edit, methods=["POST"]),
    Route("/members/{site}/{member_id}/card", add_card, methods=["POST"]),
    Route("/members/{site}/{member_id}/status", set_status, methods=["POST"]),
    Route("/members/{site}/{member_id}/card/{hash}/status", card_status, methods=["POST"]),
    Route("/members/{site}/{member_id}/export.json", export_json),
    Route("/members/{site}/{member_id}/export.csv", export_csv),
    Route("/members/{site}/{member_id}/erase", erase, methods=["POST"]),
]
