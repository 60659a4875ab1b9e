"""The network: the broker killed and restarted, the link flapping, a long outage with tens of
thousands of events waiting; and attacks from the broker side (replayed, forged and stale
commands and rule documents, oversized and deeply nested JSON).

The link scenario runs the real daemon with its MQTT uplink against a private Mosquitto (TLS,
passwords, ACLs: tests/mqtt_broker.py) and the real central collector and store. Cards keep
being tapped throughout; the long outage is compressed by journalling the backlog directly.
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

from faultsuite.core import Context, Pending, Result, scenario
from faultsuite.daemon import ROOT, Daemon, Site, log_time


def _broker_tools():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import mqtt_broker
    except ImportError as exc:
        raise Pending(f"the Mosquitto fixture is not importable: {exc}") from None
    if not Path(mqtt_broker.MOSQUITTO).exists() or not mqtt_broker.PASSWD:
        raise Pending("mosquitto / mosquitto_passwd not installed (scripts/setup --test)")
    return mqtt_broker


def _door_site(root: Path, mb, broker) -> Site:  # type: ignore[no-untyped-def]
    site = Site(root)
    data = root / "data"
    readers = (f'[[readers]]\nname = "door"\ntype = "simulated"\n'
               f'source = "{site.fifo}"\nhold_off_s = 0.3\n')
    text = mb.door_config_text(root, broker, "s1", "d1", readers=readers,
                               extra="[security]\nunknown_card_limit = 100000\n"
                                     "[lock]\nrelease_s = 3\n")
    site.config.write_text(text)
    from accessd.credentials import CredentialHasher, load_or_create_site_secret

    site.storage, site.socket = data, data / "control.sock"
    data.mkdir(parents=True, exist_ok=True)
    site.hasher = CredentialHasher(load_or_create_site_secret(data / "site.key"))
    return site


class Tapper(threading.Thread):
    def __init__(self, d: Daemon, members: list[str], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.d, self.members, self.rng = d, members, rng
        self.stop_ev, self.sent = threading.Event(), 0

    def run(self) -> None:
        while not self.stop_ev.is_set():
            if self.rng.random() < 0.5:
                self.d.tap(self.rng.choice(self.members), grants=True)
            else:
                self.d.tap(f"{self.rng.getrandbits(40):010X}")
            self.sent += 1
            time.sleep(0.05)


CATCH_UP_S = 30.0  # the broker back: what the door journaled meanwhile is acknowledged by then


def _decisions(d: Daemon) -> int:
    n = d.status()["decisions"]
    return int(n["granted"]) + int(n["denied"])


def mb_until(mb: Any, predicate: Any, timeout: float) -> bool:
    """The Mosquitto fixture's polling with a deadline, as a bool instead of an assertion."""
    try:
        mb.wait_for(predicate, timeout=timeout)
    except AssertionError:
        return False
    return True


def _acknowledged(mb: Any, d: Daemon, seq: int) -> bool:
    return mb_until(mb, lambda: d.status()["journal"]["acked_seq"] >= seq, CATCH_UP_S)


def _broker_loss(res: Result, mb: Any, d: Daemon, broker: Any, what: str, down_s: float, *,
                 up_s: float, delivered: bool) -> None:
    """One trial: the broker SIGKILLed for `down_s`, back for `up_s`. What must hold after
    it: the door kept deciding (taps arrive every 50 ms), its control socket answers, and for
    a kill (`delivered`) every event journaled up to the broker's return is acknowledged by
    the office within CATCH_UP_S. A flap is too short for that; the catch-up is checked once
    the flapping stops. Releases are audited for every life by `unintended_release`."""
    res.trials += 1
    before = _decisions(d)
    broker.kill()
    time.sleep(down_s)
    broker.start()
    time.sleep(up_s)
    try:
        st = d.status(timeout=2)
    except Exception as exc:  # the control socket must answer whatever the link does
        res.fail(f"{what}: no status from the door: {exc}")
        return
    decided = st["decisions"]["granted"] + st["decisions"]["denied"] - before
    res.check(decided > 0, f"{what}: no decision while the broker was down {down_s:.1f} s "
                           f"and back {up_s:.1f} s")
    if delivered:
        last = st["journal"]["last_seq"]
        res.check(_acknowledged(mb, d, last), f"{what}: events up to {last} not acknowledged "
                  f"within {CATCH_UP_S:g} s of the broker's return")


@scenario("network_link",
          "broker killed/restarted, link flapping, long outage with a backlog: decisions never "
          "pause, no release by link failure or recovery, every event stored exactly once",
          order=70)
