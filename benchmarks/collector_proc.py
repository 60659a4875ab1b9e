"""The central collector as its own process, reporting each committed batch on stdout.

    python -m benchmarks.collector_proc --store URL --port N --ca FILE --password PW --key FILE
        [--seqs]

The collector is accessd's own (`accessd.central.collector.Collector` over `open_store`); the
only addition is a wrapper around `store_events` that prints, once the batch is committed,

    S <perf_counter> <new events> <process CPU s> [<door>:<seq>,...]   (the list with --seqs)
    M <perf_counter> <door>:<seq>       (--seqs: an event of a message reached the collector)

The process CPU time (`time.process_time()`: every thread, paho's network thread and TLS
included) lets the benchmark report the collector's whole CPU per event beside its rate.

`time.perf_counter()` is CLOCK_MONOTONIC on Linux, the same clock in every process, so the
benchmark can subtract its own timestamps from these. "R" is printed once connected.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--store", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--client-id", default="bench-collector")
    p.add_argument("--key", required=True, help="the office's private key (signs acks)")
    p.add_argument("--seqs", action="store_true")
    args = p.parse_args()

    from accessd.central.collector import Collector
    from accessd.central.store import open_store
    from accessd.protocol.signing import OfficeKey
    from accessd.protocol.transport import BrokerSettings

    store = open_store(args.store)
    out = sys.stdout
    lock = threading.Lock()
    real = store.store_events

    def store_events(messages):  # type: ignore[no-untyped-def]
        result = real(messages)
        t = time.perf_counter()
        line = f"S {t:.6f} {result.new} {time.process_time():.6f}"
        if args.seqs:
            line += " " + ",".join(f"{m['door']}:{m['seq']}" for m in messages)
        with lock:
            out.write(line + "\n")
            out.flush()
        return result

    store.store_events = store_events  # type: ignore[method-assign]
    settings = BrokerSettings(host="127.0.0.1", port=args.port, username="central",
                              password=args.password, tls=True, ca_file=Path(args.ca),
                              reconnect_min_s=1, reconnect_max_s=2, keepalive_s=10)
    collector = Collector(store, settings, key=OfficeKey.load(Path(args.key)), prefix="accessd",
                          client_id=args.client_id)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    collector.start()
    if args.seqs:  # also when each event message reaches the collector's paho client
        import json

        handover = collector.client.on_message

        def on_message(client, userdata, msg):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            if msg.topic.endswith("/event"):
                with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                    doc = json.loads(msg.payload)
                    payloads = ([json.loads(line) for line in doc["events"].split("\n")]
                                if "events" in doc else [doc["payload"]])
                    with lock:
                        for p in payloads:
                            out.write(f"M {t:.6f} {msg.topic.split('/')[2]}:{p['seq']}\n")
                        out.flush()
            handover(client, userdata, msg)

        collector.client.on_message = on_message
    deadline = time.monotonic() + 20
    while not collector.stats.connected:
        if time.monotonic() > deadline:
            print("E not connected", flush=True)
            return 1
        time.sleep(0.02)
    time.sleep(0.3)  # the SUBACK
    print("R", flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        collector.stop()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
