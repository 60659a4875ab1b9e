"""Shared by the office web tests: a store with two sites, members, events and web users, and
a logged-in Starlette TestClient (the real application, over HTTPS so Secure cookies flow)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from accessd.central.memberops import Publishing
from accessd.central.store import CentralStore, open_store
from accessd.central.users import Users
from accessd.credentials import CredentialHasher
from accessd.protocol.signing import OfficeKey

SITE_KEY = "42" * 32
PASSWORD = "correct horse battery staple"
HASHER = CredentialHasher(bytes.fromhex(SITE_KEY))
CARDS = {"ana": "0A1B2C3D4E", "ben": "04A1B2C3", "oscar": "04D5E6F708", "zed": "0011223344"}


def event(site: str, door: str, seq: int, ts: str, member: str | None, *,
          result: str = "granted", reason: str = "subscriber", plan: str = "subscriber",
          name: str | None = None, etype: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"site": site, "door": door, "seq": seq, "id": f"{site}-{door}-{seq:08d}" + "0" * 8,
            "ts": ts, "type": etype or f"access.{result}", "reader": "main",
            "member_id": member, "member_name": name or (member or "").capitalize() or None,
            "plan": plan if member else None, "result": result, "reason": reason,
            "credential": HASHER(CARDS[member])[:12] if member in CARDS else "ffffffffffff",
            "clock_trusted": True, **extra}


def fill(store: CentralStore) -> None:
    """Two sites: s1 (ana subscriber, ben subscriber, oscar occasional), s2 (zed)."""
    for site, name in (("s1", "La Cordée Morez"), ("s2", "La Cordée Gex")):
        store.set_site(site, name=name, timezone="Europe/Paris", credential_key=SITE_KEY)
    store.import_members("s1", [
        {"id": "ana", "name": "Ana", "plan": "subscriber", "status": "active"},
        {"id": "ben", "name": "Ben", "plan": "subscriber", "status": "active"},
        {"id": "oscar", "name": "Oscar", "plan": "occasional", "status": "active"}],
        [{"hash": HASHER(CARDS[m]), "member_id": m, "status": "active"}
         for m in ("ana", "ben", "oscar")])
    store.import_members("s2", [{"id": "zed", "name": "Zed", "plan": "subscriber",
                                 "status": "active"}],
                         [{"hash": HASHER(CARDS["zed"]), "member_id": "zed",
                           "status": "active"}])
    store.store_events([
        event("s1", "d1", 1, "2026-03-02T08:00:00.000Z", "ana"),
        event("s1", "d1", 2, "2026-03-02T09:00:00.000Z", "oscar", plan="occasional",
              reason="opening_hours"),
        event("s1", "d1", 3, "2026-03-02T12:30:00.000Z", "oscar", plan="occasional",
              reason="exit", detail={"direction": "exit"}),
        event("s1", "d1", 4, "2026-03-03T09:30:00.000Z", "oscar", plan="occasional",
              reason="opening_hours"),
        event("s1", "d1", 5, "2026-03-03T10:00:00.000Z", None, result="denied",
              reason="unknown_credential"),
        event("s2", "d1", 1, "2026-03-02T08:00:00.000Z", "zed"),
    ])
    store.advance("s1", "d1")
    store.advance("s2", "d1")
    users = Users(store)
    users.add("olga", PASSWORD, "operator", [])
    users.add("mona", PASSWORD, "manager", ["s1"])
    users.add("vic", PASSWORD, "viewer", ["s1"])


def make_store(path: Path) -> CentralStore:
    store = open_store(path)
    fill(store)
    return store


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


@contextmanager
def client(store_url: str, key: OfficeKey | None = None, settings: Any = None,
           **config: Any) -> Iterator[Any]:
    from starlette.testclient import TestClient

    from accessd.central.web.app import create_app
    from accessd.central.web.core import WebConfig

    app = create_app(WebConfig(store=store_url, publishing=Publishing(key, settings),
                               retention=False, **config))
    with TestClient(app, base_url="https://office.test", follow_redirects=False) as c:
        yield c


def log_in(c: Any, username: str, password: str = PASSWORD) -> Any:
    page = c.get("/login")
    return c.post("/login", data={"username": username, "password": password,
                                  "csrf": csrf_of(page.text), "next": "/"})


def page_csrf(c: Any, path: str = "/usage") -> str:
    r = c.get(path)
    assert r.status_code == 200, r.text
    return csrf_of(r.text)
