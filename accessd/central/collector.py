"""The collector: every door's events into the central store, stored once, acknowledged after.

Subscribes to all doors through an MQTT 5 shared subscription with a persistent session, so
several collectors share the load and messages wait at the broker while one is down. An event
is stored only if a key registered for its door signed it (`door_keys`; one check for a
door's signed batch, version 3, whose lines are then checked one by one); anything else is
refused with an alarm naming the door. Each batch is committed before anything is
acknowledged, to the broker (manual PUBACK) or to the door (its `ack` topic, signed with the
office's key, with the contiguous mark recomputed from the store).

The office asks for what it lacks: a hole in a door's numbers that stays open for
`gap_timeout_s` (another collector may simply be filling it), or numbers a door's retained
status shows it believes stored (a new or restored office store): a window at a time, the
next one as soon as the previous one is stored, until the store has all the doors still hold.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from accessd.central import health
from accessd.central.store import CentralStore
from accessd.central.verify import SignatureChecker
from accessd.errors import ProtocolError, StoreError
from accessd.protocol.codec import decode, encode, validate
from accessd.protocol.delivery import DoorKeys, Opened, events_in, make_ack, open_message
from accessd.protocol.signing import OfficeKey, parse_public_line, reason_of
from accessd.protocol.topics import (
    COLLECTOR_GROUP,
    Topics,
    all_events,
    all_rule_requests,
    all_statuses,
    parse_door_topic,
)
from accessd.protocol.transport import BrokerSettings, connect, new_client

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # messages wait a week for a collector that is down
STATUS_MAX_BYTES = 16 * 1024
SIGNATURE_REASONS = ("unsigned", "unknown_key", "wrong_door", "bad_signature")
BATCH_BYTES = 1024 * 1024  # a batch stops at `batch` messages or this many bytes of them


@dataclass
class CollectorStats:
    received: int = 0  # event messages (a version 3 message may carry many events)
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0  # refused: unsigned, unregistered key, bad signature, bad schema... (a
    # message refused whole counts once; each refused line of a signed batch counts)
    conflicts: int = 0
    rebases: int = 0
    acks: int = 0
    resend_requests: int = 0
    snapshots_republished: int = 0
    connected: bool = False
    subscribed: bool = False
    last_error: str | None = None
    doors: dict[str, int] = field(default_factory=dict)


class Collector:
    def __init__(self, store: CentralStore, settings: BrokerSettings, *, key: OfficeKey,
                 prefix: str = "accessd", group: str = COLLECTOR_GROUP,
                 client_id: str = "accessd-collector", session_expiry_s: int = SESSION_EXPIRY_S,
                 batch: int = 500, gap_timeout_s: float = 3.0, catchup_window: int = 100,
                 keys_refresh_s: float = 10.0, verify_workers: int = 0) -> None:
        self.store, self.settings, self.prefix, self.group = store, settings, prefix, group
        self.key = key
        self.client_id, self.session_expiry_s = client_id, session_expiry_s
        self.batch, self.gap_timeout_s = batch, gap_timeout_s
        self.catchup_window, self.keys_refresh_s = catchup_window, keys_refresh_s
        self.stats = CollectorStats()
        self.checker = SignatureChecker(verify_workers)
        self._inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._gaps: dict[tuple[str, str], float] = {}  # door -> when to ask again
        self._asked: dict[tuple[str, str], int] = {}  # door -> end of the range asked for
        # what each door's status says: (journal, acked_seq, last_seq)
        self._held: dict[tuple[str, str], tuple[str, int, int]] = {}
        self._requests: dict[str, float] = {}
        self._keys = DoorKeys([])
        self._keys_at = -1e9
        self._keys_seen: tuple[object, ...] | None = None
        self.door_status = health.StatusWriter(store)  # for the office's overview

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        c = new_client(self.settings, self.client_id, manual_ack=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = lambda _c, _u, msg: self._inbox.put(msg)
        self.client = c
        self.door_keys()
        self.checker.warm()
        connect(c, self.settings, clean_start=False, session_expiry_s=self.session_expiry_s)
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the worker to stop (safe from a signal handler); `stop` waits for it."""
        self._stopping.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread:
            self._thread.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        self.checker.close()

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
                          (all_rule_requests(self.prefix, self.group), 1),
                          (all_statuses(self.prefix), 1)])

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

    # -- door keys ----------------------------------------------------------------------
    def door_keys(self, refresh: bool = False) -> DoorKeys:
        """The registered door keys, checked again every `keys_refresh_s` (a key added or
        removed by `accessd central door` counts within that), and at once (`refresh`) when
        a batch holds an event signed by a key not known here: a cheap look at whether the
        table changed, so a flood of forged events costs one query a batch."""
        now = time.monotonic()
        if not refresh and now - self._keys_at < self.keys_refresh_s:
            return self._keys
        self._keys_at = now
        seen = self.store.door_keys_version()
        if seen == self._keys_seen:
            return self._keys
        keys = []
        for row in self.store.door_keys():
            try:
                keys.append((row["site"], row["door"], parse_public_line(row["public_key"])[0]))
            except ValueError as exc:
                log.error("door key %s of %s/%s unusable: %s", row["key_id"], row["site"],
                          row["door"], exc)
        self._keys, self._keys_seen = DoorKeys(keys), seen
        return self._keys

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
                size = len(pending[0].payload)
                while len(pending) < self.batch and size < BATCH_BYTES:
                    try:
                        pending.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                    size += len(pending[-1].payload)
            try:
                self.handle(pending)
                pending = []
            except StoreError as exc:
                self.stats.last_error = str(exc)
                log.warning("cannot store %d messages, retrying: %s", len(pending), exc)
                self._stopping.wait(2.0)
            except Exception:
                log.exception("collector: a batch failed; retrying")
                self._stopping.wait(2.0)
            self._check_gaps()

    def handle(self, messages: list[mqtt.MQTTMessage]) -> None:
        """One batch of messages, as the worker takes them from the inbox: events checked,
        stored in one transaction and acknowledged, then the broker's copies released
        (`client.ack`), then rule requests and statuses. Public for benchmarks/collector_cpu.py,
        which feeds it without a broker."""
        requests, statuses = [], []
        refused: dict[tuple[str, str, str], list[str]] = {}
        opened: list[tuple[str, str, Opened]] = []
        keys, rechecked = self.door_keys(), False

        def refuse(site: str, door: str, exc: ProtocolError) -> None:
            reason = reason_of(exc)
            kind = f"event_{reason}" if reason in SIGNATURE_REASONS else "event_invalid"
            refused.setdefault((site, door, kind), []).append(str(exc))

        for msg in messages:
            parsed = parse_door_topic(msg.topic, self.prefix)
            if parsed is None:
                if msg.topic.endswith("/rules/request"):
                    requests.append(msg.topic.split("/")[1])
                continue
            site, door, leaf = parsed
            if leaf == "status":
                statuses.append((site, door, msg.payload))
                continue
            if leaf != "event":
                continue
            self.stats.received += 1
            try:
                try:
                    opened.append((site, door, open_message(msg.payload, keys, site=site,
                                                            door=door)))
                except ProtocolError as exc:
                    if rechecked or reason_of(exc) not in ("unknown_key", "wrong_door"):
                        raise
                    keys, rechecked = self.door_keys(refresh=True), True  # just registered?
                    opened.append((site, door, open_message(msg.payload, keys, site=site,
                                                            door=door)))
            except ProtocolError as exc:
                refuse(site, door, exc)
        # every signature of the batch at once (one per message), spread over the workers
        verdicts = self.checker.check([(o.public, o.sig, o.signed) for _s, _d, o in opened])
        events: list[dict[str, Any]] = []
        for (site, door, o), holds in zip(opened, verdicts, strict=True):
            if not holds:
                refuse(site, door, ProtocolError("bad_signature: the signature does not match"))
                continue
            try:
                good, bad = events_in(o, site=site, door=door)
            except ProtocolError as exc:  # refused whole
                refuse(site, door, exc)
                continue
            events += good
            for exc in bad:
                refuse(site, door, exc)
        if events:
            self._store(events)
        for (site, door, kind), errors in refused.items():
            log.warning("%s/%s: refused %d event(s): %s", site, door, len(errors), errors[0])
            self.store.raise_alarm(site, door, kind, f"{len(errors)} refused: {errors[0]}",
                                   len(errors))
            self.stats.invalid += len(errors)  # counted once refused *and* alarmed
        for msg in messages:  # only now may the broker forget them
            if msg.qos:
                self.client.ack(msg.mid, msg.qos)
        for site in set(requests):
            self._republish(site)
        for site, door, payload in statuses:
            self._status(site, door, payload)
        self.door_status.flush()

    def _store(self, events: list[dict[str, Any]]) -> None:
        result = self.store.store_events(events)
        self.stats.stored += result.new
        self.stats.duplicates += result.duplicates
        self.stats.conflicts += result.conflicts
        marks = self.store.advance_many(result.journals)  # one commit for every door
        if result.new:
            health.notify_events(self.store)  # wakes the web's live entries (PostgreSQL)
        watched = [e for e in events if e["type"] in health.WATCHED]
        if watched:  # a door's own alarms: rare, and opened once per event
            health.door_alarms(self.store, watched)
        for (site, door), journal in sorted(result.journals.items()):
            self._acknowledge(site, door, journal=journal, marked=marks[(site, door)])
        for (site, door), rebase in sorted(result.rebases.items()):
            self.stats.rebases += 1
            log.warning("%s/%s: a new journal; asking the door to renumber it after %d",
                        site, door, rebase.after)
            self._publish_ack(site, door, make_ack(
                self.key, site=site, door=door, journal=rebase.journal,
                rebase=(rebase.after, rebase.next)))

    def _acknowledge(self, site: str, door: str, *, journal: str | None = None,
                     marked: tuple[int, tuple[int, int] | None] | None = None) -> None:
        """Tell the door its contiguous mark (`marked` if the caller computed it after the
        batch's commit, else recomputed now) and ask for what is missing: a hole that stays
        open, or what the door's status says it holds beyond the mark."""
        key = (site, door)
        mark, hole = marked if marked is not None else self.store.advance(site, door)
        held = self._held.get(key)
        if journal is None:
            journal = self.store.current_journal(site, door)
        if journal is None and held is not None:
            journal = held[0]  # a new office store: the door's word for its journal
        if journal is None:
            return  # a door never heard of: nothing to say
        if hole is None and held and held[0] == journal and held[1] > mark:
            hole = (mark + 1, held[1])  # the door believes these stored: it will not resend
        self.stats.doors[f"{site}/{door}"] = mark
        resend = None
        now = time.monotonic()
        if hole is None:
            self._gaps.pop(key, None)
            self._asked.pop(key, None)
        else:
            due = self._gaps.setdefault(key, now + self.gap_timeout_s)
            caught_up = key in self._asked and mark >= self._asked[key]  # the last window
            if caught_up or now >= due:
                resend = (hole[0], min(hole[1], hole[0] + self.catchup_window - 1))
                self._gaps[key] = now + self.gap_timeout_s
                self._asked[key] = resend[1]
                self.stats.resend_requests += 1
                log.info("%s/%s: events %d..%d missing, asking for them", site, door, *resend)
        self._publish_ack(site, door, make_ack(self.key, site=site, door=door,
                                               journal=journal, acked=mark, resend=resend))

    def _publish_ack(self, site: str, door: str, envelope: dict[str, Any]) -> None:
        self.client.publish(Topics(self.prefix, site, door).ack, encode(envelope), qos=1)
        self.stats.acks += 1

    def _check_gaps(self) -> None:
        now = time.monotonic()
        for (site, door), due in list(self._gaps.items()):
            if now >= due:
                self._acknowledge(site, door)

    def _status(self, site: str, door: str, payload: bytes) -> None:
        """A door's (retained) status: if it believes stored (acknowledged) numbers the store
        lacks, ask for them at once: it will not send them again on its own. What it has not
        had acknowledged it sends anyway (asking too would only double it)."""
        try:
            status = decode(payload, max_bytes=STATUS_MAX_BYTES)
            validate("status", status)
        except ProtocolError as exc:
            log.debug("%s/%s: unusable status: %s", site, door, exc)
            return
        if (status["site"], status["door"]) != (site, door):
            return
        self.door_status.seen(site, door, status)
        if not status["online"] or "last_seq" not in status or "journal" not in status:
            return
        key = (site, door)
        acked, last = status.get("acked_seq", 0), status["last_seq"]
        self._held[key] = (status["journal"], acked, last)
        if acked > self.store.stored_seq(site).get(door, 0):
            self._gaps[key] = time.monotonic()

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
