"""What every reader produces and how the daemon consumes it.

A reader runs in its own thread and calls `on_card` for each *presentation* of a card (a card
held on the reader is reported once, see `HoldOff`). It reports its health through `on_status`
so that the daemon can journal `reader.offline` / `reader.online`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from accessd.decision import Proof

Technology = Literal["em4100", "iso14443a", "felica", "simulated", "ntag424", "desfire"]


@dataclass(frozen=True, slots=True)
class CardProof:
    """What an authenticated card (NTAG 424 DNA, DESFire) proved at this presentation.

    With `proof` AUTHENTICATED, the read's `uid` is the card's real UID, proven by the keys;
    otherwise the UID is only what the card said during anticollision and identifies nobody.
    """

    proof: Proof
    card: str  # "ntag424" | "desfire"
    key_version: int | None = None
    member_ref: str | None = None  # the member the card was written for
    sun_counter: int | None = None  # SUN read counter (NTAG 424 DNA in SUN mode)
    rekey_to: int | None = None  # the reader re-keys the card to this version after deciding
    why: str = ""  # for the journal when it failed: no key, no UID


@dataclass(frozen=True, slots=True)
class CardRead:
    """One presentation of a card. `uid` is upper-case hex and must never be logged."""

    reader: str
    uid: str
    technology: Technology
    direction: Literal["entry", "exit"] = "entry"
    monotonic: float = field(default_factory=time.monotonic)
    proof: CardProof | None = None  # None: the UID is all the reader knows

    def __repr__(self) -> str:  # keep raw card numbers out of logs and tracebacks
        return f"CardRead(reader={self.reader!r}, technology={self.technology!r}, uid=<redacted>)"


@dataclass(frozen=True, slots=True)
class ReaderStatus:
    reader: str
    online: bool
    detail: str = ""


CardCallback = Callable[[CardRead], None]
StatusCallback = Callable[[ReaderStatus], None]


class Reader(Protocol):
    """A reader the daemon can start and stop; `start` returns at once (work is threaded)."""

    name: str

    def start(self, on_card: CardCallback, on_status: StatusCallback) -> None: ...

    def stop(self) -> None: ...

    @property
    def online(self) -> bool: ...


class HoldOff:
    """Suppresses repeats of the same UID on one reader within `seconds` of its last sighting.

    A card resting on an RDM6300 repeats its frame every ~100 ms; the window slides with each
    repeat so that one continuous presentation yields exactly one read.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: dict[str, float] = {}

    def admit(self, uid: str, now: float) -> bool:
        last = self._last.get(uid)
        self._last[uid] = now
        if len(self._last) > 256:
            cutoff = now - self.seconds
            self._last = {u: t for u, t in self._last.items() if t >= cutoff}
        return last is None or now - last > self.seconds
