"""`insider`: every attack of issue 8, mounted as an insider would against the real components.

One site, built as an installer builds it (faultsuite/insider_site.py): the shipped broker
configuration with TLS, one login per door and the ACL `scripts/make-site-credentials`
generates; the office's key, store and real CLI, and the real collector; two real doors
(`accessd run`, FIFO readers, mock pins), each with its own event key registered at the
office. Each trial is one attack (faultsuite/insider_attacks.py), drawn in a random order with
random parameters from the suite's seed: a stolen door login, a stolen door (its key too),
the central login without the office key, documents signed with the office's real key
(faultsuite/insider_attacks.py); the host's account, state changes under a door
(faultsuite/insider_local.py). Each proves it ran (the broker's answer to every
publish, the refusals counted by the door or the office, the decisions journalled) and checks
what its attack must not achieve. After every trial, three oracles of faultsuite/insider_oracle
(none of them the product's own checks):

- **no grant the office's rules do not allow**: every `access.granted` of both journals is
  allowed by the office's decided rows plus that door's own host changes, and each door's
  relay history matches its grants and logged releases;
- **the office's store equals the doors' journals**: every event once under its number, none
  forged (but what the suite signed with a stolen door's key: a number the door used too is
  a conflict), every refused forgery counted in an alarm naming its door;
- **every door keeps deciding and journalling**: both daemons up, `status` answers, the uplink
  connected, and a genuine member's tap decided, journalled and granted at both doors.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
import traceback
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from faultsuite.core import Context, Pending, Result, scenario
from faultsuite.daemon import log_time, until
from faultsuite.insider_oracle import (
    ACTIVE,
    REVOKED,
    Card,
    Hours,
    Member,
    Rights,
    Timeline,
    allowed_alarm_kinds,
    as_ids,
    card_hash,
    compare_store,
)
from faultsuite.insider_site import (
    DOORS,
    PREFIX,
    SITE,
    Client,
    Door,
    Office,
    ShippedBroker,
    now,
)

TZ = ZoneInfo("Europe/Paris")
# the alarms an office raises for an event it refuses, by the refusal's reason
REFUSALS = ("event_unsigned", "event_unknown_key", "event_wrong_door", "event_bad_signature",
            "event_invalid")
SLACK = timedelta(milliseconds=5)  # log and journal stamps are both millisecond-rounded


def closed_hours(at: datetime) -> tuple[str, str]:
    """Opening hours that exclude `at` and the next hours: an occasional member's grant now
    would be a privilege the office never gave (the suite runs for minutes, not hours)."""
    hour = at.astimezone(TZ).hour
    start = hour + 3 if hour <= 19 else 3
    return f"{start:02d}:00", f"{start + 1:02d}:00"


class TrialFailed(AssertionError):
    """A trial could not do what it set out to do (the attack did not run)."""


class Insider:
    """The site, what the suite knows was decided, and the checks after each trial."""

    def __init__(self, ctx: Context, res: Result) -> None:
        self.ctx, self.res = ctx, res
        self.rng = random.Random(ctx.seed + 88)
        self.work = Path(ctx.workdir)
        self.label = "setup"
        self.opens, self.closes = closed_hours(now())
        h = lambda s: datetime.strptime(s, "%H:%M").time()  # noqa: E731
        self.rights = Rights(Hours(TZ, h(self.opens), h(self.closes)))
        self.timeline = Timeline(self.rights)
        self.cards: dict[str, tuple[str, str]] = {}  # short hash -> (uid, label)
        self.file: dict[str, dict[str, str]] = {}  # the office's members file, by member id
        self.forged: dict[str, dict[int, str]] = {d: {} for d in DOORS}  # signed with its key
        self.refused: Counter[tuple[str, str]] = Counter()  # (door, alarm kind) expected
        self.checked: set[str] = set()  # event ids whose grant was checked
        self.reported: set[str] = set()  # failures of the invariants, each reported once
        self.releases: set[tuple[str, str, datetime]] = set()  # relay energisations seen
        self.figures: Counter[str] = Counter()
        self.refused_before = 0  # counted by collectors this run stopped
        self.seconds: dict[str, float] = {}  # per attack, invariants included
        self.n = 0  # a counter for names

    # -- building -------------------------------------------------------------------------
    def build(self) -> None:
        if os.geteuid() != 0:
            raise Pending("the host's account is played by another Unix account: needs root")
        self.broker = ShippedBroker(self.work / "broker")
        self.broker.start()
        self.office = Office(self.work / "office", self.broker)
        self.site_key = bytes.fromhex(
            (self.broker.creds / "central" / "site.key").read_text().strip())
        self.office.central("site", "--site", SITE, "--name", "Morez", "--timezone",
                            "Europe/Paris", "--key-file",
                            self.broker.creds / "central" / "site.key", "--opens",
                            self.opens, "--closes", self.closes, "--days",
                            "mon,tue,wed,thu,fri,sat,sun", store=True)
        self.doors = {d: Door(self.work / d, d, self.broker, self.office,
                              (self.opens, self.closes)) for d in DOORS}
        self.door_key_ids: dict[str, str] = {}
        for name, door in self.doors.items():  # the key made on the device, then registered
            line = door.accessd("door-key")
            if line.returncode:
                raise TrialFailed(f"accessd door-key: {line.stderr}")
            r = self.office.central("door", "add", "--site", SITE, "--door", name,
                                    "--public-key", line.stdout.strip(), store=True)
            self.door_key_ids[name] = r.stdout.split()[1]
        from accessd.central.store import open_store

        self.store = open_store(self.office.store_path)
        self.start_collector()
        self.witness = Client(self.broker, "central", "insider-witness")
        self.witness.subscribe(f"{PREFIX}/{SITE}/+/ack")  # genuine acks, to replay later
        self.witness.subscribe(f"{PREFIX}/{SITE}/+/command")
        for door in self.doors.values():
            door.start(wait=False)
        for door in self.doors.values():
            door.ready()
        for name, door in self.doors.items():
            self.need(until(lambda d=door: d.status()["uplink"].get("connected") is True, 20),
                      f"door {name}: the uplink did not connect to the shipped broker")
        self.probe = self.add_member("pia", "subscriber")
        self.ana = self.add_member("ana", "subscriber")
        self.oli = self.add_member("oli", "occasional")
        self.sam = self.add_member("sam", "subscriber", status="suspended")
        self.rex = self.add_member("rex", "subscriber", status="revoked")
        self.publish("the first members file")
        self.first_snapshot = self.store.latest_snapshot(SITE)
        for name in DOORS:
            self.tap(name, self.probe, "subscriber")
            self.tap(name, self.sam, "member_suspended")
            self.tap(name, self.rex, "member_revoked")
            self.tap(name, self.oli, "outside_opening_hours")

    def start_collector(self) -> None:
        """The real collector on the office's store (again after a trial stopped it: the
        same client id, so its broker session kept what came meanwhile)."""
        from accessd.central.collector import Collector
        from accessd.protocol.signing import OfficeKey

        if hasattr(self, "collector"):
            self.refused_before += self.collector.stats.invalid
        self.collector = Collector(self.store, self.broker.settings("central"),
                                   key=OfficeKey.load(self.office.key_path), prefix=PREFIX,
                                   client_id="insider-collector", gap_timeout_s=1.0,
                                   keys_refresh_s=1.0)
        self.collector.start()
        self.need(until(lambda: self.collector.stats.subscribed, 15),
                  "the collector did not subscribe")

    def close(self) -> None:
        for door in getattr(self, "doors", {}).values():
            if door.daemon is not None:
                code = door.stop()
                self.check(code == 0, f"door {door.name}: daemon exit status {code}")
        if hasattr(self, "witness"):
            self.witness.close()
        if hasattr(self, "collector"):
            self.collector.stop()
        if hasattr(self, "store"):
            self.store.close()
        if hasattr(self, "broker"):
            self.broker.stop()

    # -- bookkeeping ----------------------------------------------------------------------
    def check(self, ok: bool, what: str) -> bool:
        return self.res.check(ok, f"{self.label}: {what}")

    def holds(self, ok: bool, what: str) -> bool:
        if not ok:
            self.once(what)
        return ok

    def once(self, what: str) -> None:
        """A failure found by a check that runs after every trial: reported once."""
        if what not in self.reported:
            self.reported.add(what)
            self.check(False, what)

    def need(self, ok: bool, what: str) -> None:
        """A step the trial cannot go on without: the attack did not run."""
        if not ok:
            raise TrialFailed(what)

    def name(self, stem: str) -> str:
        self.n += 1
        return f"{stem}-{self.n}"

    def uid(self, label: str) -> str:
        uid = f"{self.rng.getrandbits(40):010X}"
        self.cards[card_hash(self.site_key, uid)[:12]] = (uid, label)
        return uid

    def h(self, uid: str) -> str:
        return card_hash(self.site_key, uid)

    def add_member(self, mid: str, plan: str, *, status: str = ACTIVE) -> str:
        """A member of the office's file, with one card (published with the next publish)."""
        uid = self.uid(mid)
        self.file[mid] = {"id": mid, "name": mid.capitalize(), "plan": plan, "status": status,
                          "card": uid}
        self.rights.office_member(mid, Member(plan, status))
        self.rights.office_card(self.h(uid), Card(mid))
        if status == REVOKED:
            self.rights.office_revoke(mid)
        return uid

    def victims(self, k: int) -> list[tuple[str, str]]:
        """Fresh subscribers for a trial that restricts someone: (member id, card)."""
        out = [(mid, self.add_member(mid, "subscriber"))
               for mid in (self.name("victim") for _ in range(k))]
        self.publish("new members for this trial")
        for _mid, uid in out:
            for d in DOORS:
                self.tap(d, uid, "subscriber")
        return out

    # -- acting ---------------------------------------------------------------------------
    def publish(self, why: str, *, members: bool = True) -> tuple[int, str]:
        """The office's routine publish (of its members file, or of its rows as they are);
        both doors hold it after."""
        self.office.write_members(list(self.file.values()))
        began = now()
        version, said = self.office.publish(members=members)
        for name, door in self.doors.items():
            self.need(until(lambda d=door: d.status()["rules"]["version"] == version, 20),
                      f"door {name} did not apply version {version} ({why})")
        self.timeline.commit(DOORS, began, now())
        self.figures["publishes"] += 1
        return version, said

    def host_change(self, door: str, *args: str, rc: int = 0, sudo_user: str = "claire"
                    ) -> Any:
        """A host command through the wrapper; the model's change is in force after it."""
        began = now()
        r = self.doors[door].host(*args, sudo_user=sudo_user)
        self.need(r.returncode == rc, f"accessd-host {' '.join(args)}: exit {r.returncode}, "
                                      f"expected {rc}: {r.stderr.strip()[:300]}")
        return r, began

    def tap(self, door: str, uid: str, expect: str | tuple[str, ...] | None = None
            ) -> dict[str, Any]:
        """Present a card at a door; the decision must be journalled (and be `expect`:
        a grant's reason or a denial's, or one of several)."""
        d = self.doors[door]
        mark = d.tap(uid)
        short = self.h(uid)[:12]
        row = d.decision(short, mark)
        self.need(row is not None, f"door {door}: a tap of {self.cards[short][1]} was not "
                                   "decided and journalled")
        assert row is not None
        self.figures["taps"] += 1
        if expect is not None:
            wanted = (expect,) if isinstance(expect, str) else expect
            self.check(row["reason"] in wanted, f"door {door}: {self.cards[short][1]} got "
                                                f"{row['result']} {row['reason']}, expected "
                                                f"{expect}")
        return row

    def quiet(self, door: str, timeout: float = 20) -> None:
        """Wait until everything the door journalled is acknowledged by the office."""
        d = self.doors[door]

        def delivered() -> bool:
            j = d.status()["journal"]
            return j["acked_seq"] == j["last_seq"]

        self.need(until(delivered, timeout), f"door {door}: journal not delivered within "
                                             f"{timeout:g} s: {d.status()['journal']}")

    def journal_id(self, door: str) -> str:
        return str(self.doors[door].rows(
            "SELECT value FROM meta WHERE key = 'journal_id'")[0][0])

    def expect_refused(self, door: str, kind: str, n: int = 1) -> None:
        self.refused[(door, kind)] += n
        self.figures["forgeries_refused"] += n

    def wait_refusals(self) -> None:
        """Until the office has counted every forgery the suite published (or 10 s)."""
        until(lambda: self._alarm_counts() == self._expected_counts(), 10)

    def _door_reported(self) -> dict[str, Counter[str]]:
        """Per door, the office alarms its own journal asks for (an `alarm.*` event, a
        refused rule document...), as the office's table of door alarms names them."""
        from accessd.central.health import DOOR_ALARMS

        out: dict[str, Counter[str]] = {}
        for name, door in self.doors.items():
            kinds: Counter[str] = Counter()
            for e in door.events(0, tuple(DOOR_ALARMS)):
                kinds[DOOR_ALARMS[e["type"]][0]] += 1
            out[name] = kinds
        return out

    def _alarm_counts(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for a in self.store.alarms(open_only=False, site=SITE):
            counts[(a["door"], a["kind"])] += int(a["count"])
        return counts

    def _expected_counts(self) -> Counter[tuple[str, str]]:
        counts = self._alarm_counts()
        reported = Counter({(d, k): n for d, kinds in self._door_reported().items()
                            for k, n in kinds.items()})
        return Counter({k: v for k, v in counts.items() if k[1] not in REFUSALS
                        and k not in reported}) + self.refused + reported

    # -- the invariants ---------------------------------------------------------------------
    def invariants(self) -> None:
        self.check_alive()
        self.check_grants()
        self.check_store()
        self.check_relays()  # last: the relay's log lines of the last taps are out by now

    def check_alive(self) -> None:
        """Every door keeps deciding and journalling: up, status answers, uplink connected,
        a genuine member decided, journalled and granted."""
        for name, door in self.doors.items():
            alive = door.daemon is not None and door.daemon.alive()
            if not self.check(alive, f"door {name}: the daemon is not running"):
                continue
            connected = until(lambda d=door: d.status()["uplink"].get("connected") is True, 15)
            self.check(connected, f"door {name}: uplink not connected: "
                                  f"{door.status()['uplink']}")
            self.tap(name, self.probe, "subscriber")

    def check_grants(self) -> None:
        """No grant that the office's rules (and the door's own host changes) do not allow."""
        for name, door in self.doors.items():
            for e in door.events(0, ("access.granted",)):
                if e["id"] in self.checked:
                    continue
                self.checked.add(e["id"])
                self.figures["grants_checked"] += 1
                known = self.cards.get(e["credential"] or "")
                at = datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
                if known is None:
                    self.check(False, f"door {name}: #{e['seq']} granted a card the suite "
                                      f"never made ({e['credential']})")
                    continue
                ok = self.timeline.allowed(name, self.h(known[0]), at)
                self.check(ok, f"door {name}: #{e['seq']} {e['ts']} granted {known[1]} "
                               f"({e['reason']}): not allowed by the office's rules")

    def check_relays(self) -> None:
        """Each life's relay history (its own log lines) against its journal: every
        energisation has a distinct grant or logged release at most 1 s before it, and every
        grant or release found the relay released."""
        reasons = ("access.granted", "lock.manual_release", "lock.remote_release",
                   "exit.request")
        for name, door in self.doors.items():
            rows = [(datetime.fromisoformat(e["ts"].replace("Z", "+00:00")), e)
                    for e in door.events(0, reasons)]
            for daemon, began, ended in door.lives:
                released: list[tuple[datetime, datetime | None]] = []
                for line in daemon.text().splitlines():
                    t = log_time(line) if "(BCM" in line else None
                    if t is None:
                        continue
                    if "door released (BCM" in line:
                        released.append((t, None))
                    elif "door locked (BCM" in line and released and released[-1][1] is None:
                        released[-1] = (released[-1][0], t)
                end = ended or now()
                mine = [(t, e) for t, e in rows if began <= t <= end]
                used: set[str] = set()
                for start, _ in released:
                    match = next((e for t, e in mine if e["id"] not in used
                                  and start - timedelta(seconds=1) <= t <= start + SLACK), None)
                    if match is not None:
                        used.add(match["id"])
                    else:
                        self.once(f"door {name}: relay energised at {start.isoformat()} with "
                                  "no grant or logged release")
                for t, e in mine:
                    covered = any(s - SLACK <= t + timedelta(seconds=1) and
                                  (f is None or f >= t - SLACK) for s, f in released)
                    if not covered and t <= end - timedelta(seconds=1):  # else: not out yet
                        self.once(f"door {name}: {e['type']} {e['id']} at {e['ts']} but the "
                                  "relay was never released")
                self.releases.update((name, daemon.log_path.name, t) for t, _ in released)
        self.figures["releases_checked"] = len(self.releases)

    def check_store(self) -> None:
        """The office's store equals the doors' journals; every refused forgery alarmed."""
        for name in DOORS:
            self.quiet(name)
        self.wait_refusals()
        alarms = self._alarm_counts()
        for (door, kind), n in sorted(self.refused.items()):
            self.holds(alarms.get((door, kind), 0) == n,
                       f"door {door}: {alarms.get((door, kind), 0)} {kind} alarmed at the "
                       f"office, the suite's forgeries were {n}")
        reported = self._door_reported()
        for (door, kind), n in sorted(alarms.items()):
            if kind in REFUSALS:
                self.holds((door, kind) in self.refused, f"door {door}: {n} {kind} alarmed "
                                                         "that the suite never forged")
            elif kind not in reported.get(door, {}):
                self.holds(kind in allowed_alarm_kinds(bool(self.forged[door])),
                           f"door {door}: unexpected alarm {kind} (x{n})")
        for door, kinds in reported.items():  # each alarm a door journalled, once, at the office
            for kind, n in kinds.items():
                self.holds(alarms.get((door, kind), 0) == n,
                           f"door {door}: {n} {kind} journalled, the office counts "
                           f"{alarms.get((door, kind), 0)}")
        counted = self.refused_before + self.collector.stats.invalid
        self.holds(counted == sum(self.refused.values()),
                   f"the collector refused {counted} events, the suite forged "
                   f"{sum(self.refused.values())} it must refuse")
        self.holds(self.store.purged() == [], f"numbers declared purged: {self.store.purged()}")
        for name, door in self.doors.items():
            journal = as_ids(door.events())
            stored = as_ids(self.store.events(SITE, door=name))
            conflicts = {int(c["seq"]): str(c["refused"].get("id"))
                         for c in self.store.conflicts(SITE, name)}
            for problem in compare_store(journal, stored, self.forged[name], conflicts):
                self.once(f"door {name}: {problem}")
            if self.store.conflicts(SITE, name):
                self.holds(alarms.get((name, "event_conflict"), 0) >=
                           len(conflicts), f"door {name}: conflicts not alarmed")
            self.figures[f"events_compared_{name}"] = len(journal)


# -- the scenario ---------------------------------------------------------------------------
@scenario("insider",
          "stolen door login, stolen door, host account, central login, documents signed "
          "with the office key, state changes: no grant the office did not allow, office "
          "store = door journals (forgeries alarmed), every door keeps deciding", order=80)
def insider(ctx: Context, res: Result) -> None:
    import faultsuite.insider_local  # noqa: F401  (registers the attacks on the door's machine)
    from faultsuite.insider_attacks import ATTACKS

    rig = Insider(ctx, res)
    started = time.monotonic()
    try:
        rig.build()
        rig.figures["setup_s"] = round(time.monotonic() - started, 1)
        rounds = ctx.n(1, 8)
        plan = [name for name in ATTACKS for _ in range(rounds)]
        rig.rng.shuffle(plan)
        for i, name in enumerate(plan):
            rig.label = f"trial {i} {name}"
            res.trials += 1
            began = time.monotonic()
            try:
                ATTACKS[name](rig)
                rig.invariants()
            except Exception as exc:  # a trial that cannot run is a failure, never a pass
                res.fail(f"{rig.label}: {exc!r}\n{traceback.format_exc(limit=4)}")
                if not all(d.daemon is not None and d.daemon.alive()
                           for d in rig.doors.values()):
                    break
            rig.figures[f"trials_{name}"] += 1
            rig.seconds[name] = round(rig.seconds.get(name, 0.0) + time.monotonic() - began, 1)
    finally:
        rig.label = "end"
        rig.close()
    res.figures.update(rig.figures)
    res.figures["seconds_by_attack"] = rig.seconds
    res.figures["seconds"] = round(time.monotonic() - started, 1)
    kinds = len({k for k in rig.figures if k.startswith("trials_")})
    res.notes.append(
        f"{res.trials} attacks of {kinds} kinds; {rig.figures['forgeries_refused']} forged "
        f"messages refused and alarmed; {rig.figures['grants_checked']} grants and "
        f"{rig.figures['releases_checked']} relay releases checked against the office's "
        f"rules; {rig.figures['taps']} taps decided; {rig.figures['publishes']} publishes")
    f = rig.figures
    res.notes.append(
        f"the broker refused {f['acl_refusals']} publishes (ACL), the wrapper "
        f"{f['wrapper_refusals']} commands; {f['fake_acks']} fake acknowledgements ignored; "
        f"{f['stolen_key_events']} events signed with a stolen door key; "
        f"{f['crafted_documents']} documents signed with the office key; "
        f"{f['bad_values_planted']} bad values planted; {f['secrets_probed']} secrets probed "
        f"as the host's account")


def sqlite_by_hand(path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Write to a door's database as a person with sqlite3 (or an older version) could."""
    conn = sqlite3.connect(path, timeout=10)
    try:
        conn.execute("PRAGMA ignore_check_constraints=ON")
        with conn:
            for sql, args in statements:
                conn.execute(sql, args)
    finally:
        conn.close()

