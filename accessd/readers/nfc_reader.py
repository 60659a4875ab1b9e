"""13.56 MHz reader (PN532, ACR122U, RC-S380...) through nfcpy.

`nfc` is imported only when the reader runs, so accessd imports on machines without libusb.

How nfcpy is driven, and why:

* `ContactlessFrontend(path)` raises `IOError(ENODEV)` when no device answers on `path`;
  that is our "offline", retried with capped exponential back-off.
* `clf.connect(rdwr=...)` polls until a tag is activated or `terminate()` returns true. It
  swallows `IOError` (device unplugged) and returns False instead: we take False as "frontend
  lost", close it and reopen.
* The identifier is taken in `on-discover`, from the anticollision answer (`sdd_res`, the
  ISO 14443-A UID; `sensf_res[1:9]`, the FeliCa IDm), and `on-discover` returns False so nfcpy
  never activates the card. A door only needs the UID, and activation costs RF round trips,
  fails on some cards (MIFARE Classic presence checks) and makes nfcpy log a WARNING per
  activation on PN532-class readers ("does not support fsd 256") - every 100 ms while a Type 4
  card rests on the reader. A card left on the reader is seen on each poll and `HoldOff` merges
  those sightings into one presentation, exactly as for the RDM6300.
* `on-connect` (tag.identifier, tag.type) is handled too, for frontends that activate anyway.
* `iterations=1` makes each sense round a single pass over the targets; `terminate()` doubles as
  the pacing between rounds (it waits `poll_interval_s` on the stop event), so polling neither
  spins the CPU nor delays `stop()`.
* nfcpy's DEBUG records contain card UIDs, so the `nfc` logger is capped at INFO unless the
  operator configured it, and its per-attempt "no reader available" ERROR is dropped: the
  reader reports that once itself.

Authenticated cards (`secure`, when `[cards] enabled`): an ISO 14443-4 card (SAK bit 0x20:
NTAG 424 DNA, DESFire, but also bank cards and phones) is activated, and `SecureCards` talks
to it while it is in the field (accessd/cards/reader.py). Cards that are not accessd's are
read by their UID as above; accessd's cards are reported with the UID their keys proved and
a `CardProof`, or as a failed proof whose UID identifies nobody. A card left on the reader is
authenticated once: its anticollision UID is held off like a UID read. A random-ID card gets
a new UID at every poll (nfcpy switches the field off between polls), so its failures are
held off under one key per card type and outcome. The host's jobs (issue, re-key, wipe) take
the next ISO 14443-4 card instead of the door (`run_on_next_card`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from accessd.config import ReaderConfig
from accessd.decision import Proof
from accessd.errors import CardError, CardRemovedError
from accessd.readers.base import Technology
from accessd.readers.threaded import Backoff, ThreadedReader
from accessd.readers.uid import VALID_UID_BYTES

if TYPE_CHECKING:
    from accessd.cards.reader import SecureCards

log = logging.getLogger(__name__)

#: ISO 14443-A at 106 kbps (MIFARE, NTAG, DESFire, phones) and FeliCa at 212 kbps.
TARGETS = ("106A", "212F")

#: nfcpy tag classes → what the credential is. Type 3 tags are FeliCa (IDm); 1, 2 and 4 found
#: through 106A carry an ISO 14443-A UID.
_TECHNOLOGY: dict[str, Technology] = {
    "Type1Tag": "iso14443a",
    "Type2Tag": "iso14443a",
    "Type4Tag": "iso14443a",
    "Type3Tag": "felica",
}

FrontendFactory = Callable[[str], Any]


class _DropRetryNoise(logging.Filter):
    """nfcpy logs each failed open at ERROR; while we retry, that is our job, once. It also
    logs each card pulled away mid-exchange ("ISO-DEP ... error"), which the journal records
    as `authentication_incomplete`, and a WARNING per activation on PN532-class readers."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (message.startswith(("no reader available on path",
                                         "searching for reader on path", "ISO-DEP"))
                    or "does not support fsd" in message)


def _tame_nfcpy_logging() -> None:
    nfc_log = logging.getLogger("nfc")
    if nfc_log.level == logging.NOTSET:
        nfc_log.setLevel(logging.INFO)  # DEBUG records carry raw UIDs
    for name in ("nfc.clf", "nfc.tag.tt4"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropRetryNoise) for f in logger.filters):
            logger.addFilter(_DropRetryNoise())


