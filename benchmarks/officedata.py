"""An office store with realistic history, built fast: sites, doors, members, a year of entries.

Used by benchmarks/web.py (20 sites, ~2 million events) and scripts/web-screenshots (a small
office). Events are what doors send (granted entries, exits by card, refusals), made with a
seeded random generator: subscribers come any day, mostly 8:00-20:00; occasional members
on weekdays during opening hours; about one visit in three ends with an exit by card. Rows go
in with one multi-row statement per chunk (SQLite) or COPY (PostgreSQL), doors' marks and
statuses are set, each site's rules are signed once, and finished months are frozen as the
office's hourly retention would have done.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

FIRST = ("Zoé", "Hugo", "Léa", "Lucas", "Chloé", "Louis", "Emma", "Jules", "Inès", "Gabriel",
         "Manon", "Arthur", "Camille", "Nathan", "Sarah", "Tom", "Jade", "Paul", "Alice",
         "Noah", "Lina", "Adam", "Rose", "Théo", "Anna", "Victor", "Léna", "Martin", "Julia",
         "Ethan")
LAST = ("Martin", "Bernard", "Petit", "Durand", "Leroy", "Moreau", "Simon", "Laurent",
        "Michel", "Garcia", "Roux", "Fournier", "Girard", "Bonnet", "Dupont", "Lambert",
        "Fontaine", "Rousseau", "Vincent", "Muller", "Faure", "Blanc", "Guerin", "Boyer",
        "Chevalier", "Robin", "Masson", "Mercier", "Perrin", "Morel")
TOWNS = ("Morez", "Les Rousses", "Saint-Claude", "Oyonnax", "Champagnole", "Lons", "Dole",
         "Pontarlier", "Morteau", "Gex", "Bellegarde", "Nantua", "Annecy", "Bourg",
         "Besançon", "Ornans", "Salins", "Arbois", "Poligny", "Clairvaux")
TZ = ZoneInfo("Europe/Paris")
SITE_KEY = "42" * 32


def _hasher() -> Any:
    from accessd.credentials import CredentialHasher

    return CredentialHasher(bytes.fromhex(SITE_KEY))


HASHER = _hasher()
COLUMNS = ("site", "door", "seq", "id", "ts", "type", "reader", "member_id", "member_name",
           "plan", "result", "reason", "credential", "clock_trusted", "detail", "received_at")


@dataclass
class Office:
    sites: list[str]
    doors: list[tuple[str, str]]
    members: dict[str, list[dict[str, Any]]]
    events: int
    build_s: float


def site_names(n: int) -> list[str]:
    """Site ids from town names: morez, les-rousses, saint-claude..."""
    return [TOWNS[i % len(TOWNS)].lower().replace(" ", "-").replace("ç", "c").replace("é", "e")
            + (f"-{i // len(TOWNS) + 1}" if i >= len(TOWNS) else "") for i in range(n)]


def _ts(d: datetime) -> str:
    return d.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _members(rng: random.Random, site: str, subscribers: int, occasional: int
             ) -> list[dict[str, Any]]:
    out = []
    for i in range(subscribers + occasional):
        plan = "subscriber" if i < subscribers else "occasional"
        uid = f"{rng.getrandbits(48):012X}"
        out.append({"id": f"{site}-m{i:03d}", "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                    "plan": plan, "status": "active", "valid_from": None,
                    "valid_until": None, "credential": uid, "hash": HASHER(uid)})
    return out


def _day_events(rng: random.Random, day: date, members: list[dict[str, Any]],
                visits_per_day: float) -> list[tuple[datetime, str, dict[str, Any], str]]:
    """(local time, kind, member, reason) for one site and day; kind entry/exit/denied."""
    out = []
    weekend = day.weekday() >= 5
    n = rng.randint(int(visits_per_day * 0.6), int(visits_per_day * 1.4))
    if weekend:
        n //= 4
    for _ in range(n):
        m = rng.choice(members)
        if m["plan"] == "occasional" and weekend:
            continue
        if m["plan"] == "occasional":
            start_h = rng.uniform(9, 16.5)
        else:
            start_h = min(23.5, max(0.0, rng.gauss(9.5, 2.0)))
        start = datetime.combine(day, datetime.min.time(), TZ) + timedelta(hours=start_h)
        out.append((start, "entry", m, "subscriber" if m["plan"] == "subscriber"
                    else "opening_hours"))
        stay = timedelta(hours=min(10.0, max(0.5, rng.gauss(4, 2))))
        if rng.random() < 0.35 and (start + stay).date() == day:
            out.append((start + stay, "exit", m, "exit"))
        if rng.random() < 0.03:
            out.append((start - timedelta(minutes=2), "denied", m,
                        rng.choice(("expired", "member_suspended", "outside_opening_hours"))))
    if rng.random() < 0.5:
        h = rng.uniform(0, 24)
        out.append((datetime.combine(day, datetime.min.time(), TZ) + timedelta(hours=h),
                    "unknown", {}, "unknown_credential"))
    return sorted(out, key=lambda x: x[0])


def build(store: Any, *, sites: int = 20, doors_per_site: int = 2, days: int = 365,
          subscribers: int = 14, occasional: int = 30, visits_per_day: float = 260,
          seed: int = 11, until: date | None = None, key: Any = None,
          freeze: bool | list[str] = True) -> Office:
    """Fill an empty store. `visits_per_day` per site: 20 sites x 365 days x 260 visits
    (fewer at weekends) make about 2 million events with the exits and refusals.
    `freeze`: freeze the finished months of every site, of these sites, or none."""
    from accessd.central import retention
    from accessd.central.health import StatusWriter
    t0 = time.perf_counter()
    rng = random.Random(seed)
    until = until or datetime.now(TZ).date()
    start_day = until - timedelta(days=days - 1)
    names = site_names(sites)
    office = Office(names, [], {}, 0, 0.0)
    received = _ts(datetime.now(UTC))
    for i, site in enumerate(names):
        store.set_site(site, name=f"La Cordée {TOWNS[i % len(TOWNS)]}",
                       timezone="Europe/Paris", credential_key=SITE_KEY)
        members = _members(rng, site, subscribers, occasional)
        office.members[site] = members
        store.import_members(site, [{k: m[k] for k in ("id", "name", "plan", "status",
                                                       "valid_from", "valid_until")}
                                    for m in members],
                             [{"hash": m["hash"], "member_id": m["id"], "status": "active"}
                              for m in members])
        doors = ["front", "back", "garden", "meeting"][:doors_per_site]
        seqs = dict.fromkeys(doors, 0)
        rows: list[tuple[Any, ...]] = []
        day = start_day
        while day <= until:
            for local, kind, m, reason in _day_events(rng, day, members, visits_per_day):
                door = doors[0]
                if kind == "entry" and len(doors) > 1 and rng.random() < 0.2:
                    door = doors[1]
                seqs[door] += 1
                granted = kind in ("entry", "exit")
                rows.append((site, door, seqs[door], uuid.UUID(int=rng.getrandbits(128)).hex,
                             _ts(local), "access.granted" if granted else "access.denied",
                             "exit" if kind == "exit" else "main", m.get("id"),
                             m.get("name"), m.get("plan"),
                             "granted" if granted else "denied", reason,
                             m["hash"][:12] if m else f"{rng.getrandbits(48):012x}", 1,
                             json.dumps({"direction": "exit"}) if kind == "exit" else "{}",
                             received))
            day += timedelta(days=1)
        rows.sort(key=lambda r: (r[1], r[2]))
        _insert(store, rows)
        office.events += len(rows)
        for door in doors:
            store.raise_mark(site, door, seqs[door], received)
            office.doors.append((site, door))
        if key is not None:
            from accessd.central import publisher

            publisher.build(store, key, site)
    writer = StatusWriter(store)
    for n, (site, door) in enumerate(office.doors):
        online = n % 17 != 5
        writer.seen(site, door, {
            "v": 1, "online": online, "site": site, "door": door, "lock": "locked",
            "door_state": "closed", "clock_trusted": n % 13 != 3,
            "rule_version": max(0, store.latest_version(site) - (1 if n % 11 == 4 else 0)),
            "outbox_depth": 0 if online else 12, "readers": {"main": "online"}})
    writer.flush()
    if freeze is True:
        retention.freeze_done_months(store)
    elif freeze:
        from accessd.central import usage

        for site in freeze:
            for month in retention.months_with_events(store, site, datetime.now(UTC)):
                if usage.month_done(store, site, month):
                    retention.freeze_billing(store, site, month)
                    usage.freeze(store, site, month)
    office.build_s = time.perf_counter() - t0
    return office


def _insert(store: Any, rows: list[tuple[Any, ...]]) -> None:
    if store.dialect == "postgres":
        with store.conn.transaction(), store.conn.cursor() as cur, \
                cur.copy(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        return
    sql = (f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES "
           f"({', '.join('?' * len(COLUMNS))}) ON CONFLICT DO NOTHING")
    # a history made up in one go: no fsync per chunk, a cache the indexes fit in
    store.execute("PRAGMA synchronous=OFF")
    store.execute("PRAGMA cache_size=-400000")
    try:
        for i in range(0, len(rows), 50_000):
            with store.transaction():
                store.insert_many(sql, rows[i:i + 50_000])
    finally:
        store.execute("PRAGMA synchronous=FULL")
        store.execute("PRAGMA cache_size=-2000")
