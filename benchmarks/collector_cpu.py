"""The collector's CPU per event, without the network: repeatable on a busy machine.

    python -m benchmarks.collector_cpu [--doors 50] [--events 20000] [--batch 500]
        [--form single,batch] [--store sqlite|postgresql://...] [--profile N] [--json]

Wall-clock throughput on a shared machine says more about the neighbours than about the
code; CPU time does not (much). This feeds accessd's own `Collector.handle()` (the method its
worker thread runs on each batch taken from the inbox) with real paho `MQTTMessage` objects
holding what the doors send, signed by each door's registered key, and reports
`time.process_time()` per event (the least of `--repeat` runs: other work on a shared machine
only ever adds to it): the event checks, every signature, the store's transaction
(SQLite WAL, synchronous=FULL: waiting on the disk is not CPU time) and the signed
acknowledgements. What it leaves out is the MQTT transport itself (paho's parsing of each
PUBLISH in its network thread, TLS, the broker); the network benchmark reports the
collector process's whole CPU per event beside its rate (benchmarks/network.py).

Forms (docs/protocol.md): `v2`, one event per message in the version 2 envelope (a door
older than version 3, or set to `event_version = 2`); `single`, one event per version 3
message (a live tap); `batch`, a door's backlog, up to `--per-message` events signed at once.
For each it also reports the door's CPU to sign and encode the messages, and one Ed25519
verification alone, to put the rest in proportion. `--profile N` prints cProfile's top N
functions of the collector's share.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

FORMS = ("v2", "single", "batch")


def _entry_payloads(doors: list[tuple[str, str]], per_door: int) -> dict[tuple[str, str],
                                                                          list[dict[str, Any]]]:
    """Each door's event payloads, as its outbox builds them (`event_message`)."""
    from accessd.events import Event, EventType, JournalEntry, utcnow
    from accessd.uplink.outbox import event_message

    now = utcnow()
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for site, door in doors:
        journal = uuid.uuid4().hex
        out[(site, door)] = [event_message(JournalEntry(
            seq, uuid.uuid4().hex, site, door,
            Event(EventType.ACCESS_GRANTED, ts=now, reader="door", member_id=f"m-{seq:06d}",
                  member_name=f"Member {seq}", plan="subscriber", result="granted",
                  reason="subscriber", credential="0123456789ab", clock_trusted=True,
                  detail={"direction": "entry", "technology": "em4100"})), journal)
            for seq in range(1, per_door + 1)]
    return out


def messages(form: str, doors: list[tuple[str, str]], per_door: int, per_message: int,
             keys: dict[tuple[str, str], Any]) -> tuple[list[Any], float]:
    """(paho messages interleaved across doors, the door's CPU seconds to sign them)."""
    import paho.mqtt.client as mqtt

    from accessd.protocol import delivery
    from accessd.protocol.topics import Topics

    payloads = _entry_payloads(doors, per_door)
    bodies: dict[tuple[str, str], list[bytes]] = {}
    t0 = time.process_time()
    for door, items in payloads.items():
        if form == "v2":
            bodies[door] = [delivery.encode_event(keys[door], p) for p in items]
        elif form == "single":
            bodies[door] = [delivery.encode_events(keys[door], [p]) for p in items]
        else:
            bodies[door] = [delivery.encode_events(keys[door], items[i:i + per_message])
                            for i in range(0, len(items), per_message)]
    sign_s = time.process_time() - t0
    out = []
    for i in range(max(len(b) for b in bodies.values())):
        for (site, door), items in bodies.items():
            if i < len(items):
                msg = mqtt.MQTTMessage(mid=len(out) % 65535 + 1,
                                       topic=Topics("accessd", site, door).event.encode())
                msg.payload, msg.qos = items[i], 1
                out.append(msg)
    return out, sign_s


def inbox_batches(msgs: list[Any], most: int) -> list[list[Any]]:
    """As the collector's worker takes them from its inbox: up to `most` messages, or until
    they hold BATCH_BYTES."""
    from accessd.central.collector import BATCH_BYTES

    out: list[list[Any]] = []
    size = 0
    for msg in msgs:
        if not out or len(out[-1]) >= most or size >= BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(msg)
        size += len(msg.payload)
    return out


