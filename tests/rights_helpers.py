"""One site with real doors and a real office, wired by hand: no broker, no daemon.

Each door is what the host's CLI and the uplink use (a rule cache, a journal, the admin
functions, a `RuleApplier`); the office is a real `CentralStore` whose documents are built by
the real publisher and signed with a real `OfficeKey`. Events reach the office through the
collector's own `store_events`/`advance`; documents reach a door through `RuleApplier.handle`.
Databases are real SQLite, in memory when asked (the property test) or in files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from accessd.admin import Site
from accessd.central import publisher
from accessd.central.store import CentralStore
from accessd.config import Config, parse_config
from accessd.credentials import CredentialHasher
from accessd.decision import Decision, decide
from accessd.protocol.codec import encode
from accessd.protocol.signing import OfficeKey, PublicKeys
from accessd.schedule import Schedule
from accessd.store.journal import Journal
from accessd.store.rules import RuleCache
from accessd.uplink.rulesync import Outcome, RuleApplier

SITE = "s1"
SITE_KEY = bytes.fromhex("22" * 32)
SCHEDULE = {"timezone": "Europe/Paris", "opens": "09:00", "closes": "18:00",
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "closures": []}


def door_config(door: str, folder: Path) -> Config:
    return parse_config(f"""
[site]
id = "{SITE}"
door = "{door}"
timezone = "Europe/Paris"

[[readers]]
name = "door"
type = "simulated"

[pins]
factory = "mock"

[clock]
trust = "always"

[storage]
dir = "{folder}"
""")


@dataclass
class Door:
    name: str
    site: Site
    applier: RuleApplier

    @property
    def rules(self) -> RuleCache:
        return self.site.rules

    @property
    def journal(self) -> Journal:
        return self.site.journal

    def decide(self, uid: str, at: datetime) -> Decision:
        schedule = self.rules.schedule() or Schedule.from_dict(SCHEDULE)
        return decide(self.rules.lookup(self.site.hasher(uid)), now=at, clock_trusted=True,
                      schedule=schedule)

    def opens(self, uid: str, at: datetime) -> bool:
        return self.decide(uid, at).granted


class Office:
    """The office's store and key, and the doors of one site."""

    @staticmethod
    def hasher_of(uid: str) -> str:
        return CredentialHasher(SITE_KEY)(uid)

    def __init__(self, folder: Path | None, doors: tuple[str, ...] = ("a", "b")) -> None:
        self.folder = folder
        self.key = OfficeKey.generate()
        self.hasher = CredentialHasher(SITE_KEY)
        self.store = CentralStore(str(folder / "central.db") if folder else ":memory:")
        self.store.set_site(SITE, timezone="Europe/Paris", credential_key=SITE_KEY.hex(),
                            schedule=SCHEDULE)
        self.doors = {d: self._door(d) for d in doors}

    def _door(self, name: str) -> Door:
        where = (self.folder / name) if self.folder else Path("/nonexistent") / name
        rules = RuleCache(where / "rules.db" if self.folder else ":memory:")
        journal = Journal(where / "journal.db" if self.folder else ":memory:", SITE, name)
        site = Site(door_config(name, where), rules, journal, self.hasher)
        applier = RuleApplier(rules, PublicKeys([self.key.public]), site=SITE, door=name,
                              journal=journal)
        return Door(name, site, applier)

    def close(self) -> None:
        for d in self.doors.values():
            d.site.close()
        self.store.close()

    # -- the wires ------------------------------------------------------------------------
    def deliver(self, door: str) -> int:
        """Everything the door journalled since the office's mark, stored by the collector."""
        journal = self.doors[door].journal
        mark = self.store.stored_seq(SITE).get(door, 0)
        messages = [{"v": 1, **e.to_dict()} for e in journal.pending(after=mark, limit=10_000)]
        if messages:
            self.store.store_events(messages)
        stored, _ = self.store.advance(SITE, door)
        journal.acknowledge(stored)
        return len(messages)

    def publish(self, *, delta: bool = False) -> publisher.Documents:
        return publisher.build(self.store, self.key, SITE, delta=delta)

    def apply(self, door: str, docs: publisher.Documents, kind: str = "snapshot") -> Outcome:
        doc = docs.snapshot if kind == "snapshot" else docs.delta
        assert doc is not None
        return self.doors[door].applier.handle(encode(doc), kind)

    def publish_to_all(self, *, delta: bool = False) -> dict[str, Outcome]:
        docs = self.publish(delta=delta)
        kind = "delta" if delta and docs.delta is not None else "snapshot"
        return {d: self.apply(d, docs, kind) for d in self.doors}

    # -- the office's members file --------------------------------------------------------
    def import_members(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Rows as in a members file: id, name, plan, status, valid_until, card, card_status."""
        members: dict[str, dict[str, Any]] = {}
        creds = []
        for r in rows:
            members.setdefault(r["id"], {
                "id": r["id"], "name": r.get("name", r["id"]), "plan": r["plan"],
                "status": r.get("status", "active"), "valid_from": r.get("valid_from"),
                "valid_until": r.get("valid_until")})
            if r.get("card"):
                creds.append({"hash": self.hasher(r["card"]), "member_id": r["id"],
                              "status": r.get("card_status", "active"), "technology": None})
        return self.store.import_members(SITE, list(members.values()), creds)
