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
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from accessd.config import ReaderConfig
from accessd.readers.base import Technology
from accessd.readers.threaded import Backoff, ThreadedReader
from accessd.readers.uid import VALID_UID_BYTES

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
    """nfcpy logs each failed open at ERROR; while we retry, that is our job, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not message.startswith(("no reader available on path",
                                        "searching for reader on path"))


def _tame_nfcpy_logging() -> None:
    nfc_log = logging.getLogger("nfc")
    if nfc_log.level == logging.NOTSET:
        nfc_log.setLevel(logging.INFO)  # DEBUG records carry raw UIDs
    clf_log = logging.getLogger("nfc.clf")
    if not any(isinstance(f, _DropRetryNoise) for f in clf_log.filters):
        clf_log.addFilter(_DropRetryNoise())


def _nfcpy_frontend(path: str) -> Any:
    import nfc  # lazily: needs libusb1 and friends

    _tame_nfcpy_logging()
    return nfc.ContactlessFrontend(path)


class NfcReader(ThreadedReader):
    """A `Reader` for ISO 14443-A and FeliCa cards on the nfcpy device at `config.port`."""

    def __init__(self, config: ReaderConfig, *, frontend_factory: FrontendFactory | None = None,
                 reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0,
                 poll_interval_s: float = 0.1) -> None:
        super().__init__(config.name, direction=config.direction, hold_off_s=config.hold_off_s)
        self.path = config.port or "usb"
        self.poll_interval_s = poll_interval_s
        self._factory = frontend_factory or _nfcpy_frontend
        self._backoff = Backoff(reconnect_min_s, reconnect_max_s)

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
        technology = _TECHNOLOGY.get(tag_type)
        identifier = bytes(getattr(tag, "identifier", b"") or b"")
        if technology is None:
            log.info("reader %s: ignored a %s tag", self.name, tag_type)
        else:
            self._report(identifier, technology, tag_type)
        return False  # no nfcpy presence loop: HoldOff handles a card left on the reader


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
