"""The door controller: a card presentation in, a lock pulse and a journal entry out.

Everything that reaches the door (card reads, the exit button, the door contact, manual and
remote releases) goes through here, one at a time under a lock, so the decision, the relay and
the journal see one consistent order. Under that lock a tap only decides, drives the relay and
hands its events to the journal's writer (accessd/store/writer.py), which commits them in
groups from its own thread: neither this member nor the next one ever waits for the SD card.
The listeners (the uplink, the status's counters and last decision) hear of an entry only once
it is durable, in sequence order, from the writer's thread.

If the journal cannot be written (disk full, read-only), the door keeps deciding from the
cache: the writer holds the events in order in a bounded memory buffer, an alarm is raised, and
recording resumes with the held events, in order, as soon as the disk accepts writes again.
What is still held when the daemon stops is spooled to a file for the next start.

The door never stops deciding. A stored value that means nothing (a published schedule with
an unknown zone, a member row with an unknown plan or an impossible date) is reported once
(`alarm.rule_cache`) and worked around: the configured schedule applies, the card is refused
(`invalid_record`). Any other error while handling a card ends in a denial with the reason
`internal_error`, journalled like any tap, with an `alarm.internal_error` event, the alarm
output and the traceback in the log once; the lock is not released.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from accessd.cards.gate import CardGate, Checked
from accessd.clock import ClockTrust
from accessd.config import UnlockConfig
from accessd.credentials import CredentialHasher, short
from accessd.daemon.ruleview import RuleView
from accessd.decision import GRANT_REASONS, Decision, Plan, Reason, decide
from accessd.door.mode import RELEASED, DoorMode, Hold, Mode, ModeState
from accessd.errors import CorruptRecord
from accessd.events import Event, EventType, JournalEntry, utcnow
from accessd.guard import UnknownCardGuard
from accessd.readers.base import CardRead, ReaderStatus
from accessd.schedule import Schedule
from accessd.store import spool
from accessd.store.cards import CardStore
from accessd.store.journal import Journal
from accessd.store.rules import RuleCache
from accessd.store.writer import CLOSE_S, JournalWriter

log = logging.getLogger(__name__)

ERROR_ALARM_S = 60.0  # the internal_error alarm stays on this long after the last failure


class LockPort(Protocol):
    @property
    def released(self) -> bool: ...

    def release(self, seconds: float | None = None) -> None: ...

    def lock(self) -> None: ...

    def hold(self, held: bool) -> None: ...


class FeedbackPort(Protocol):
    def granted(self) -> None: ...

    def denied(self) -> None: ...

    def alarm(self, on: bool) -> None: ...


class DoorPort(Protocol):
    """The pure door state machine (accessd.door.monitor.DoorStateMachine)."""

    def access_granted(self, now: float, window_s: float) -> None: ...

    def exit_requested(self, now: float, window_s: float) -> None: ...

    def held_unlocked(self, unlocked: bool) -> None: ...


@dataclass
class Capture:
    """A pending request from `accessd enroll` to take the next card on a reader.

    One capture may wait at several doors' controllers (any reader of a Pi): the first card
    claims it, the others leave it."""

    reader: str | None
    done: threading.Event = field(default_factory=threading.Event)
    read: CardRead | None = None
    _claim: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, read: CardRead) -> bool:
        with self._claim:
            if self.done.is_set():
                return False
            self.read = read
            self.done.set()
            return True


@dataclass
class Counters:
    """`granted` and `denied` count decisions whose entry is journalled (durable), as the
    status shows them; `decided` counts decisions taken, journalled or not (the n-th decision
    is the n-th access entry journalled); `internal_errors` counts failures while handling a
    card, at once."""

    granted: int = 0
    denied: int = 0
    decided: int = 0
    internal_errors: int = 0


class DoorController:
    def __init__(
        self,
        *,
        site: str,
        door: str,
        rules: RuleCache,
        journal: Journal,
        hasher: CredentialHasher,
        clock: ClockTrust,
        schedule: Schedule,
        lock: LockPort,
        release_s: float,
        guard_factory: Callable[[], UnknownCardGuard],
        door_monitor: Any | None = None,
        feedback: FeedbackPort | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = utcnow,
        cards: CardGate | None = None,
        unlock: UnlockConfig | None = None,
    ) -> None:
        self.site, self.door = site, door
        self.rules, self.hasher, self.clock = rules, hasher, clock
        self.config_schedule = schedule
        self.lock_port, self.release_s = lock, release_s
        self.door_monitor, self.feedback = door_monitor, feedback
        self.monotonic, self.wallclock = monotonic, wallclock
        self._guard_factory = guard_factory
        self._guards: dict[str, UnknownCardGuard] = {}
        self._mutex = threading.RLock()
        self._captures: list[Capture] = []
        self.readers: dict[str, ReaderStatus] = {}
        self.counters = Counters()
        self.listeners: list[Callable[[JournalEntry], None]] = []
        self.last_trusted: datetime | None = journal.latest_trusted_ts()
        self.last_decision: dict[str, Any] | None = None  # the last one journalled
        self.writer = JournalWriter(journal, on_durable=self._durable, wallclock=wallclock)
        self.view = RuleView(rules, schedule, self._rule_problem)
        self._tracebacks: set[tuple[str, str]] = set()  # errors whose traceback was logged
        self._error_at: float | None = None  # monotonic instant of the last internal error
        self.cards = cards or CardGate(CardStore(rules.db.conn))
        self.mode = DoorMode(unlock)
        self.mode_state = ModeState(Mode.LOCKED, "start")
        self._mode_by: str | None = None  # who changed the hold, for the next door.mode

    # -- card presentations -------------------------------------------------------------
    def on_card(self, read: CardRead) -> Decision | None:
        """Decide, release if granted, then journal. Returns None when enrolment took it.

        Never raises: a failure anywhere is a denial (`internal_error`) that is journalled.
        """
        try:
            with self._mutex:
                if self._take_for_capture(read):
                    return None
                decision = self._handle(read)
        except Exception as exc:  # task boundary: the last net under the stages' own nets
            self._log_traceback_once(exc, "handling a card failed")
            return Decision(False, Reason.INTERNAL_ERROR)
        if self.feedback:
            try:
                (self.feedback.granted if decision.granted else self.feedback.denied)()
            except Exception as exc:
                self._log_traceback_once(exc, "the buzzer/LED feedback failed")
        log.info("access %s: %s (reader %s%s)", "granted" if decision.granted else "denied",
                 decision.reason, read.reader,
                 f", member {decision.member_id}" if decision.member_id else "")
        return decision

    def _handle(self, read: CardRead) -> Decision:
        mono, now = self.monotonic(), self.wallclock()
        trusted, credential, card = False, None, None
        extra: list[Event] = []
        try:
            trusted = self.clock.trusted(now)
            if trusted:
                self.last_trusted = now
            decision, credential, extra, card = self._decide(read, mono, now, trusted)
        except Exception as exc:
            decision = Decision(False, Reason.INTERNAL_ERROR)
            extra = self._internal_error(exc, "deciding a card", mono, now, trusted)
        if decision.granted and not self._release(mono, now, trusted, extra):
            decision = replace(decision, granted=False, reason=Reason.INTERNAL_ERROR)
        first_in = (decision.granted and decision.plan is Plan.SUBSCRIBER
                    and read.direction == "entry"
                    and self.mode.came_in(now, trusted, self.view.schedule()))
        detail: dict[str, Any] = {"direction": read.direction, "technology": read.technology,
                                  **(card.detail if card is not None else {})}
        if decision.reason is Reason.INTERNAL_ERROR and extra:
            detail["error"] = extra[-1].detail.get("error")
        access = Event(
            type=EventType.ACCESS_GRANTED if decision.granted else EventType.ACCESS_DENIED,
            ts=now, reader=read.reader, member_id=decision.member_id,
            member_name=decision.member_name,
            plan=str(decision.plan) if decision.plan else None,
            result="granted" if decision.granted else "denied",
            reason=str(decision.reason),
            credential=short(credential) if credential else None,
            clock_trusted=trusted, detail=detail,
        )
        self.counters.decided += 1
        self.record(access, *extra)
        if card is not None:
            self.cards.settle(card)
        if first_in:
            self.tick_mode("first_in")
        return decision

    def _decide(self, read: CardRead, mono: float, now: datetime, trusted: bool
                ) -> tuple[Decision, str | None, list[Event], Checked | None]:
        """The decision, the card's keyed hash, alarm events that go with it, and what an
        authenticated card proved (to journal, and to settle once journalled)."""
        guard = self._guards.get(read.reader)
        if guard is None:
            guard = self._guards[read.reader] = self._guard_factory()
        locked_out = guard.locked_out(mono)
        identified = not locked_out and self.cards.identifies(read)
        credential = self.hasher(read.uid) if identified else None
        self.view.refresh()  # once per tap: what a rule sync or the host changed
        access = self.view.access(self.door)
        try:
            record = None if credential is None else self.view.lookup(credential, access)
        except CorruptRecord as exc:
            return self._unreadable(exc, read.direction), credential, [], None
        card = self.cards.check(read, credential, record)
        decision = decide(
            record,
            now=now if trusted else self.last_trusted,
            clock_trusted=trusted,
            schedule=self.view.schedule(),
            direction=read.direction,
            locked_out=locked_out,
            card=card.facts,
            door=access,
        )
        extra = []
        suspicious = decision.reason in (Reason.UNKNOWN_CREDENTIAL, Reason.AUTHENTICATION_FAILED)
        if suspicious and guard.record_unknown(mono):
            extra.append(Event(
                type=EventType.READER_LOCKOUT, ts=now, reader=read.reader,
                reason="unknown_card_burst", clock_trusted=trusted,
                detail={"lockout_s": guard.lockout_s, "limit": guard.limit,
                        "window_s": guard.window_s}))
            log.warning("reader %s locked out for %.0f s after a burst of unknown cards",
                        read.reader, guard.lockout_s)
        return decision, credential, extra, card

    def _release(self, mono: float, now: datetime, trusted: bool, extra: list[Event]) -> bool:
        """Release for a grant; False when the relay failed and the member was not let in."""
        try:
            self.lock_port.release(self.release_s)
            if self.door_monitor is not None:
                self.door_monitor.access_granted(mono, self.release_s)
            return True
        except Exception as exc:
            extra += self._internal_error(exc, "releasing the lock", mono, now, trusted)
            try:
                if self.lock_port.released:
                    return True  # the door is open: journal the grant that it is
                self.lock_port.lock()
            except Exception as again:
                self._log_traceback_once(again, "driving the lock after a failed release")
            return False

    def _unreadable(self, exc: CorruptRecord, direction: str) -> Decision:
        """The decision for a card whose stored row cannot be used: refused, never granted,
        except at an exit reader (a known card opens from inside, as with any row).

        What the row still says for certain is kept: revoked or suspended is refused with that
        reason; anything else with `invalid_record`. (The view reported the row once.)
        """
        mid = exc.member_id if isinstance(exc.member_id, str) else None
        name = exc.member_name if isinstance(exc.member_name, str) else None
        if direction == "exit":
            reason = Reason.EXIT
        elif exc.credential_status == "revoked":
            reason = Reason.CREDENTIAL_REVOKED
        elif exc.member_status == "revoked":
            reason = Reason.MEMBER_REVOKED
        elif "suspended" in (exc.credential_status, exc.member_status):
            reason = Reason.MEMBER_SUSPENDED
        else:
            reason = Reason.INVALID_RECORD
        return Decision(reason in GRANT_REASONS, reason, mid, name, None)

    def schedule(self) -> Schedule:
        """The office's published schedule if usable, else the configuration's."""
        self.view.refresh()
        return self.view.schedule()

    def rule_version(self) -> int | None:
        """The version of the rules held; None when the stored value is unusable (reported)."""
        return self.view.version()

    @property
    def problems(self) -> dict[str, str]:
        """What in the rule cache cannot be used now (for status)."""
        return dict(self.view.problems)

    def _rule_problem(self, reason: str, error: str, fields: dict[str, Any]) -> None:
        """Journal `alarm.rule_cache` and warn (the view calls this once per bad value)."""
        log.warning("rule cache: %s: %s", reason, error)
        self.record(self.event(EventType.RULE_CACHE_ALARM, reason=reason,
                               detail={"error": error[:500]}, **fields))

    def _internal_error(self, exc: BaseException, doing: str, mono: float, now: datetime,
                        trusted: bool) -> list[Event]:
        """Count, log (traceback once), sound the alarm; the alarm event when it turns on."""
        self.counters.internal_errors += 1
        self._log_traceback_once(exc, f"{doing} failed; the card is refused")
        was_on = self._error_at is not None and mono - self._error_at < ERROR_ALARM_S
        self._error_at = mono
        error = f"{type(exc).__name__}: {exc}"[:500]
        if was_on:
            return []
        return [Event(type=EventType.INTERNAL_ERROR_ALARM, ts=now, reason="internal_error",
                      clock_trusted=trusted, detail={"error": error, "while": doing})]

    def _log_traceback_once(self, exc: BaseException, what: str) -> None:
        key = (type(exc).__name__, str(exc)[:200])
        if key in self._tracebacks:
            log.error("%s: %s: %s (traceback logged before)", what, key[0], exc)
            return
        if len(self._tracebacks) < 1000:
            self._tracebacks.add(key)
        log.error("%s: %s: %s", what, key[0], exc, exc_info=exc)

    # -- enrolment by presenting a card -------------------------------------------------
    def capture_next(self, reader: str | None, timeout: float) -> CardRead | None:
        """Divert the next card presented (on `reader`, or any) to the caller: no decision."""
        cap = Capture(reader)
        self.add_capture(cap)
        log.info("enrolment: the next card on %s is taken for enrolment (%.0f s at most)",
                 reader or "any reader", timeout)
        try:
            cap.done.wait(timeout)
        finally:
            self.drop_capture(cap)
        return cap.read

    def add_capture(self, cap: Capture) -> None:
        """Wait for the next card on `cap.reader` (or any reader of this door) for `cap`."""
        with self._mutex:
            self._captures.append(cap)

    def drop_capture(self, cap: Capture) -> None:
        with self._mutex:
            if cap in self._captures:
                self._captures.remove(cap)

    @property
    def captures_waiting(self) -> int:
        """Enrolment requests waiting for a card (`capture_next` calls not yet served)."""
        with self._mutex:
            return len(self._captures)

    def _take_for_capture(self, read: CardRead) -> bool:
        for cap in list(self._captures):
            if cap.reader in (None, read.reader):
                self._captures.remove(cap)
                if cap.claim(read):
                    return True
        return False

    # -- door, exit, releases -------------------------------------------------------------
    def on_exit_request(self, source: str = "exit_button") -> None:
        with self._mutex:
            self.lock_port.release(self.release_s)
            if self.door_monitor is not None:
                self.door_monitor.exit_requested(self.monotonic(), self.release_s)
            self.record(self.event(EventType.EXIT_REQUEST, reader=source, result="granted",
                                    reason="exit_request"))

    def manual_release(self, operator: str, seconds: float | None = None, *,
                       remote: bool = False, detail: dict[str, Any] | None = None) -> None:
        """Release on a person's order (CLI `open` or a signed remote command), logged."""
        seconds = max(seconds or self.release_s, 3.0)
        with self._mutex:
            self.lock_port.release(seconds)
            if self.door_monitor is not None:
                self.door_monitor.manual_release(self.monotonic(), seconds)
            etype = EventType.REMOTE_RELEASE if remote else EventType.MANUAL_RELEASE
            log.info("%s release for %g s ordered by %s", "remote" if remote else "manual",
                     seconds, operator)
            self.record(self.event(etype, result="granted", reason="operator", detail={
                "operator": operator, "seconds": seconds, **(detail or {})}))
            now = self.wallclock()
            if not remote and self.mode.came_in(now, self.clock.trusted(now),
                                                self.view.schedule()):
                self.tick_mode("first_in")  # the host is in

    def on_reader_status(self, status: ReaderStatus) -> None:
        with self._mutex:
            previous = self.readers.get(status.reader)
            self.readers[status.reader] = status
            if previous is not None and previous.online == status.online:
                return
            if previous is None and status.online:
                return  # first sighting of a healthy reader is not news
            etype = EventType.READER_ONLINE if status.online else EventType.READER_OFFLINE
            self.record(self.event(etype, reader=status.reader,
                                    detail={"detail": status.detail}))

    def record_door_events(self, events: list[Event]) -> None:
        with self._mutex:
            self.record(*events)

    def event(self, etype: EventType, **kw: Any) -> Event:
        """An event stamped now, with the clock's trust at this instant."""
        now = self.wallclock()
        return Event(type=etype, ts=now, clock_trusted=self.clock.trusted(now), **kw)

    # -- the door's mode (accessd.door.mode) ----------------------------------------------
    def tick_mode(self, why: str | None = None) -> ModeState:
        """Put the door in the mode its schedule, the host's hold and the clock say, and
        journal a change (`door.mode`, with `why`). Called on every tick; never raises."""
        try:
            with self._mutex:
                now = self.wallclock()
                trusted = self.clock.trusted(now)
                self.view.refresh()
                new = self.mode.evaluate(now, trusted, self.view.schedule())
                old = self.mode_state
                if new.mode is old.mode:
                    self.mode_state = new
                    return new
                detail: dict[str, Any] = {"mode": str(new.mode), "previous": str(old.mode),
                                          "why": why or new.why}
                if self._mode_by is not None:
                    detail["operator"] = self._mode_by
                    self._mode_by = None
                event = Event(type=EventType.DOOR_MODE, ts=now, reason=why or new.why,
                              clock_trusted=trusted, detail=detail)  # stamped before the relay
                released = new.mode in RELEASED
                self.lock_port.hold(released)
                if self.door_monitor is not None:
                    self.door_monitor.held_unlocked(released)
                self.mode_state = new
                log.warning("door %s: %s (%s)", self.door, new.mode, detail["why"])
                self.record(event)
                return new
        except Exception as exc:  # the relay or the journal: the door ends locked
            self._log_traceback_once(exc, "changing the door's mode failed")
            try:
                self.lock_port.hold(False)
            except Exception as again:
                self._log_traceback_once(again, "ending a hold after a failure")
            return self.mode_state

    def set_hold(self, hold: Hold, operator: str) -> ModeState:
        """The host holds the door open or locked until further notice, or gives it back to
        its schedule (`auto`); the change of mode is journalled with the operator."""
        with self._mutex:
            self.mode.hold = hold
            self._mode_by = operator
            state = self.tick_mode(f"host_{hold}")
            self._mode_by = None
            return state

    # -- the journal ----------------------------------------------------------------------
    @property
    def journal(self) -> Journal:
        """The journal the writer commits to (and status reads)."""
        return self.writer.journal

    @journal.setter
    def journal(self, journal: Journal) -> None:
        self.writer.journal = journal  # taken by the next commit (tests: a failing disk)

    def record(self, *events: Event) -> None:
        """Hand events to the journal's writer, in order, as one group: memory only, the
        commit follows from the writer's thread (held in order while the journal cannot be
        written)."""
        with self._mutex:
            self.writer.submit(list(events))

    def flush(self, timeout: float = 10.0) -> bool:
        """Have what waits written now and wait for it: True once everything recorded
        before the call is durable; False when the journal refused it (held) or on timeout.
        Not for the door's path: tests, and the daemon's start and stop."""
        return self.writer.flush(timeout)

    def close(self, timeout: float = CLOSE_S) -> bool:
        """Stop the writer after it wrote what it holds (one last try if the journal is
        down); True when nothing is left held. `spool` saves what is."""
        return self.writer.close(timeout)

    def _durable(self, entries: list[JournalEntry]) -> None:
        """From the writer's thread, once `entries` are committed: the status's counters and
        last decision, then the listeners, in sequence order."""
        for entry in entries:
            e = entry.event
            if e.type in (EventType.ACCESS_GRANTED, EventType.ACCESS_DENIED):
                if e.type is EventType.ACCESS_GRANTED:
                    self.counters.granted += 1
                else:
                    self.counters.denied += 1
                self.last_decision = {"ts": e.ts, "reader": e.reader, "result": e.result,
                                      "reason": e.reason, "plan": e.plan,
                                      "member_name": e.member_name, "seq": entry.seq}
            for listener in self.listeners:
                try:
                    listener(entry)
                except Exception:
                    log.exception("journal listener failed")

    def alarms(self) -> list[str]:
        """What the site should be alerted to now (buzzer/LED, status)."""
        mono = self.monotonic()
        active = [f"reader_lockout:{name}" for name, g in self._guards.items()
                  if g.locked_out(mono)]
        if not self.writer.healthy:
            active.append("journal_unavailable")
        if self._error_at is not None and mono - self._error_at < ERROR_ALARM_S:
            active.append("internal_error")
        if self.door_monitor is not None:
            active += list(self.door_monitor.alarms)
        return active

    def door_input(self, handler: Callable[[float], list[Any]], at: float,
                   convert: Callable[[Any], Event]) -> None:
        """Feed a door contact edge (or a timer tick) to the state machine and journal it."""
        with self._mutex:
            self.record(*(convert(e) for e in handler(at)))

    def spool(self, folders: list[Path], timeout: float = CLOSE_S) -> Path | None:
        """At stop: end the writer (`close`: it writes what it can), then save the events the
        journal refused to a spool file for the next start (accessd/store/spool.py). Returns
        the file, or None when nothing was left or no folder accepted it (logged at ERROR)."""
        self.close(timeout)
        return spool.save(self.writer.take_held(), folders)

    def journal_state(self) -> dict[str, Any]:
        """The journal's numbers (durable entries, read in one transaction) and health: for
        status, never waiting for the door's lock. `held_in_memory`: events recorded and not
        yet durable (the next group commit's, or all of them while the journal refuses
        writes)."""
        return {**self.journal.state(), "writable": self.journal_ok,
                "held_in_memory": self.pending_events}

    @property
    def journal_ok(self) -> bool:
        return self.writer.healthy

    @property
    def pending_events(self) -> int:
        return self.writer.held

    @property
    def capturing(self) -> bool:
        """Whether an `accessd enroll --present` is waiting for the next card."""
        return bool(self._captures)

