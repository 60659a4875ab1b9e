"""The office's web application, server side, through Starlette's TestClient: log-in, roles,
CSRF, rate limits, forms that say what is wrong and store nothing, member actions through the
signed publish path, the members file preview, a member's export and erasure, billing CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_helpers import (
    CARDS,
    HASHER,
    PASSWORD,
    client,
    csrf_of,
    event,
    log_in,
    make_store,
    page_csrf,
)

from accessd.central import audit, memberops
from accessd.central.store import CentralStore, open_store
from accessd.protocol.signing import OfficeKey

KEY = OfficeKey.generate()


@pytest.fixture
def office(tmp_path: Path) -> Iterator[tuple[CentralStore, str]]:
    path = tmp_path / "central.db"
    store = make_store(path)
    try:
        yield store, str(path)
    finally:
        store.close()


def status_of(store: CentralStore, site: str, member: str) -> str:
    m = memberops.member(store, site, member)
    assert m is not None
    return m["status"]


# -- log-in ----------------------------------------------------------------------------------------
def test_log_in_sets_a_secure_session_and_a_wrong_password_does_not(office) -> None:
    store, url = office
    with client(url) as c:
        r = log_in(c, "olga", "not the password")
        assert r.status_code == 401
        assert "Wrong user name or password" in r.text
        assert "__Host-accessd-session" not in r.headers.get("set-cookie", "")
        r = log_in(c, "nobody", PASSWORD)
        assert r.status_code == 401
        r = log_in(c, "olga")
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = [h for h in r.headers.get_list("set-cookie")
                  if h.startswith("__Host-accessd-session=")][0].lower()
        for flag in ("secure", "httponly", "samesite=lax", "path=/"):
            assert flag in cookie
        assert c.get("/").status_code == 200
        csrf = page_csrf(c, "/")
        assert c.post("/logout", data={"csrf": csrf}).status_code == 303
        assert c.get("/").status_code == 303  # the session is gone at the office
    logins = [(e["actor"], e["outcome"]) for e in audit.entries(store, action="login")]
    assert ("olga", "done") in logins and ("olga", "refused") in logins
    assert ("nobody", "refused") in logins


def test_a_page_without_a_session_sends_to_log_in_and_a_post_is_refused(office) -> None:
    store, url = office
    with client(url) as c:
        r = c.get("/members?q=ana")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=%2Fmembers%3Fq%3Dana"
        r = c.post("/members/s1/ana/status", data={"status": "suspended"})
        assert r.status_code == 401
    assert status_of(store, "s1", "ana") == "active"


def test_log_in_form_without_its_token_is_refused(office) -> None:
    _store, url = office
    with client(url) as c:
        r = c.post("/login", data={"username": "olga", "password": PASSWORD, "csrf": "x"})
        assert r.status_code == 403
        assert "__Host-accessd-session" not in r.headers.get("set-cookie", "")


def test_failed_log_ins_are_rate_limited_per_user_then_per_address(office) -> None:
    store, url = office
    with client(url) as c:
        for _ in range(5):
            assert log_in(c, "olga", "wrong password!").status_code == 401
        r = log_in(c, "olga")  # the right password, too late
        assert r.status_code == 429
        assert "Too many failed attempts" in r.text
        assert log_in(c, "mona").status_code == 303  # another user is not locked
        for i in range(20):
            log_in(c, f"guess{i}", "wrong password!")
        assert log_in(c, "vic").status_code == 429  # this address is now
    refused = [e for e in audit.entries(store, action="login") if e["outcome"] == "refused"]
    assert any(e["detail"].get("why") == "rate limited" for e in refused)


# -- roles -----------------------------------------------------------------------------------------
def test_a_viewer_sees_the_usage_report_only_and_the_server_refuses_member_actions(office
                                                                                   ) -> None:
    store, url = office
    with client(url, key=KEY) as c:
        r = log_in(c, "vic")
        assert r.headers["location"] == "/usage"
        assert c.get("/usage?site=s1&month=2026-03").status_code == 200
        for path in ("/", "/entries", "/members", "/members/s1/ana", "/billing?site=s1",
                     "/billing.csv?site=s1&month=2026-03", "/audit", "/entries.csv",
                     "/members/s1/ana/export.json", "/members/import"):
            assert c.get(path).status_code == 403, path
        assert c.get("/usage?site=s2").status_code == 403  # not their site either
        csrf = page_csrf(c)  # a valid token of the viewer's own session
        for path, data in (("/members/s1/ana/status", {"status": "suspended"}),
                           ("/members/s1/ana/status", {"status": "revoked", "confirm": "yes"}),
                           ("/members/new", {"site": "s1", "id": "eve", "name": "Eve",
                                             "plan": "subscriber"}),
                           ("/members/s1/ana/erase", {"confirm": "ana"}),
                           ("/usage/targets", {"site": "s1", "subscriber_min": "1"})):
            r = c.post(path, data={**data, "csrf": csrf})
            assert r.status_code == 403, path
        # the usage page shows no member action and no name
        page = c.get("/usage?site=s1&month=2026-03").text
        assert "Suspend" not in page and "Oscar" not in page and 'href="/members' not in page
    assert status_of(store, "s1", "ana") == "active"
    assert memberops.member(store, "s1", "eve") is None
    assert store.latest_version("s1") == 0
    refused = [e for e in audit.entries(store, actor="vic") if e["outcome"] == "refused"]
    assert len(refused) == 5


def test_a_manager_sees_and_changes_only_their_sites(office) -> None:
    store, url = office
    with client(url, key=KEY) as c:
        log_in(c, "mona")
        assert "Zed" not in c.get("/members").text
        assert "La Cordée Gex" not in c.get("/").text
        entries = c.get("/entries").text
        assert "Ana" in entries and "Zed" not in entries
        assert "zed" not in c.get("/entries.csv").text
        for path in ("/members/s2/zed", "/entries?site=s2", "/billing?site=s2",
                     "/audit", "/members/s2/zed/export.csv"):
            assert c.get(path).status_code == 403, path
        csrf = page_csrf(c, "/members")
        r = c.post("/members/s2/zed/status", data={"status": "suspended", "csrf": csrf})
        assert r.status_code == 403
        r = c.post("/members/s1/ben/status", data={"status": "suspended", "csrf": csrf})
        assert r.status_code == 303
        # erasing is for operators
        r = c.post("/members/s1/ben/erase", data={"confirm": "ben", "csrf": csrf})
        assert r.status_code == 403
    assert status_of(store, "s2", "zed") == "active"
    assert status_of(store, "s1", "ben") == "suspended"


# -- CSRF ------------------------------------------------------------------------------------------
def test_every_form_needs_the_sessions_token_and_this_origin(office) -> None:
    store, url = office
    with client(url, key=KEY) as c:
        log_in(c, "olga")
        csrf = page_csrf(c, "/members")
        assert c.post("/members/s1/ana/status", data={"status": "suspended"}).status_code == 403
        assert c.post("/members/s1/ana/status",
                      data={"status": "suspended", "csrf": csrf[:-2] + "xx"}).status_code == 403
        r = c.post("/members/s1/ana/status", data={"status": "suspended", "csrf": csrf},
                   headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        assert status_of(store, "s1", "ana") == "active"
        r = c.post("/members/s1/ana/status", data={"status": "suspended", "csrf": csrf},
                   headers={"Origin": "https://office.test"})
        assert r.status_code == 303
    assert status_of(store, "s1", "ana") == "suspended"
    assert [e["outcome"] for e in audit.entries(store, action="csrf.refused")] == ["refused"] * 3


# -- member actions --------------------------------------------------------------------------------
def test_suspend_resume_revoke_go_through_the_rights_and_publish(office) -> None:
    store, url = office
    with client(url, key=KEY) as c:
        log_in(c, "olga")
        csrf = page_csrf(c, "/members/s1/ben")
        r = c.post("/members/s1/ben/status", data={"status": "suspended", "csrf": csrf})
        assert r.status_code == 303
        page = c.get(r.headers["location"]).text
        assert "rules version 1 signed and recorded" in page
        assert status_of(store, "s1", "ben") == "suspended"
        snapshot = json.loads(store.latest_snapshot("s1"))["payload"]
        assert {m["id"]: m["status"] for m in snapshot["members"]}["ben"] == "suspended"
        # a revocation asks first
        r = c.post("/members/s1/ben/status", data={"status": "revoked", "csrf": csrf})
        assert r.status_code == 200 and "Revoke for good" in r.text
        assert status_of(store, "s1", "ben") == "suspended"
        r = c.post("/members/s1/ben/status", data={"status": "revoked", "confirm": "yes",
                                                   "csrf": csrf})
        assert r.status_code == 303
        assert status_of(store, "s1", "ben") == "revoked"
        assert store.is_revoked("s1", "member", "ben")
        # revocation is terminal: the server refuses a resume, with the reason
        r = c.post("/members/s1/ben/status", data={"status": "active", "csrf": csrf})
        assert r.status_code == 400
        assert "revoked for good" in r.text
        assert status_of(store, "s1", "ben") == "revoked"
    assert store.latest_version("s1") == 2
    actions = [e["action"] for e in audit.entries(store, site="s1", target="ben")]
    assert actions == ["member.resume", "member.revoke", "member.suspend"]


def test_a_bad_field_is_shown_beside_it_and_nothing_is_stored(office) -> None:
    store, url = office
    with client(url, key=KEY) as c:
        log_in(c, "olga")
        csrf = page_csrf(c, "/members")
        base = {"site": "s1", "id": "eve", "name": "Eve", "plan": "subscriber", "csrf": csrf}
        r = c.post("/members/new", data={**base, "valid_from": "2026-05-01",
                                         "valid_until": "2026-04-01"})
        assert r.status_code == 400
        assert 'id="err-valid_until"' in r.text and "ends before it starts" in r.text
        assert 'aria-describedby="err-valid_until"' in r.text
        assert 'value="Eve"' in r.text  # what was typed is kept
        # a good member with a bad card: neither the member nor the card is stored
        r = c.post("/members/new", data={**base, "card": "04:ZZ:11"})
        assert r.status_code == 400 and 'id="err-card"' in r.text
        r = c.post("/members/new", data={**base, "plan": "gold"})
        assert r.status_code == 400 and 'id="err-plan"' in r.text
        # a card that is someone else's
        r = c.post("/members/new", data={**base, "card": CARDS["ana"]})
        assert r.status_code == 400 and "belongs to member ana" in r.text
        assert memberops.member(store, "s1", "eve") is None
        assert store.latest_version("s1") == 0
        r = c.post("/members/new", data={**base, "card": "04:11:22:33:44"})
        assert r.status_code == 303
        assert r.headers["location"] == "/members/s1/eve"
    assert memberops.member(store, "s1", "eve")["plan"] == "subscriber"
    assert [c["hash"] for c in memberops.cards(store, "s1", "eve")] == [HASHER("0411223344")]
    assert store.latest_version("s1") == 1


def test_change_plan_and_validity_and_enrol_a_card(office) -> None:
    store, url = office
    with client(url, key=KEY) as c:
        log_in(c, "mona")
        csrf = page_csrf(c, "/members/s1/oscar")
        r = c.post("/members/s1/oscar/edit", data={"name": "Oscar", "plan": "subscriber",
                                                  "valid_until": "2027-01-31", "csrf": csrf})
        assert r.status_code == 303
        r = c.post("/members/s1/oscar/card", data={"card": "nope", "csrf": csrf})
        assert r.status_code == 400 and 'id="err-card"' in r.text
        r = c.post("/members/s1/oscar/card", data={"card": "AA BB CC DD", "csrf": csrf})
        assert r.status_code == 303
        r = c.post("/members/s1/oscar/card", data={"card": "AABBCCDD", "csrf": csrf})
        assert r.status_code == 400 and "already enrolled" in r.text
    m = memberops.member(store, "s1", "oscar")
    assert (m["plan"], m["valid_until"]) == ("subscriber", "2027-01-31")
    assert len(memberops.cards(store, "s1", "oscar")) == 2
    assert store.latest_version("s1") == 2


def test_without_the_office_key_member_actions_are_off(office) -> None:
    store, url = office
    with client(url) as c:
        log_in(c, "olga")
        assert "member actions are off" in c.get("/members").text
        csrf = page_csrf(c, "/members")
        r = c.post("/members/s1/ana/status", data={"status": "suspended", "csrf": csrf})
        assert r.status_code == 403
    assert status_of(store, "s1", "ana") == "active"


def test_door_proposals_are_approved_from_the_members_page(office) -> None:
    store, url = office
    hashed = HASHER("0499887766")
    store.store_events([event("s1", "d2", 1, "2026-03-04T09:00:00.000Z", "chloe",
                              etype="member.enrolled", result=None, reason=None,
                              detail={"member": {"id": "chloe", "name": "Chloé",
                                                 "plan": "occasional"},
                                      "credential_hash": hashed})])
    pending = store.proposals("s1")
    assert {p["kind"] for p in pending} == {"member", "card"}
    with client(url, key=KEY) as c:
        log_in(c, "mona")
        page = c.get("/members").text
        assert "Chloé" in page and "a new member" in page
        csrf = csrf_of(page)
        ids = [p["id"] for p in pending]
        r = c.post("/proposals/s1/approve", data={"id": [str(i) for i in ids], "csrf": csrf,
                                                  "back": "/members"})
        assert r.status_code == 303
        assert "approved" in c.get("/members").text
    assert memberops.member(store, "s1", "chloe")["name"] == "Chloé"
    assert store.proposals("s1") == []
    snapshot = json.loads(store.latest_snapshot("s1"))["payload"]
    assert hashed in {cr["hash"] for cr in snapshot["credentials"]}


# -- the members file ------------------------------------------------------------------------------
def test_importing_a_members_file_shows_the_changes_before_storing_them(office) -> None:
    store, url = office
    text = ("id,name,plan,status,valid_from,valid_until,card\n"
            "ana,Ana,subscriber,active,,,0A1B2C3D4E\n"
            "oscar,Oscar L.,occasional,active,,2026-12-31,04D5E6F708\n"
            "paul,Paul,occasional,active,,,0A0B0C0D0E\n")
    with client(url, key=KEY) as c:
        log_in(c, "olga")
        csrf = page_csrf(c, "/members/import")
        r = c.post("/members/import", data={"site": "s1", "csrf": csrf},
                   files={"file": ("morez.csv", text.encode(), "text/csv")})
        assert r.status_code == 200
        assert ">1</strong> new members" in r.text and ">1</strong> removed" in r.text
        assert "Oscar L." in r.text and "Ben" in r.text  # changed, removed
        assert memberops.member(store, "s1", "paul") is None  # a preview stores nothing
        assert memberops.member(store, "s1", "ben") is not None
        form = {k: v for k, v in (
            ("site", "s1"), ("name", "morez.csv"), ("apply", "yes"), ("csrf", csrf),
            ("digest", __import__("html").unescape(
                r.text.split('name="digest" value="')[1].split('"')[0])),
            ("text", text))}
        r = c.post("/members/import", data=form)
        assert r.status_code == 303, r.text
        bad = "id,name,plan\nx,X,gold\n"
        r = c.post("/members/import", data={"site": "s1", "csrf": csrf},
                   files={"file": ("bad.csv", bad.encode(), "text/csv")})
        assert r.status_code == 400 and 'id="err-file"' in r.text and "row 2: plan" in r.text
    assert memberops.member(store, "s1", "paul") is not None
    assert memberops.member(store, "s1", "ben") is None
    assert store.latest_version("s1") == 1


# -- a member's rights -----------------------------------------------------------------------------
def test_export_and_erase_a_member(office) -> None:
    store, url = office
    from accessd.central import retention

    retention.freeze_billing(store, "s1", "2026-03")
    with client(url, key=KEY) as c:
        log_in(c, "olga")
        data = c.get("/members/s1/oscar/export.json").json()
        assert data["member"]["name"] == "Oscar"
        assert len(data["events"]) == 3 and data["cards"][0]["hash"] == HASHER(CARDS["oscar"])
        rows = list(csv.DictReader(io.StringIO(c.get("/members/s1/oscar/export.csv").text)))
        assert {r["record"] for r in rows} == {"member", "card", "event", "billing", "audit"}
        csrf = page_csrf(c, "/members/s1/oscar")
        r = c.post("/members/s1/oscar/erase", data={"csrf": csrf, "confirm": "Oscar"})
        assert r.status_code == 200 and "type the member id" in r.text  # not confirmed
        assert memberops.member(store, "s1", "oscar") is not None
        r = c.post("/members/s1/oscar/erase", data={"csrf": csrf, "confirm": "oscar"})
        assert r.status_code == 303
    assert memberops.member(store, "s1", "oscar") is None
    assert memberops.cards(store, "s1", "oscar") == []
    events = [e for e in store.events("s1") if (e["member_id"] or "").startswith("erased-")]
    assert len(events) == 3
    assert {e["member_name"] for e in events} == {None}
    assert {e["credential"] for e in events} == {None}
    assert not any(e["member_id"] == "oscar" for e in store.events("s1"))
    pseudonym = events[0]["member_id"]
    assert {e["member_id"] for e in events} == {pseudonym}
    # the issued billing line stays; the audit log names the pseudonym only
    assert [line["member_name"] for line in retention.billing(store, "s1", "2026-03")] == \
        ["Oscar"]
    assert audit.entries(store, target="oscar") == []
    erased = audit.entries(store, action="member.erase")
    assert [e["target"] for e in erased] == [pseudonym]
    assert {e["target"] for e in audit.entries(store, action="member.export")} == {pseudonym}
    snapshot = json.loads(store.latest_snapshot("s1"))["payload"]
    assert "oscar" not in {m["id"] for m in snapshot["members"]}
    assert store.rows("SELECT count(*) FROM rule_versions WHERE site = 's1'")[0][0] == 1
    assert "Oscar" not in store.latest_snapshot("s1")


# -- billing and usage -----------------------------------------------------------------------------
def test_billing_csv_is_what_central_report_prints(office, capsys) -> None:
    store, url = office
    from accessd.central.cli import main

    with client(url) as c:
        log_in(c, "mona")
        page = c.get("/billing?site=s1&month=2026-03").text
        assert "Oscar" in page and "1 without exit" in page
        web = c.get("/billing.csv?site=s1&month=2026-03")
        assert web.status_code == 200
        assert web.headers["content-disposition"].endswith('"billing-s1-2026-03.csv"')
        empty = c.get("/billing.csv?site=s1&month=2025-01").text
    assert main(["central", "report", "--store", url, "--site", "s1", "--month", "2026-03",
                 "--csv"]) == 0
    assert web.text == capsys.readouterr().out
    assert main(["central", "report", "--store", url, "--site", "s1", "--month", "2025-01",
                 "--csv"]) == 0
    assert empty == capsys.readouterr().out
    assert empty.strip() == ("site,month,member_id,member_name,visits,hours,"
                             "visits_closed_at_closing_time,visits_without_end,booked_hours,"
                             "billing,billed_hours")


def test_usage_targets_are_checked_beside_their_field(office) -> None:
    store, url = office
    from accessd.central import usage

    with client(url) as c:
        log_in(c, "olga")
        page = c.get("/usage?site=s1&month=2026-03").text
        assert "<svg" in page and "Active subscribers" in page
        csrf = csrf_of(page)
        r = c.post("/usage/targets", data={"site": "s1", "month": "2026-03", "csrf": csrf,
                                           "subscriber_min": "9", "subscriber_max": "x"})
        assert r.status_code == 400 and 'id="err-subscriber_max"' in r.text
        assert usage.targets(store, "s1")["subscriber"] == [8, 10]
        r = c.post("/usage/targets", data={"site": "s1", "month": "2026-03", "csrf": csrf,
                                           "subscriber_min": "9", "subscriber_max": "12",
                                           "occasional_min": "15"})
        assert r.status_code == 303
    assert usage.targets(store, "s1") == {"subscriber": [9, 12], "occasional": [15, None]}


# -- the other pages -------------------------------------------------------------------------------
def test_overview_shows_door_status_and_alarms_with_their_age(office) -> None:
    store, url = office
    from accessd.central import health

    writer = health.StatusWriter(store)
    writer.seen("s1", "d1", {"v": 1, "online": False, "site": "s1", "door": "d1",
                             "clock_trusted": False, "rule_version": 0, "last_seq": 9,
                             "acked_seq": 5})
    writer.flush()
    health.door_alarms(store, [event("s1", "d1", 6, "2026-03-03T11:00:00.000Z", None,
                                     etype="door.held_open", result=None, reason=None)])
    with client(url) as c:
        log_in(c, "olga")
        page = c.get("/").text
        assert "offline" in page and "not synchronised" in page and "4 events" in page
        assert "door held open" in page
        csrf = csrf_of(page)
        alarm = store.alarms(open_only=True)[0]
        r = c.post(f"/alarms/{alarm['id']}/clear", data={"csrf": csrf})
        assert r.status_code == 303
    assert store.alarms(open_only=True) == []
    assert audit.entries(store, action="alarm.clear")[0]["target"] == "d1/door_held_open"


def test_entries_filter_and_export(office) -> None:
    _store, url = office
    with client(url) as c:
        log_in(c, "olga")
        page = c.get("/entries?site=s1&result=denied").text
        assert "unknown_credential" in page and "Ana" not in page
        page = c.get("/entries?member=osc").text
        assert page.count('data-member="oscar"') == 3
        page = c.get("/entries?since=2026-03-03&until=2026-03-03&site=s1").text
        assert page.count("<tr data-key=") == 2
        r = c.get("/entries?since=yesterday")
        assert r.status_code == 200 and 'id="e-since"' in r.text
        rows = list(csv.DictReader(io.StringIO(c.get("/entries.csv?site=s1").text)))
        assert [r["seq"] for r in rows] == ["5", "4", "3", "2", "1"]
        assert rows[0]["local_time"] == "2026-03-03 11:00:00"
        assert 'data-stream="/entries/stream?"' in c.get("/entries").text


def test_security_headers(office) -> None:
    _store, url = office
    with client(url) as c:
        r = c.get("/login")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("kind", ["postgres"])
def test_the_same_on_postgresql(kind: str) -> None:
    from test_central_store import private_schema

    for url in private_schema():
        store = open_store(url)
        from web_helpers import fill

        fill(store)
        try:
            with client(url, key=KEY) as c:
                assert log_in(c, "mona").status_code == 303
                assert "Ana" in c.get("/entries").text
                csrf = page_csrf(c, "/members")
                r = c.post("/members/s1/ben/status", data={"status": "suspended",
                                                          "csrf": csrf})
                assert r.status_code == 303
                assert c.get("/usage?site=s1&month=2026-03").status_code == 200
            assert status_of(store, "s1", "ben") == "suspended"
            assert store.latest_version("s1") == 1
        finally:
            store.close()


def test_several_workers_share_the_store(office, tmp_path: Path) -> None:
    """`--workers 2`: uvicorn's worker processes build the app from the environment; a
    session opened through one connection is good on every other (it is in the store)."""
    import http.client
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.web import Client, web_server

    _store, url = office
    with web_server(url, tmp_path, extra=["--workers", "2"]) as base:
        first = Client(base, "mona", PASSWORD)
        cookie = "; ".join(f"{k}={v}" for k, v in first.cookies.items())
        for _ in range(8):  # new connections, accepted by either worker
            conn = http.client.HTTPConnection(first.conn.host, first.conn.port, timeout=30)
            conn.request("GET", "/members", headers={"Cookie": cookie})
            r = conn.getresponse()
            assert r.status == 200 and "Oscar" in r.read().decode()
            conn.close()


def test_redirects_stay_on_this_site(office) -> None:
    _store, url = office
    with client(url, key=KEY) as c:
        page = c.get("/login?next=//evil.example/x")
        r = c.post("/login", data={"username": "olga", "password": PASSWORD,
                                   "csrf": csrf_of(page.text), "next": "//evil.example/x"})
        assert r.headers["location"] == "/"
        csrf = page_csrf(c, "/members")
        for back in ("//evil.example", "https://evil.example", "/\\evil.example"):
            r = c.post("/proposals/s1/approve", data={"csrf": csrf, "back": back})
            assert r.headers["location"] == "/members", back
