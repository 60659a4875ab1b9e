"""The collector: every door's events into the central store, stored once, acknowledged after.

Subscribes to all doors through an MQTT 5 shared subscription with a persistent session, so
several collectors share the load and messages wait at the broker while one is down. Each
batch is committed before anything is acknowledged, to the broker (manual PUBACK) or to the
door (its `ack` topic, with the contiguous mark recomputed from the store). A hole in a
door's numbers that stays open for `gap_timeout_s` (another collector may simply be filling
it) is asked for again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from accessd.central.store import CentralStore
from accessd.errors import ProtocolError, StoreError
from accessd.protocol.codec import EVENT_MAX_BYTES, decode, encode, validate
from accessd.protocol.topics import (
    COLLECTOR_GROUP,
    Topics,
    all_events,
    all_rule_requests,
    parse_door_topic,
)
from accessd.protocol.transport import BrokerSettings, connect, new_client

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # messages wait a week for a collector that is down


@dataclass
class CollectorStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    acks: int = 0
    resend_requests: int = 0
    snapshots_republished: int = 0
    connected: bool = False
    subscribed: bool = False
    last_error: str | None = None
    doors: dict[str, int] = field(default_factory=dict)


class Collector:
    def __init__(self, store: CentralStore, settings: BrokerSettings, *,
                 prefix: str = "accessd", group: str = COLLECTOR_GROUP,
                 client_id: str = "accessd-collector", session_expiry_s: int = SESSION_EXPIRY_S,
                 batch: int = 500, gap_timeout_s: float = 3.0) -> None:
        self.store, self.settings, self.prefix, self.group = store, settings, prefix, group
        self.client_id, self.session_expiry_s = client_id, session_expiry_s
        self.batch, self.gap_timeout_s = batch, gap_timeout_s
        self.stats = CollectorStats()
        self._inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._gaps: dict[tuple[str, str], float] = {}  # door -> when the hole was first seen
        self._requests: dict[str, float] = {}

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        c = new_client(self.settings, self.client_id, manual_ack=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = lambda _c, _u, msg: self._inbox.put(msg)
        self.client = c
        connect(c, self.settings, clean_start=False, session_expiry_s=self.session_expiry_s)
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread:
            self._thread.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def run_forever(self) -> None:
        self.start()
        try:
            while not self._stopping.wait(1.0):
                pass
        finally:
            self.stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self.stats.last_error = f"connection refused: {rc}"
            log.warning("broker %s refused the collector: %s", self.settings, rc)
            return
        self.stats.connected = True
        log.info("collector %s connected (session present: %s)", self.client_id,
                 flags.session_present)
        client.subscribe([(all_events(self.prefix, self.group), 1),
                          (all_rule_requests(self.prefix, self.group), 1)])

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, codes: Any, _p: Any) -> None:
        failed = [str(c) for c in codes if c.is_failure]
        if failed:
            self.stats.last_error = f"subscription refused: {failed}"
            log.error("the broker refused the collector's subscriptions: %s (check the ACL)",
                      failed)
        else:
            self.stats.subscribed = True

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if self.stats.connected:
            log.warning("collector lost the broker: %s (messages wait in its session)", rc)
        self.stats.connected = self.stats.subscribed = False
        self.stats.last_error = str(rc)

    # -- the worker ---------------------------------------------------------------------
    def _run(self) -> None:
        pending: list[mqtt.MQTTMessage] = []
        while not self._stopping.is_set():
            if not pending:
                try:
                    pending.append(self._inbox.get(timeout=0.2))
                except queue.Empty:
                    self._check_gaps()
                    continue
                while len(pending) < self.batch:
                    try:
                        pending.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
            try:
                self._handle(pending)
                pending = []
            except StoreError as exc:
                self.stats.last_error = str(exc)
                log.warning("cannot store %d messages, retrying: %s", len(pending), exc)
                self._stopping.wait(2.0)
            except Exception:
                log.exception("collector: a batch failed; retrying")
                self._stopping.wait(2.0)
            self._check_gaps()

    def _handle(self, messages: list[mqtt.MQTTMessage]) -> None:
        events, requests = [], []
        for msg in messages:
            parsed = parse_door_topic(msg.topic, self.prefix)
            if parsed is None and msg.topic.endswith("/rules/request"):
                requests.append(msg.topic.split("/")[1])
                continue
            self.stats.received += 1
            try:
                event = decode(msg.payload, max_bytes=EVENT_MAX_BYTES)
                validate("event", event)
                if parsed is None or (event["site"], event["door"]) != parsed[:2]:
                    raise ProtocolError(f"invalid: event for {event['site']}/{event['door']} "
                                        f"on {msg.topic}")
            except ProtocolError as exc:
                self.stats.invalid += 1
                log.warning("dropping a message on %s: %s", msg.topic, exc)
                continue
            events.append(event)
        if events:
            result = self.store.store_events(events)
            self.stats.stored += result.new
            self.stats.duplicates += result.duplicates
            marks = self.store.advance_many(result.doors)  # one commit for every door
            for site, door in sorted(result.doors):
                self._acknowledge(site, door, marked=marks[(site, door)])
        for msg in messages:  # only now may the broker forget them
            if msg.qos:
                self.client.ack(msg.mid, msg.qos)
        for site in set(requests):
            self._republish(site)

    def _acknowledge(self, site: str, door: str, *, resend: bool = False,
                     marked: tuple[int, tuple[int, int] | None] | None = None) -> None:
        """Tell the door its contiguous mark (`marked` if the caller computed it after the
        batch's commit, else recomputed now) and ask again for a hole that stays open."""
        mark, hole = marked if marked is not None else self.store.advance(site, door)
        self.stats.doors[f"{site}/{door}"] = mark
        ack: dict[str, Any] = {"v": 1, "acked": mark}
        if hole is None:
            self._gaps.pop((site, door), None)
        else:
            first_seen = self._gaps.setdefault((site, door), time.monotonic())
            if resend or time.monotonic() - first_seen >= self.gap_timeout_s:
                ack["resend"] = list(hole)
                self._gaps[(site, door)] = time.monotonic()
                self.stats.resend_requests += 1
                log.info("%s/%s: events %d..%d missing, asking again", site, door, *hole)
        self.client.publish(Topics(self.prefix, site, door).ack, encode(ack), qos=1)
        self.stats.acks += 1

    def _check_gaps(self) -> None:
        now = time.monotonic()
        for (site, door), since in list(self._gaps.items()):
            if now - since >= self.gap_timeout_s:
                self._acknowledge(site, door)

    def _republish(self, site: str) -> None:
        """A door asks for rules: send the latest signed snapshot again (no key needed)."""
        now = time.monotonic()
        if now - self._requests.get(site, -1e9) < 5.0:
            return
        self._requests[site] = now
        snapshot = self.store.latest_snapshot(site)
        if snapshot is None:
            log.info("site %s asks for rules but none were published yet", site)
            return
        self.client.publish(Topics(self.prefix, site).rules_snapshot, snapshot.encode("utf-8"),
                            qos=1, retain=True)
        self.stats.snapshots_republished += 1