def network_link(ctx: Context, res: Result) -> None:
    mb = _broker_tools()
    rng = random.Random(ctx.seed + 6)
    broker = mb.Broker(ctx.workdir / "broker")
    broker.start()
    from accessd.central.store import open_store

    store = open_store(ctx.workdir / "central.db")
    site = _door_site(ctx.workdir / "door", mb, broker)
    mb.register_door(store, ctx.workdir / "door")  # its key, made as at installation
    collector = mb.start_collector(store, broker)
    members = [f"{0x5500000000 + i:010X}" for i in range(10)]
    for i, uid in enumerate(members):
        site.enroll(uid, f"Member {i}")
    d = Daemon(site)
    tapper = None
    try:
        d.wait_for(r"reader door: (back )?online", timeout=5)
        mb.wait_for(lambda: d.status()["uplink"].get("connected") is True, timeout=20,
                    message="uplink connected")
        tapper = Tapper(d, members, rng)
        tapper.start()
        kills, flaps = ctx.n(2, 10), ctx.n(6, 40)
        for k in range(kills):  # broker killed, down a few seconds, back
            time.sleep(rng.uniform(0.5, 2))
            _broker_loss(res, mb, d, broker, f"kill {k}", rng.uniform(0.5, 3), up_s=0.0,
                         delivered=True)
        for f in range(flaps):  # many times a minute
            _broker_loss(res, mb, d, broker, f"flap {f}", rng.uniform(0.1, 0.6),
                         up_s=rng.uniform(0.2, 1.0), delivered=False)
        res.trials += 1  # after the flapping, the uplink catches up
        last = d.status()["journal"]["last_seq"]
        res.check(_acknowledged(mb, d, last), f"after {flaps} flaps: events up to {last} not "
                  f"acknowledged within {CATCH_UP_S:g} s")
        # a long outage: the broker away while a backlog builds (journalled directly, fast)
        broker.kill()
        backlog = ctx.n(5000, 30000)
        from accessd.events import Event, EventType
        from accessd.store.journal import Journal

        j = Journal(site.journal_path, "s1", "d1")
        for _ in range(0, backlog, 1000):
            j.append_many([Event(EventType.ACCESS_DENIED, reader="door", result="denied",
                                 reason="unknown_credential") for _ in range(1000)])
        j.close()
        time.sleep(2)
        broker.start()
        res.trials += 1
        time.sleep(1)
        tapper.stop_ev.set()
        tapper.join(5)
        seen: dict[str, int] = {}

        def delivered() -> bool:  # the store and the journal at one moment (the daemon may
            journal = d.status()["journal"]  # journal more meanwhile: a held-open alarm)
            seen.update(last=journal["last_seq"], n=store.count_events("s1", "d1"),
                        mark=store.stored_seq("s1").get("d1", 0))
            return journal["acked_seq"] == seen["last"] <= seen["n"]

        t0 = time.monotonic()
        res.check(mb_until(mb, delivered, ctx.n(120, 600)), "backlog not delivered")
        res.figures["backlog_drain_s"] = round(time.monotonic() - t0, 1)
        n, last = seen.get("n", -1), seen.get("last", -1)
        res.check(n == last, f"central store holds {n} events, the journal {last}")
        res.check(seen.get("mark") == last, f"stored_seq {seen.get('mark')} != {last}")
        # decisions never paused: the gaps between decisions while taps arrived every 50 ms
        times = [log_time(line) for line in d.text().splitlines()
                 if "access granted" in line or "access denied" in line]
        stamps = [t for t in times if t is not None]
        gap = max((b - a for a, b in itertools.pairwise(stamps)),
                  default=timedelta(0))
        res.figures.update({"decisions": len(stamps), "max_gap_between_decisions_s":
                            round(gap.total_seconds(), 3), "backlog": backlog,
                            "broker_kills": kills, "flaps": flaps})
        res.check(gap < timedelta(seconds=1.0),
                  f"decisions paused {gap.total_seconds():.2f} s while taps kept coming")
        res.notes.append(f"{kills} broker kills, {flaps} flaps, {backlog} events backlog "
                         f"drained in {res.figures['backlog_drain_s']} s; {len(stamps)} "
                         f"decisions, longest gap {gap.total_seconds() * 1000:.0f} ms; "
                         f"{n} events stored once")
    finally:
        if tapper is not None:
            tapper.stop_ev.set()
        d.stop()
        collector.stop()
        broker.stop()


@scenario("network_attack",
          "replayed, forged, stale, wrong-door commands and rule documents refused; oversized "
          "and deeply nested JSON refused without exhausting memory", order=75)