class TagTransport:
    """APDUs to an activated nfcpy Type 4 tag; a card that stops answering is
    `CardRemovedError`."""

    def __init__(self, tag: Any) -> None:
        self.tag = tag

    def exchange(self, apdu: bytes) -> bytes:
        import nfc.clf
        import nfc.tag

        try:
            answer = self.tag.transceive(bytearray(apdu))
        except (nfc.tag.TagCommandError, nfc.clf.CommunicationError) as exc:
            raise CardRemovedError(f"the card stopped answering ({exc})") from None
        if answer is None:
            raise CardRemovedError("the card stopped answering")
        return bytes(answer)


@dataclass
class CardJob:
    """Something the host wants done on the next ISO 14443-4 card (issue, re-key, wipe)."""

    run: Callable[[Any, bytes], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: CardError | None = None


def _nfcpy_frontend(path: str) -> Any:
    import nfc  # lazily: needs libusb1 and friends

    _tame_nfcpy_logging()
    return nfc.ContactlessFrontend(path)


class NfcReader(ThreadedReader):
    """A `Reader` for ISO 14443-A and FeliCa cards on the nfcpy device at `config.port`."""

    def __init__(self, config: ReaderConfig, *, frontend_factory: FrontendFactory | None = None,
                 reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0,
                 poll_interval_s: float = 0.1, secure: SecureCards | None = None) -> None:
        super().__init__(config.name, direction=config.direction, hold_off_s=config.hold_off_s)
        self.path = config.port or "usb"
        self.poll_interval_s = poll_interval_s
        self._factory = frontend_factory or _nfcpy_frontend
        self._backoff = Backoff(reconnect_min_s, reconnect_max_s)
        self.secure = secure
        self._hold_s = config.hold_off_s
        self._done: dict[bytes, float] = {}  # ISO-DEP cards handled lately (anticollision UID)
        self._jobs: deque[CardJob] = deque()
        self._jobs_lock = threading.Lock()

    def _run(self) -> None:
        while not self._stopping:
            try:
                clf = self._factory(self.path)
            except (OSError, ValueError, ImportError) as exc:  # nfcpy raises IOError(ENODEV)
                self._went_offline(f"cannot open NFC device {self.path}: {_describe(exc)}")
                if self._sleep(self._backoff.next_delay()):
                    return
                continue
            self._backoff.reset()
            self._went_online(f"NFC device {self.path} open")
            try:
                self._poll_until_lost(clf)
            finally:
                with contextlib.suppress(OSError):
                    clf.close()
            if not self._stopping and self._sleep(self._backoff.next_delay()):
                return

    def _poll_until_lost(self, clf: Any) -> None:
        rdwr = {
            "targets": list(TARGETS),
            "on-discover": self._on_discover,
            "on-connect": self._on_connect,
            "iterations": 1,
            "interval": self.poll_interval_s,
            "beep-on-connect": False,
        }
        while not self._stopping:
            try:
                result = clf.connect(rdwr=rdwr, terminate=self._terminate)
            except OSError as exc:
                self._went_offline(f"lost NFC device {self.path}: {_describe(exc)}")
                return
            if result is False and not self._stopping:
                # nfcpy logged the IOError itself and gave up on the device
                self._went_offline(f"lost NFC device {self.path} (frontend stopped answering)")
                return

    def _terminate(self) -> bool:
        return self._sleep(self.poll_interval_s)

    def _on_discover(self, target: Any) -> bool:
        """Report the card from its anticollision answer; never activate it (see module doc)."""
        brty = str(getattr(target, "brty", ""))
        sel_res, sensf_res = getattr(target, "sel_res", None), getattr(target, "sensf_res", None)
        if brty.endswith("A") and getattr(target, "sdd_res", None):
            if sel_res and sel_res[0] & 0x40:
                return False  # a phone offering peer-to-peer: its UID is random per session
            if self.secure is not None and sel_res and sel_res[0] & 0x20:
                return self._wants_activation(bytes(target.sdd_res))
            self._report(bytes(target.sdd_res), "iso14443a", "ISO 14443-A")
        elif brty.endswith("F") and sensf_res and len(sensf_res) >= 9:
            if bytes(sensf_res[1:3]) == b"\x01\xfe":
                return False  # NFC-DEP (peer-to-peer) over FeliCa, random NFCID2
            self._report(bytes(sensf_res[1:9]), "felica", "FeliCa")
        else:
            log.debug("reader %s: ignored a %s target without a usable identifier",
                      self.name, brty or "unknown")
        return False

    def _report(self, identifier: bytes, technology: Technology, what: str) -> None:
        if len(identifier) not in VALID_UID_BYTES:
            log.info("reader %s: ignored a %s card with a %d-byte identifier",
                     self.name, what, len(identifier))
            return
        self._card(identifier.hex().upper(), technology)

    def _on_connect(self, tag: Any) -> bool:
        """Report an activated tag (frontends that skip on-discover); hand it back at once."""
        tag_type = str(getattr(tag, "type", "unknown"))
        if self.secure is not None and tag_type == "Type4Tag":
            self._secure_tap(tag)
            return False
        technology = _TECHNOLOGY.get(tag_type)
        identifier = bytes(getattr(tag, "identifier", b"") or b"")
        if technology is None:
            log.info("reader %s: ignored a %s tag", self.name, tag_type)
        else:
            self._report(identifier, technology, tag_type)
        return False  # no nfcpy presence loop: HoldOff handles a card left on the reader


    # -- authenticated cards ---------------------------------------------------------------
    def _wants_activation(self, seen: bytes) -> bool:
        """Activate an ISO 14443-4 card unless it was handled within the hold-off (a card
        resting on the reader is authenticated once); a waiting host job takes any card."""
        if self._jobs:
            return True
        if len(seen) not in VALID_UID_BYTES:
            return False
        now = time.monotonic()
        last = self._done.get(seen)
        if last is not None and now - last <= self._hold_s:
            self._done[seen] = now  # the window slides while the card stays
            return False
        return True

    def _secure_tap(self, tag: Any) -> None:
        from accessd.cards.secure import is_random_id

        assert self.secure is not None
        seen = bytes(getattr(tag, "identifier", b"") or b"")
        transport = TagTransport(tag)
        job = self._next_job()
        if job is not None:
            self._run_job(job, transport, seen)
            return
        if len(seen) not in VALID_UID_BYTES:
            return
        try:
            presented = self.secure.present(transport, seen)
        finally:
            self._mark_done(seen)
        if presented is None:
            self._report(seen, "iso14443a", "ISO 14443-A")
            return
        uid, proof = presented
        if proof.proof is Proof.AUTHENTICATED:
            reported = self._card(uid.hex().upper(), proof.card, proof)  # type: ignore[arg-type]
            if reported and proof.rekey_to is not None:
                self.secure.rekey_after(transport, seen, uid, proof)
        else:  # names nobody; a random ID changes at every poll: hold off per outcome
            hold = f"{proof.card}:{proof.proof}" if is_random_id(seen) else None
            self._card(seen.hex().upper(), "iso14443a", proof, hold_key=hold)

    def _mark_done(self, seen: bytes) -> None:
        now = time.monotonic()
        self._done[seen] = now
        if len(self._done) > 256:
            self._done = {u: t for u, t in self._done.items() if now - t <= self._hold_s}

    # -- the host's jobs ----------------------------------------------------------------------
    def run_on_next_card(self, run: Callable[[Any, bytes], Any], timeout: float) -> Any:
        """Run `run(transport, anticollision UID)` on the next ISO 14443-4 card presented,
        instead of deciding on it; its result, or CardError (none within `timeout` too)."""
        job = CardJob(run)
        with self._jobs_lock:
            self._jobs.append(job)
        try:
            presented = job.done.wait(timeout)
        finally:
            with self._jobs_lock:
                if job in self._jobs:
                    self._jobs.remove(job)
        if not presented:
            raise CardError(f"no card was presented on reader {self.name} within {timeout:g} s")
        if job.error is not None:
            raise job.error
        return job.result

    @property
    def pending_jobs(self) -> int:
        """Host jobs waiting for a card (the CLI tells the host to present one)."""
        return len(self._jobs)

    def _next_job(self) -> CardJob | None:
        with self._jobs_lock:
            return self._jobs.popleft() if self._jobs else None

    def _run_job(self, job: CardJob, transport: TagTransport, seen: bytes) -> None:
        try:
            job.result = job.run(transport, seen)
        except CardRemovedError:
            job.error = CardRemovedError("the card left the field before the end: present it "
                                         "again (a half-issued card: 'accessd card wipe' first)")
        except CardError as exc:
            job.error = exc
        finally:
            job.done.set()
            self._mark_done(seen)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
