"""The office in a real browser: Debian's Chromium driven by Playwright, against the real
`accessd central web` process, a private Mosquitto, the collector, and two real door daemons
(site s1, doors d1 and d2, simulated FIFO readers) that apply the signed rules the web
publishes.

One rig (broker, doors, collector, web server, browser) for the whole module, to keep the
suite short; each test opens its own browser context (its own cookies).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mqtt_broker import (
    PREFIX,
    Broker,
    door_config_text,
    free_port,
    needs_mosquitto,
    register_door,
    start_collector,
    wait_for,
)
from test_central_e2e import Door
from web_helpers import PASSWORD, SITE_KEY

from accessd.central import memberops, publisher
from accessd.central.store import open_store
from accessd.central.users import Users
from accessd.credentials import CredentialHasher
from accessd.protocol.signing import OfficeKey

pytestmark = needs_mosquitto
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ANA, BEN, OSCAR, CHLOE = "0A1B2C3D4E", "04A1B2C3", "04D5E6F708", "04C1C2C3C4"
HASHER = CredentialHasher(bytes.fromhex(SITE_KEY))
ALWAYS_OPEN = {"timezone": "Europe/Paris", "opens": "00:00", "closes": "23:59",
               "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "closures": []}


class Rig:
    def __init__(self, root: Path) -> None:
        from mqtt_broker import run_broker

        self.root = root
        self._broker_gen = run_broker(root / "broker", doors=(("s1", "d1"), ("s1", "d2")))
        self.broker: Broker = next(self._broker_gen)
        self.key = OfficeKey.generate()
        self.key.save(root / "office.key", root / "office.pub")
        self.db = root / "central.db"
        self.store = open_store(self.db)
        s = self.store
        s.set_site("s1", name="La Cordée Morez", timezone="Europe/Paris",
                   credential_key=SITE_KEY, schedule=ALWAYS_OPEN)
        s.import_members("s1", [
            {"id": "ana", "name": "Ana", "plan": "subscriber", "status": "active"},
            {"id": "ben", "name": "Ben", "plan": "subscriber", "status": "active"},
            {"id": "oscar", "name": "Oscar", "plan": "occasional", "status": "active"}],
            [{"hash": HASHER(u), "member_id": m, "status": "active"}
             for m, u in (("ana", ANA), ("ben", BEN), ("oscar", OSCAR))])
        users = Users(s)
        users.add("olga", PASSWORD, "operator", [])
        users.add("vic", PASSWORD, "viewer", ["s1"])
        self.doors: dict[str, Door] = {}
        self.configs: dict[str, Path] = {}
        for door in ("d1", "d2"):
            folder = root / door
            (folder / "data").mkdir(parents=True)
            (folder / "data" / "site.key").write_text(SITE_KEY + "\n")
            (folder / "data" / "site.key").chmod(0o600)
            config = folder / "accessd.toml"
            config.write_text(door_config_text(folder, self.broker, "s1", door,
                                               public_key=root / "office.pub",
                                               extra="[lock]\nrelease_s = 3\n"))
            register_door(s, folder, "s1", door)
            self.configs[door] = config
        self.collector_store = open_store(self.db)
        self.collector: Any = start_collector(self.collector_store, self.broker, key=self.key)
        publisher.send(publisher.build(s, self.key, "s1"), self.broker.settings("central"),
                       prefix=PREFIX)
        for door in ("d1", "d2"):
            self.doors[door] = Door(self.configs[door], root / door)
        wait_for(lambda: {e["door"] for e in s.events("s1", types=["rules.applied"])}
                 == {"d1", "d2"}, message="both doors applied the rules")
        pw = root / "central.pw"
        pw.write_text(self.broker.users["central"] + "\n")
        pw.chmod(0o600)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.web_log = (root / "web.log").open("w")
        self.web = subprocess.Popen(
            [sys.executable, "-m", "accessd", "central", "web", "--store", str(self.db),
             "--listen", f"127.0.0.1:{self.port}", "--key", str(root / "office.key"),
             "--host", "127.0.0.1", "--port", str(self.broker.port), "--password-file",
             str(pw), "--ca-file", str(self.broker.ca), "--no-retention",
             "--log-level", "WARNING"],
            stdout=self.web_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(self._web_up, message="the office web answers")

    def _web_up(self) -> bool:
        assert self.web.poll() is None, (self.root / "web.log").read_text()
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def tap(self, door: str, uid: str) -> None:
        self.doors[door].tap(uid)

    def decisions(self, door: str, member: str) -> list[tuple[str, str]]:
        return [(e["result"], e["reason"]) for e in self.store.events("s1", door=door,
                                                                   types=["access.granted",
                                                                          "access.denied"])
                if e["member_id"] == member]

    def applied(self, door: str) -> int:
        """The latest rule version the door says (in its events) it applied."""
        versions = [int(e["detail"].get("version", 0))
                    for e in self.store.events("s1", door=door, types=["rules.applied"])]
        return max(versions, default=0)

    def close(self) -> None:
        if self.web.poll() is None:
            self.web.terminate()
            self.web.wait(20)
        self.web_log.close()
        for d in self.doors.values():
            d.stop()
        self.collector.stop()
        self.collector_store.close()
        self.store.close()
        next(self._broker_gen, None)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    r = Rig(tmp_path_factory.mktemp("web-rig"))
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup --test installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, rig: Rig) -> Iterator[Any]:
    context = browser.new_context(base_url=rig.url, accept_downloads=True)
    context.set_default_timeout(15_000)
    p = context.new_page()
    try:
        yield p
    finally:
        context.close()


def log_in(page: Any, user: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


# -- the tests -------------------------------------------------------------------------------------
def test_log_in_with_the_keyboard_and_fail_with_a_wrong_password(page: Any, rig: Rig) -> None:
    from playwright.sync_api import expect

    log_in(page, "olga", "not the password")
    expect(page.get_by_role("alert")).to_contain_text("Wrong user name or password")
    assert page.url.endswith("/login")
    # keyboard only: the user name has the focus, Tab to the password, Enter submits
    page.goto("/login")
    page.keyboard.type("olga")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator("nav[aria-label=Main]")).to_contain_text("Members")
    # both doors' retained status, written by the collector, shows them online
    for _ in range(100):
        if page.locator("td .badge.good", has_text="online").count() == 2:
            break
        page.wait_for_timeout(200)
        page.reload()
    assert page.locator("td .badge.good", has_text="online").count() == 2


def test_a_tap_at_a_door_appears_live(page: Any, rig: Rig) -> None:
    from playwright.sync_api import expect

    log_in(page, "olga")
    page.goto("/entries?site=s1")
    expect(page.locator("#entries")).to_have_attribute("data-live", "open")
    rows = page.locator('#entries tbody tr[data-member="ana"]')
    before = rows.count()
    rig.tap("d1", ANA)
    expect(rows).to_have_count(before + 1)
    first = page.locator("#entries tbody tr").first
    expect(first).to_contain_text("Ana")
    expect(first).to_contain_text("granted")
    expect(first).to_have_class(re.compile("new"))


def test_suspend_in_the_browser_and_the_door_refuses_the_card(page: Any, rig: Rig) -> None:
    from playwright.sync_api import expect

    log_in(page, "olga")
    page.goto("/members?q=ben")
    page.get_by_role("link", name="Ben").click()
    version = rig.store.latest_version("s1")
    page.get_by_role("button", name="Suspend", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("signed and sent to the doors")
    expect(page.locator("#member-status")).to_have_text("suspended")
    assert rig.store.latest_version("s1") == version + 1
    wait_for(lambda: rig.applied("d1") >= version + 1, message="d1 applied the suspension")
    rig.tap("d1", BEN)
    wait_for(lambda: ("denied", "member_suspended") in rig.decisions("d1", "ben"),
             timeout=10, message="the door refuses Ben's card")


def test_approve_a_door_enrolment_and_the_other_door_grants_it(page: Any, rig: Rig) -> None:
    from playwright.sync_api import expect

    r = subprocess.run([sys.executable, "-m", "accessd", "--config", str(rig.configs["d1"]),
                        "enroll", "--name", "Chloé", "--plan", "subscriber", "--card", CHLOE],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: len(rig.store.proposals("s1")) == 2, message="the enrolment proposed")
    rig.tap("d2", CHLOE)
    wait_for(lambda: any(e["result"] == "denied" for e in rig.store.events(
        "s1", door="d2", types=["access.denied"])), message="d2 does not know Chloé yet")
    log_in(page, "olga")
    page.goto("/members")
    expect(page.get_by_role("heading", name=re.compile("waiting for you"))).to_be_visible()
    page.get_by_role("button", name=re.compile("^Approve proposal")).first.click()
    expect(page.get_by_role("status")).to_contain_text("approved")
    page.get_by_role("button", name=re.compile("^Approve proposal")).first.click()
    expect(page.get_by_role("status")).to_contain_text("signed and sent to the doors")
    assert rig.store.proposals("s1") == []
    version = rig.store.latest_version("s1")
    wait_for(lambda: rig.applied("d2") >= version, message="d2 applied the approval")
    rig.tap("d2", CHLOE)
    wait_for(lambda: any(e["member_name"] == "Chloé" and e["result"] == "granted"
                         for e in rig.store.events("s1", door="d2")), timeout=10,
             message="the other door grants Chloé")


def test_the_billing_csv_is_what_central_report_prints(page: Any, rig: Rig) -> None:
    from web_helpers import event

    rig.store.store_events([
        event("s1", "d9", 1, "2026-02-02T08:00:00.000Z", "oscar", plan="occasional",
              name="Oscar", reason="opening_hours"),
        event("s1", "d9", 2, "2026-02-02T11:15:00.000Z", "oscar", plan="occasional",
              name="Oscar", reason="exit", detail={"direction": "exit"}),
        event("s1", "d9", 3, "2026-02-03T09:00:00.000Z", "oscar", plan="occasional",
              name="Oscar", reason="opening_hours")])
    log_in(page, "olga")
    page.goto("/billing?site=s1&month=2026-02")
    expect_text = page.locator("#billing")
    from playwright.sync_api import expect

    expect(expect_text).to_contain_text("Oscar")
    expect(expect_text).to_contain_text("1 without exit")
    with page.expect_download() as info:
        page.get_by_role("link", name="Download CSV").click()
    web = Path(info.value.path()).read_text(encoding="utf-8")
    cli = subprocess.run([sys.executable, "-m", "accessd", "central", "report", "--store",
                          str(rig.db), "--site", "s1", "--month", "2026-02", "--csv"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert web == cli
    assert web.splitlines()[1].startswith("s1,2026-02,oscar,Oscar,2,")


def test_a_viewer_cannot_reach_member_actions(page: Any, rig: Rig) -> None:
    from playwright.sync_api import expect

    log_in(page, "vic")
    assert page.url.endswith("/usage")
    expect(page.locator("nav[aria-label=Main]")).not_to_contain_text("Members")
    response = page.goto("/members/s1/ana")
    assert response.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    page.goto("/usage")
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    r = page.request.post(f"{rig.url}/members/s1/ana/status",
                          form={"status": "suspended", "csrf": csrf},
                          headers={"Origin": rig.url})
    assert r.status == 403
    assert memberops.member(rig.store, "s1", "ana")["status"] == "active"


CHECKS = """() => {
  const out = {unlabelled: [], contrast: [], h1: document.querySelectorAll('h1').length,
               lang: document.documentElement.lang};
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden' || el.hidden) continue;
    if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
      out.unlabelled.push(el.name || el.id);
  }
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map(v => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); })
    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => { for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3); }
    return [255, 255, 255]; };
  for (const el of document.querySelectorAll('body *')) {
    if (!el.offsetParent && el.tagName !== 'BODY') continue;
    if (el.closest('svg')) continue;
    const text = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!text) continue;
    const style = getComputedStyle(el);
    const fg = rgb(style.color).slice(0, 3), bg = background(el);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const large = parseFloat(style.fontSize) >= 24 ||
                  (parseFloat(style.fontSize) >= 18.66 && parseInt(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5))
      out.contrast.push(`${el.tagName} "${el.textContent.trim().slice(0, 30)}" ` +
                        ratio.toFixed(2));
  }
  return out;
}"""


def test_pages_have_labels_contrast_and_keyboard_focus(page: Any, rig: Rig) -> None:
    errors: list[str] = []  # a script or style the Content-Security-Policy blocked, say
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/login")
    found = page.evaluate(CHECKS)
    assert (found["unlabelled"], found["contrast"], found["h1"], found["lang"]) == \
        ([], [], 1, "en")
    log_in(page, "olga")
    for path in ("/", "/entries", "/members", "/members/s1/ana", "/members/import",
                 "/billing?site=s1&month=2026-02", "/usage?site=s1", "/audit"):
        page.goto(path)
        found = page.evaluate(CHECKS)
        assert found["unlabelled"] == [], path
        assert found["contrast"] == [], path
        assert found["h1"] == 1, path
    # the skip link is the first stop of the keyboard, and it is visible when focused
    page.goto("/members/s1/ana")
    page.keyboard.press("Tab")
    focused = page.evaluate("() => [document.activeElement.textContent, "
                            "document.activeElement.getBoundingClientRect().left]")
    assert focused[0] == "Skip to content" and focused[1] >= 0
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
    assert errors == []


def test_the_audit_log_shows_what_was_done_in_the_browser(page: Any, rig: Rig) -> None:
    log_in(page, "olga")
    page.goto("/audit")
    text = page.locator("#audit").inner_text()
    assert "login" in text
    rows = json.dumps([r for r in rig.store.rows("SELECT actor, action, ip FROM audit_log")])
    assert '"127.0.0.1"' in rows