def network_attack(ctx: Context, res: Result) -> None:
    import sqlite3

    from accessd.errors import ProtocolError
    from accessd.events import utcnow
    from accessd.protocol.codec import SNAPSHOT_MAX_BYTES, decode, encode
    from accessd.protocol.commands import make_command
    from accessd.protocol.rules import make_snapshot
    from accessd.protocol.signing import OfficeKey, PublicKeys
    from accessd.store.rules import RuleCache
    from accessd.uplink.commands import CommandHandler
    from accessd.uplink.rulesync import RuleApplier

    key, intruder = OfficeKey.generate(), OfficeKey.generate()
    keys = PublicKeys([key.public])
    now = [utcnow()]
    conn = sqlite3.connect(str(ctx.workdir / "seen.db"), isolation_level=None)
    handler = CommandHandler(conn, keys, site="faults", door="front", now=lambda: now[0])

    def cmd(k: OfficeKey = key, **kw) -> bytes:  # type: ignore[no-untyped-def]
        args = {"type": "release", "site": "faults", "door": "front", "operator": "o",
                "seconds": 5, "now": now[0], **kw}
        return encode(make_command(k, **args))

    def refused(raw: bytes, what: str, reason: str | None = None) -> None:
        res.trials += 1
        out = handler.check(raw)
        res.check(not out.accepted and (reason is None or out.reason == reason),
                  f"command {what}: accepted={out.accepted} reason={out.reason}")

    good = cmd()
    res.trials += 1
    res.check(handler.check(good).accepted, "a genuine command was refused")
    for _ in range(ctx.n(20, 500)):
        refused(good, "replayed", "replayed")
    refused(cmd(intruder), "signed by an unknown key", "unknown_key")
    refused(cmd(door="back"), "for another door", "wrong_door")
    refused(cmd(now=now[0] - timedelta(minutes=10)), "stale", "expired")
    refused(cmd(now=now[0] + timedelta(minutes=10)), "from the future", "not_yet_valid")
    refused(cmd(ttl_s=3600), "valid for an hour", "bad_window")
    forged = bytearray(good)
    forged[forged.index(b'"seconds":5') + 10] = ord("9")
    refused(bytes(forged), "with a forged field", "bad_signature")
    saved, now[0] = now[0], None  # the door's clock is not trusted
    refused(cmd(now=saved), "while the clock is untrusted", "clock_untrusted")
    now[0] = saved + timedelta(minutes=6)
    refused(good, "replayed after expiry", "expired")

    # rule documents
    rules = RuleCache(ctx.workdir / "rules.db")
    applier = RuleApplier(rules, keys, site="faults", door="front")
    members = [{"id": "m-1", "name": "A", "plan": "subscriber", "status": "active",
                "valid_from": None, "valid_until": None}]
    creds = [{"hash": "b" * 64, "member_id": "m-1", "status": "active"}]

    def snap(version: int, k: OfficeKey = key, site: str = "faults") -> bytes:
        return encode(make_snapshot(k, site=site, version=version, members=members,
                                    credentials=creds))

    res.trials += 1
    res.check(applier.handle(snap(5), "snapshot").applied, "a genuine snapshot was refused")
    for raw, what, reason in ((snap(5), "replayed", None), (snap(4), "stale", "stale_version"),
                              (snap(6, intruder), "forged", "unknown_key"),
                              (snap(6, site="other"), "for another site", "wrong_site")):
        res.trials += 1
        out = applier.handle(raw, "snapshot")
        res.check(not out.applied and (reason is None or out.reason == reason),
                  f"rules {what}: applied={out.applied} reason={out.reason}")
    res.check(rules.version == 5, f"rule version {rules.version} after the attacks")

    # oversized and deeply nested JSON: refused, with bounded memory
    cases = (  # built before measuring: the payload itself is the broker's, not the parser's
        ("a 64 MB rule document", b"[" + b"0," * (32 << 20) + b"0]", SNAPSHOT_MAX_BYTES),
        ("1e6 nested arrays", b"[" * 1_000_000 + b"]" * 1_000_000, SNAPSHOT_MAX_BYTES),
        ("nesting 17 deep", b"[" * 17 + b"]" * 17, 4096),
        ("1e5 nested objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 4096 * 1024),
    )
    tracemalloc.start()
    for what, payload, limit in cases:
        res.trials += 1
        tracemalloc.reset_peak()
        try:
            decode(payload, max_bytes=limit)
            res.fail(f"{what}: accepted")
        except ProtocolError:
            pass
        except RecursionError:
            res.fail(f"{what}: RecursionError escaped")
        current, peak = tracemalloc.get_traced_memory()
        peak -= current
        res.figures.setdefault("peak_bytes", {})[what] = peak
        res.check(peak < 16 << 20, f"{what}: {peak >> 20} MB allocated while refusing it")
    tracemalloc.stop()
    big = res.figures["peak_bytes"]
    res.notes.append("peak memory while refusing: " + ", ".join(
        f"{k} {v / 1e6:.1f} MB" for k, v in big.items()))
    rules.close()
    conn.close()
