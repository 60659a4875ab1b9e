"""Whether the wall clock can be trusted.

A Raspberry Pi has no battery-backed clock: after a power cut it boots at the last saved time
(fake-hwclock) or in 1970 until NTP syncs. Hour-dependent rules must not trust such a clock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from datetime import UTC, date, datetime
from pathlib import Path

log = logging.getLogger(__name__)
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_pad", ctypes.c_int * 11),
    ]


def kernel_synchronised() -> bool | None:
    """The kernel's own view (set by chrony, ntpd or timesyncd); None where unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not tx.status & _STA_UNSYNC


def sync_source() -> str | None:
    """What synchronised the clock, for a person: "NTP, systemd-timesyncd" or "NTP, kernel
    (chrony/ntpd)"; None when nothing says it is synchronised."""
    if TIMESYNCD_FLAG.exists():
        return "NTP, systemd-timesyncd"
    if kernel_synchronised():
        return "NTP, kernel (chrony, ntpd or timesyncd)"
    return None


def trust_words(trust: str, trusted: bool) -> str:
    """"trusted (NTP, systemd-timesyncd)", "not trusted: not synchronised", … for `status`."""
    if trust == "always":
        return "trusted (by configuration: [clock] trust = \"always\")"
    if trust == "never":
        return "not trusted (by configuration: [clock] trust = \"never\")"
    source = sync_source()
    if trusted:
        return f"trusted ({source or 'synchronised'})"
    if source:
        return f"not trusted: synchronised ({source}) but earlier than [clock] not_before"
    return "not trusted: not synchronised (occasional members are refused until it is)"


class ClockTrust:
    """`trust` is "auto", "always" or "never" (from [clock] trust)."""

    def __init__(self, trust: str = "auto", not_before: date = date(2026, 1, 1),
                 cache_s: float = 5.0) -> None:
        self.trust = trust
        self.not_before = datetime.combine(not_before, datetime.min.time(), tzinfo=UTC)
        self.cache_s = cache_s
        self._cached: tuple[float, bool] | None = None

    _warned = False

    def _synced(self) -> bool:
        if TIMESYNCD_FLAG.exists():
            return True
        state = kernel_synchronised()
        if state is None and not self._warned:
            self._warned = True
            log.warning("the kernel's time-sync state cannot be read (adjtimex refused); "
                        "only systemd-timesyncd's %s can mark the clock trusted",
                        TIMESYNCD_FLAG)
        return bool(state)

    def trusted(self, now: datetime | None = None) -> bool:
        if self.trust == "never":
            return False
        now = now or datetime.now(UTC)
        if now < self.not_before:
            return False
        if self.trust == "always":
            return True
        mono = time.monotonic()
        if self._cached is None or mono - self._cached[0] > self.cache_s:
            self._cached = (mono, self._synced())
        return self._cached[1]
