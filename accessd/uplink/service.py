"""The uplink: the door's one connection to the central office, beside the door, never in its way.

One worker thread owns the uplink's own journal and rule-cache connections and does all the
work (publishing the outbox, applying rules, checking commands, the status); paho's network
thread only hands messages over through a queue. Every event goes out signed by the door's
own key; an acknowledgement counts only if the office's key signed it for this door and
this journal. The daemon talks to it through `notify()`
(a journal commit happened) and three callbacks, none of which waits on the network.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from accessd.clock import ClockTrust
from accessd.config import Config, DoorSpec
from accessd.credentials import read_secret_file
from accessd.errors import AccessdError, ProtocolError
from accessd.events import Event, EventType, JournalEntry, format_ts, utcnow
from accessd.protocol.codec import encode
from accessd.protocol.delivery import event_messages, read_ack
from accessd.protocol.signing import DoorKey, PublicKeys, reason_of
from accessd.protocol.topics import Topics
from accessd.protocol.transport import BrokerSettings, connect, new_client
from accessd.store.journal import Journal
from accessd.store.rules import RuleCache
from accessd.uplink.apply import CHILD_APPLY_BYTES, apply_in_child
from accessd.uplink.commands import CommandHandler
from accessd.uplink.homeassistant import UNLOCK, Discovery, DiscoveryRecord, Options
from accessd.uplink.outbox import Outbox, event_message
from accessd.uplink.rulesync import Outcome, RuleApplier

log = logging.getLogger(__name__)

TICK_S = 0.5
STATUS_CHECK_S = 1.0
VOLATILE = ("ts", "outbox_depth", "acked_seq", "last_seq")
WARN_EVERY_S = 60.0  # refused acknowledgements: one WARNING, then a count
#: events signed together in one message (version 3): the window holds several such
#: messages, so the office stores one while the next is on its way
EVENTS_PER_MESSAGE = 100


def broker_settings(config: Config) -> BrokerSettings:
    m = config.mqtt
    password = read_secret_file(m.password_file) if m.password_file else ""
    return BrokerSettings(host=m.host, port=m.port, username=m.username, password=password,
                          tls=m.tls, ca_file=m.ca_file, cert_file=m.cert_file,
                          key_file=m.key_file, keepalive_s=m.keepalive_s,
                          reconnect_max_s=m.reconnect_max_s)


def _state(value: Any) -> Any:
    return value.get("state") if isinstance(value, dict) else value


def wire_status(door: dict[str, Any], *, names: bool = False) -> dict[str, Any]:
    """The daemon's status dict in the wire form of schemas/status.json (no internals).

    The member's name goes out only with `names` ([mqtt] homeassistant_show_names): the status
    is for Home Assistant, whose recorder keeps it beyond the door's retention, and the office
    has the name in the events already.
    """
    out: dict[str, Any] = {}
    lock = _state(door.get("lock"))
    if lock in ("locked", "released"):
        out["lock"] = lock
    contact = _state(door.get("door_contact", door.get("door_state")))
    if contact in ("open", "closed", "unknown"):
        out["door_state"] = contact
    readers = door.get("readers")
    if isinstance(readers, dict):
        out["readers"] = {
            name: ("online" if (r.get("online") if isinstance(r, dict) else r in
                                (True, "online")) else "offline")
            for name, r in readers.items()}
    clock = door.get("clock")
    trusted = clock.get("trusted") if isinstance(clock, dict) else door.get("clock_trusted")
    if isinstance(trusted, bool):
        out["clock_trusted"] = trusted
    last = door.get("last_decision", door.get("last_access"))
    if isinstance(last, dict):
        keys = ("ts", "reader", "result", "reason", "plan") + (("member_name",) if names else ())
        out["last_access"] = {k: last.get(k) for k in keys}
    return out


class Uplink:
    """MQTT uplink of one door. See docs/protocol.md for what goes over the wire."""

    def __init__(self, config: Config, journal_path: Path, rules_path: Path, *,
                 status_provider: Callable[[], dict[str, Any]],
                 on_event: Callable[[Event], None],
                 on_remote_release: Callable[[str, float], None],
                 door: DoorSpec | None = None, rules_owner: bool = True,
                 other_journals: dict[str, Path] | None = None) -> None:
        """The uplink of `door` (default: the configuration's first). On a Pi with several
        doors each has its own; one of them, `rules_owner`, applies the site's rules to the
        shared rule cache, reading the host's changes from every door's journal
        (`other_journals`)."""
        self.config = config
        self.spec = door or config.door_spec()
        self.door = self.spec.id
        self.rules_owner, self.other_journals = rules_owner, dict(other_journals or {})
        self.journal_path, self.rules_path = journal_path, rules_path
        self.status_provider, self.on_event = status_provider, on_event
        self.on_remote_release = on_remote_release
        m = config.mqtt
        self.topics = Topics(m.topic_prefix, config.site.id, self.door)
        self.keys = PublicKeys.load(m.rules_public_key_file) if m.rules_public_key_file else None
        self.settings = broker_settings(config)
        self.clock = ClockTrust(config.clock.trust, config.clock.not_before)
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"connected": False, "last_error": None,
                                       "outbox_depth": None, "acked_seq": None,
                                       "rule_version": None, "last_rules": None,
                                       "acks_refused": 0, "last_ack_at": None}
        self._acks_warned_at = -WARN_EVERY_S

    # -- the daemon's side --------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def notify(self) -> None:
        """A journal commit happened: publish it now."""
        self._wake.set()

    def state(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._state)

    def _set(self, **changes: Any) -> None:
        with self._lock:
            self._state.update(changes)

    # -- paho's thread: hand over, never work --------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self._set(connected=False, last_error=f"connection refused: {rc}")
            log.warning("broker %s refused the connection: %s", self.settings, rc)
            return
        t = self.topics
        subs = [(t.ack, 1), (t.command, 1)]
        if self.rules_owner:
            subs += [(t.rules_snapshot, 1), (t.rules_delta, 1)]
        if self.config.mqtt.homeassistant_allow_release:
            subs.append((t.ha_release, 1))
        client.subscribe(subs)
        self._inbox.put(("connected", None))
        self._wake.set()

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        """The broker cannot be reached at all: say so once per outage, then keep quiet
        (paho retries with back-off; events wait in the journal)."""
        with self._lock:
            first = not self._state.get("unreachable")
            self._state.update(connected=False, unreachable=True,
                               last_error=f"broker {self.settings} unreachable")
        if first:
            log.warning("broker %s unreachable; retrying with back-off, events wait in the "
                        "journal", self.settings)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._inbox.put(("disconnected", str(rc)))
        self._wake.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put(("message", (msg.topic, msg.payload)))
        self._wake.set()

    # -- the worker -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._work()
        except Exception:
            log.exception("the uplink stopped on an unexpected error; the door goes on")
            self._set(connected=False, last_error="uplink crashed (see log)")

    def _work(self) -> None:
        m = self.config.mqtt
        self.journal = Journal(self.journal_path, self.config.site.id, self.door)
        self.rules = RuleCache(self.rules_path)
        self.others = {d: Journal(p, self.config.site.id, d, readonly=True)
                       for d, p in self.other_journals.items()} if self.rules_owner else {}
        self.applier = RuleApplier(self.rules, self.keys, site=self.config.site.id,
                                   door=self.door, journal=self.journal,
                                   max_bytes=m.rules_max_bytes, others=self.others)
        self.commands = CommandHandler(self.rules.db.conn, self.keys,
                                       site=self.config.site.id, door=self.door,
                                       now=self._trusted_now)
        client_id = m.client_id or f"accessd-{self.config.site.id}-{self.door}"
        if m.client_id and self.config.several_doors:
            client_id = f"{m.client_id}-{self.door}"  # one broker session per door
        client = new_client(self.settings, client_id, max_inflight=m.outbox_window)
        client.will_set(self.topics.status, encode(self._offline()), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        self.client = client
        self.journal_id = self.journal.journal_id or self.journal.new_identity()
        self.door_key = self._door_key()
        if self.keys is None:
            log.warning("no [mqtt] rules_public_key_file: no office can acknowledge events "
                        "here, so they wait in the journal ('accessd status' counts them)")
        record = "homeassistant.json" if self.spec is self.config.doors[0] else \
            f"homeassistant-{self.door}.json"
        self.discovery = Discovery(self.topics, Options.from_config(self.config, self.spec),
                                   DiscoveryRecord(self.config.storage.dir / record),
                                   enabled=m.homeassistant_discovery)
        self.outbox = Outbox(self.journal, self._send, window=m.outbox_window,
                             ack_timeout_s=m.ack_timeout_s)
        if self.keys is None:
            self.outbox.expect_no_acks()  # said above, once: no resend warnings to follow
        self._refresh()
        connect(client, self.settings, clean_start=True)
        last_status, last_check, last_seen = 0.0, 0.0, None
        try:
            while not self._stopping.is_set():
                self._wake.wait(TICK_S)
                self._wake.clear()
                self._drain()
                self.outbox.tick()
                while self.outbox.pump():
                    self._drain()  # acks arriving during a long catch-up
                now = time.monotonic()
                if self.outbox.connected and now - last_check >= STATUS_CHECK_S:
                    last_check = now
                    status = self._status()
                    seen = {k: v for k, v in status.items() if k not in VOLATILE}
                    if seen != last_seen or now - last_status >= m.status_interval_s:
                        self._publish(self.topics.status, status, retain=True)
                        last_status, last_seen = now, seen
                self.discovery.poll()
                self._refresh()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            if self.outbox.connected:
                info = self.client.publish(self.topics.status, encode(self._offline()), qos=1,
                                           retain=True)
                info.wait_for_publish(2.0)
            self.client.disconnect()
        except (RuntimeError, ValueError, OSError) as exc:
            log.debug("while disconnecting: %s", exc)
        self.client.loop_stop()
        self.journal.close()
        for j in self.others.values():
            j.close()
        self.rules.close()
        self._set(connected=False)

    def _drain(self) -> None:
        while True:
            try:
                kind, data = self._inbox.get_nowait()
            except queue.Empty:
                return
            try:
                self._dispatch(kind, data)
            except Exception:
                log.exception("uplink: handling %s failed", kind)

    def _dispatch(self, kind: str, data: Any) -> None:
        if kind == "connected":
            log.info("connected to the broker %s", self.settings)
            self._set(unreachable=False)
            self._set(connected=True, last_error=None)
            self.outbox.on_connected()
            self._publish(self.topics.status, self._status(), retain=True)
            self.discovery.on_connected(
                lambda topic, body: self.client.publish(topic, body, qos=1, retain=True))
            if self.rules.version == 0 and self.rules_owner:
                self._request_snapshot("no rules yet")
        elif kind == "disconnected":
            if self.outbox.connected:
                log.warning("lost the broker %s: %s; events wait in the journal",
                            self.settings, data)
            self.outbox.on_disconnected()
            self._set(connected=False, last_error=f"disconnected: {data}")
        elif kind == "message":
            self._message(*data)

    def _message(self, topic: str, payload: bytes) -> None:
        t = self.topics
        if topic == t.ack:
            self._ack(payload)
        elif topic in (t.rules_snapshot, t.rules_delta):
            self._rules(payload, "snapshot" if topic == t.rules_snapshot else "delta")
        elif topic == t.command:
            self._command(payload)
        elif (topic == t.ha_release and self.config.mqtt.homeassistant_allow_release
              and payload.strip() == UNLOCK.encode()):
            self._release("homeassistant", self.spec.lock.release_s)

    def _ack(self, payload: bytes) -> None:
        """An acknowledgement, resend request or rebase instruction: used only if the
        office's key signed it for this door and this journal. Acknowledgements are
        cumulative facts, so an old one replayed changes nothing."""
        try:
            if self.keys is None:
                raise ProtocolError("no_key: no office public key to check it with")
            ack = read_ack(payload, self.keys, site=self.config.site.id, door=self.door)
        except ProtocolError as exc:
            self._refused_ack(exc)
            return
        if ack["journal"] != self.journal_id:
            log.debug("acknowledgement for journal %s, not ours (%s)", ack["journal"],
                      self.journal_id)
            return
        if "rebase" in ack:
            self._rebase(ack["rebase"]["after"], ack["rebase"]["journal"])
            return
        if "acked" in ack:
            if ack["acked"] > self.journal.last_seq:
                self._journal_replaced_at_office(ack["acked"])
                return
            self.outbox.on_ack(ack["acked"])
            self._set(last_ack_at=format_ts(utcnow()))  # for status and doctor
        if "resend" in ack:
            self.outbox.on_resend(*ack["resend"])

    def _refused_ack(self, exc: ProtocolError) -> None:
        with self._lock:
            self._state["acks_refused"] += 1
            count = self._state["acks_refused"]
        now = time.monotonic()
        if now - self._acks_warned_at >= WARN_EVERY_S:
            self._acks_warned_at = now
            log.warning("ignoring an acknowledgement (%s); %d refused so far", exc, count)
        else:
            log.debug("ignoring an acknowledgement (%s)", reason_of(exc))

    def _rebase(self, after: int, new_journal: str) -> None:
        """The office knows another journal for this door: renumber ours after its numbers."""
        old = self.journal_id
        moved = self.journal.rebase(old, after, new_journal)
        if moved is None:
            return
        self.journal_id = new_journal
        self.outbox.on_rebased(self.journal.acked_seq)
        log.warning("the office asked to renumber this door's journal after %d (it holds "
                    "that many events of a previous journal): %d entries renumbered",
                    after, moved)
        self._emit(Event(EventType.JOURNAL_RENUMBERED, detail={
            "after": after, "renumbered": moved, "journal": new_journal, "previous": old}))

    def _journal_replaced_at_office(self, acked: int) -> None:
        """The office has numbers of this journal beyond its last one: the journal was
        restored from an old copy. Its later entries are not what the office holds under
        those numbers: take a new journal id, which the office has renumbered."""
        last = self.journal.last_seq
        self.journal_id = self.journal.new_identity()
        log.warning("the office holds events up to %d of this journal, which reached only %d "
                    "(restored from an old copy?): new journal id %s, to be renumbered",
                    acked, last, self.journal_id)
        self.outbox.restart()

    def _rules(self, payload: bytes, kind: str) -> None:
        outcome = self._apply(payload, kind)
        if outcome.applied:
            log.info("rules version %s applied (%s)", outcome.detail.get("version"), kind)
            self._emit(Event(EventType.RULES_APPLIED, reason=kind, detail=outcome.detail))
            self._publish(self.topics.status, self._status(), retain=True)
        elif outcome.ignored:
            log.debug("rules version %s already applied", outcome.detail.get("version"))
        else:
            log.warning("rule %s rejected: %s %s", kind, outcome.reason, outcome.detail)
            self._emit(Event(EventType.RULES_REJECTED, reason=outcome.reason,
                             detail={"kind": kind, **outcome.detail}))
        if outcome.request_snapshot:
            self._request_snapshot(outcome.reason or "requested")
        self._set(last_rules={"outcome": "applied" if outcome.applied else
                              "ignored" if outcome.ignored else "rejected",
                              "reason": outcome.reason, "at": format_ts(utcnow()),
                              **{k: outcome.detail.get(k) for k in ("kind", "version")}})

    def _apply(self, payload: bytes, kind: str) -> Outcome:
        """Small documents here; large ones in a child process (accessd.uplink.apply), so
        that parsing and checking megabytes never holds the daemon's GIL while taps wait."""
        key_file = self.config.mqtt.rules_public_key_file
        if len(payload) < CHILD_APPLY_BYTES or self.keys is None or key_file is None:
            return self.applier.handle(payload, kind)
        before = self.rules.version
        out = apply_in_child(payload, kind, rules=self.rules_path, journal=self.journal_path,
                             keys=key_file, site=self.config.site.id, door=self.door,
                             max_bytes=self.config.mqtt.rules_max_bytes,
                             others=self.other_journals)
        if out.get("reason") == "apply_failed" and self.rules.version != before:
            # the child died after its commit, before its answer: the rules are applied
            return Outcome(applied=True, detail={"kind": kind, "version": self.rules.version,
                                                 "have_version": before, **self.rules.counts()})
        return Outcome(applied=bool(out.get("applied")), ignored=bool(out.get("ignored")),
                       reason=out.get("reason"), detail=dict(out.get("detail") or {}),
                       request_snapshot=bool(out.get("request_snapshot")))

    def _command(self, payload: bytes) -> None:
        outcome = self.commands.check(payload)
        if not outcome.accepted:
            log.warning("command rejected: %s %s", outcome.reason, outcome.detail)
            self._emit(Event(EventType.COMMAND_REJECTED, reason=outcome.reason,
                             detail=outcome.detail))
            return
        cmd = outcome.command
        if cmd["type"] == "release":
            self._release(cmd["operator"], float(cmd.get("seconds",
                                                         self.spec.lock.release_s)))
        elif cmd["type"] == "request_snapshot":
            self._request_snapshot(f"asked by {cmd['operator']}")

    def _release(self, operator: str, seconds: float) -> None:
        try:
            self.on_remote_release(operator, seconds)
        except Exception:
            log.exception("the daemon failed to carry out a remote release")

    def _emit(self, event: Event) -> None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("the daemon failed to journal %s", event.type)

    def _request_snapshot(self, reason: str) -> None:
        self._publish(self.topics.rules_request, {
            "v": 1, "site": self.config.site.id, "door": self.door,
            "have_version": self.rules.version, "reason": reason[:200]})

    # -- publishing ---------------------------------------------------------------------
    def _door_key(self) -> DoorKey | None:
        """This door's signing key, made here at the first start. Without it no event can
        go out (rules and commands still come in): said once, at ERROR."""
        try:
            return DoorKey.load_or_create(self.spec.door_key_file)
        except (AccessdError, OSError) as exc:
            log.error("cannot use the door key: %s; events wait in the journal", exc)
            self._set(last_error=f"door key: {exc}")
            return None

    def _send(self, entries: list[tuple[JournalEntry, int | None]]) -> int:
        """The outbox's entries, signed by the door's key: a version 3 message carries up to
        EVENTS_PER_MESSAGE of them under one signature (a live tap goes alone, a backlog
        goes in batches); `event_version = 2` sends each alone, for an older office."""
        if self.door_key is None:
            return 0
        payloads = [event_message(entry, self.journal_id, floor) for entry, floor in entries]
        sent = 0
        for count, body in event_messages(self.door_key, payloads,
                                          version=self.config.mqtt.event_version,
                                          max_events=EVENTS_PER_MESSAGE):
            if self.client.publish(self.topics.event, body, qos=1).rc != mqtt.MQTT_ERR_SUCCESS:
                break
            sent += count
        return sent

    def _publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
        info = self.client.publish(topic, encode(payload), qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.debug("publish to %s deferred: %s", topic, mqtt.error_string(info.rc))

    def _offline(self) -> dict[str, Any]:
        return {"v": 1, "online": False, "site": self.config.site.id, "door": self.door}

    def _status(self) -> dict[str, Any]:
        try:
            door = wire_status(self.status_provider(),
                               names=self.config.mqtt.homeassistant_show_names)
        except Exception:
            log.exception("the daemon's status provider failed")
            door = {}
        return {**door, "v": 1, "online": True, "site": self.config.site.id,
                "door": self.door, "ts": format_ts(utcnow()),
                "rule_version": self.rules.version, "outbox_depth": self.journal.depth(),
                "acked_seq": self.journal.acked_seq, "last_seq": self.journal.last_seq,
                "journal": self.journal_id}

    def _refresh(self) -> None:
        self._set(outbox_depth=self.journal.depth(), acked_seq=self.outbox.acked,
                  rule_version=self.rules.version, journal=self.journal_id)

    def _trusted_now(self) -> datetime | None:
        now = utcnow()
        return now if self.clock.trusted(now) else None