class Sink:
    """Stands in for the collector's broker connection: counts what it would send."""

    def __init__(self) -> None:
        self.published = 0
        self.acked = 0

    def publish(self, _topic: str, _payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.published += 1

    def ack(self, _mid: int, _qos: int) -> None:
        self.acked += 1


def run_form(form: str, args: argparse.Namespace, store_url: str) -> dict[str, Any]:
    from accessd.central.collector import Collector
    from accessd.central.store import open_store
    from accessd.protocol.signing import DoorKey, OfficeKey, public_line
    from accessd.protocol.transport import BrokerSettings

    doors = [(f"site{i // 10}", f"door{i % 10}") for i in range(args.doors)]
    keys = {door: DoorKey.generate() for door in doors}
    store = open_store(store_url)
    try:
        for (site, door), key in keys.items():
            store.add_door_key(site, door, public_line(key.public))
        per_door = max(1, args.events // len(doors))
        msgs, sign_s = messages(form, doors, per_door, args.per_message, keys)
        events = per_door * len(doors)
        collector = Collector(store, BrokerSettings(host="127.0.0.1", port=1),
                              key=OfficeKey.generate(), batch=args.batch)
        sink = Sink()
        collector.client = sink  # type: ignore[assignment]
        collector.door_keys()
        batches = inbox_batches(msgs, args.batch)
        if len(batches) < 2:
            raise SystemExit(f"{form}: {len(msgs)} messages make one batch, the warm-up; "
                             "nothing left to time (more --events or a smaller --batch)")
        collector.handle(batches[0])  # warm-up: caches, the first journal of each door
        warm = collector.stats.stored
        profile = cProfile.Profile() if args.profile else None
        t0 = time.process_time()
        if profile:
            profile.enable()
        for batch in batches[1:]:
            collector.handle(batch)
        if profile:
            profile.disable()
        cpu = time.process_time() - t0
        stats = collector.stats
        timed = stats.stored - warm
        if stats.stored != events or stats.invalid:
            raise RuntimeError(f"{form}: stored {stats.stored} of {events}, "
                               f"{stats.invalid} refused")
        if profile:
            print(f"-- {form}: cProfile, collector share", file=sys.stderr)
            pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(
                args.profile)
        us = cpu / timed * 1e6
        return {"form": form, "events": events, "messages": len(msgs), "timed_events": timed,
                "collector_cpu_us_per_event": round(us, 1),
                "events_per_s_per_core": round(1e6 / us),
                "door_sign_cpu_us_per_event": round(sign_s / events * 1e6, 1),
                "acks_published": sink.published, "profiled": bool(profile)}
    finally:
        store.close()


@contextlib.contextmanager
def private_schema(url: str) -> Iterator[str]:
    """A schema of its own in that PostgreSQL database, dropped afterwards (the database
    may be shared: the tests use it too)."""
    import psycopg

    admin = psycopg.connect(url, autocommit=True)
    schema = f"accessd_bench_{secrets.token_hex(4)}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{url}{'&' if '?' in url else '?'}options={quote(f'-csearch_path={schema}')}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def verify_alone_us(n: int = 2000) -> float:
    """One Ed25519 verification with `cryptography`, on this machine."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    public, message = key.public_key(), b"x" * 450
    sig = key.sign(message)
    t0 = time.process_time()
    for _ in range(n):
        public.verify(sig, message)
    return (time.process_time() - t0) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--doors", type=int, default=50)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=500, help="messages the collector takes at once")
    p.add_argument("--per-message", type=int, default=100,
                   help="events per signed batch message (form batch)")
    p.add_argument("--form", default=",".join(FORMS))
    p.add_argument("--store", default="sqlite",
                   help="sqlite (a temporary file) or a postgresql:// URL (a private schema "
                        "in it for each run)")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each form: the least CPU is reported (the figure least "
                        "disturbed by other work on the machine), with every run")
    p.add_argument("--profile", type=int, default=0, metavar="N")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    results = []
    forms = args.form.split(",")
    for form in forms:
        if form not in FORMS:
            p.error(f"--form: {form!r} is not one of {', '.join(FORMS)}")
    with tempfile.TemporaryDirectory(prefix="accessd-collector-cpu-") as tmp:
        for form in forms:
            runs = []
            for n in range(args.repeat):  # each run on a new store, new doors, new keys
                if args.store == "sqlite":
                    runs.append(run_form(form, args, str(Path(tmp) / f"c-{form}-{n}.db")))
                else:
                    with private_schema(args.store) as url:
                        runs.append(run_form(form, args, url))
            best = min(runs, key=lambda r: r["collector_cpu_us_per_event"])
            us = sorted(r["collector_cpu_us_per_event"] for r in runs)
            results.append({**best, "runs_us_per_event": us,
                            "median_us_per_event": us[len(us) // 2]})
    verify = round(min(verify_alone_us() for _ in range(args.repeat)), 1)
    if args.json:
        print(json.dumps({"verify_alone_us": verify, "results": results}, indent=1))
        return 0
    print(f"one Ed25519 verification alone: {verify} us CPU (least of {args.repeat})")
    for r in results:
        print(f"{r['form']:>6}: {r['collector_cpu_us_per_event']:7.1f} us collector CPU/event "
              f"(runs: {', '.join(map(str, r['runs_us_per_event']))}; the least) "
              f"({r['events_per_s_per_core']}/s per core), door signs "
              f"{r['door_sign_cpu_us_per_event']} us/event; {r['events']} events in "
              f"{r['messages']} messages, "
              f"{r['acks_published']} acks" + (" [profiled]" if r["profiled"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
