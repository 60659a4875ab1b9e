"""Regenerate docs/images/*.png: each page of `accessd central web` over a demo office.

A temporary store (benchmarks/officedata.py: three sites, four months of entries, a door
offline, an alarm, a door enrolment waiting), the real web server, Debian's Chromium through
Playwright. Run by scripts/web-screenshots.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.network import _free_port  # noqa: E402
from benchmarks.web import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

PASSWORD = "demonstration password"
PAGES = {  # file name -> path (after log-in), full page or the first screen
    "overview": ("/", True),
    "entries": ("/entries", False),
    "members": ("/members?site=morez", False),
    "member": ("/members/morez/morez-m003", False),
    "billing": ("/billing?site=morez&month={previous}", False),
    "usage": ("/usage?site=morez&month={previous}", True),
    "audit": ("/audit", False),
}


def demo(db: Path, key_file: Path) -> None:
    from accessd.central import memberops
    from accessd.central.store import open_store
    from accessd.central.users import Users
    from accessd.events import format_ts, utcnow
    from accessd.protocol.signing import OfficeKey
    from benchmarks import officedata

    key = OfficeKey.generate()
    key.save(key_file, key_file.with_suffix(".pub"))
    store = open_store(db)
    office = officedata.build(store, sites=3, days=150, visits_per_day=22, key=key)
    site = office.sites[0]
    Users(store).add("olga", PASSWORD, "operator", [])
    now = format_ts(utcnow())
    store.raise_alarm(site, "back", "door_held_open",
                      "the door stayed open past the allowed time (contact)", at=now)
    memberops.set_status(store, site, f"{site}-m005", "suspended")
    store.store_events([{
        "site": site, "door": "front", "seq": 10**6, "id": "f" * 32, "ts": now,
        "type": "member.enrolled", "reader": None, "member_id": "host-7f3a",
        "member_name": "Chloé Roux", "plan": "occasional", "result": None, "reason": None,
        "credential": None, "clock_trusted": True,
        "detail": {"member": {"id": "host-7f3a", "name": "Chloé Roux", "plan": "occasional"},
                   "credential_hash": "ab" * 32}}])
    store.close()


def main() -> int:
    from datetime import date, timedelta

    from playwright.sync_api import sync_playwright

    out = ROOT / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    first = date.today().replace(day=1) - timedelta(days=1)
    previous = f"{first.year:04d}-{first.month:02d}"
    with tempfile.TemporaryDirectory(prefix="accessd-shots-") as tmp:
        work = Path(tmp)
        demo(work / "office.db", work / "office.key")
        port = _free_port()
        web = subprocess.Popen([sys.executable, "-m", "accessd", "central", "web", "--store",
                                str(work / "office.db"), "--listen", f"127.0.0.1:{port}",
                                "--key", str(work / "office.key"), "--no-retention",
                                "--log-level", "WARNING"], cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(base_url=base, viewport={"width": 1280, "height": 860})
                page.goto("/login")
                page.screenshot(path=str(out / "login.png"))
                page.fill("#username", "olga")
                page.fill("#password", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url("**/")
                for name, (path, full) in PAGES.items():
                    page.goto(path.format(previous=previous))
                    page.screenshot(path=str(out / f"{name}.png"), full_page=full)
                    print(f"docs/images/{name}.png")
                page.emulate_media(media="print")
                page.goto(PAGES["usage"][0].format(previous=previous))
                page.screenshot(path=str(out / "usage-print.png"), full_page=True)
                print("docs/images/usage-print.png")
                browser.close()
        finally:
            web.terminate()
            web.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
