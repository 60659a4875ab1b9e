"""Checking a batch's Ed25519 signatures, optionally on several cores.

A signature check costs ~50-150 µs and holds the interpreter lock (cryptography does not
release it): ~120 µs of CPU on the development machine, more than everything else the
collector does for an event, which is why a door catching up signs its events a batch at a
time (version 3, docs/protocol.md): one check for up to 1,000 events. The first
way to spread it is the one the office already has: several collectors in one shared
subscription group, each a process. Within one collector, `--verify-workers N` splits a
batch's checks between its thread and N worker processes; that pays only on cores that are
really idle (measured on a shared 2-core machine: the hand-over costs ~20 % more CPU in all,
and the collector got slower), so it is off by default. Small batches stay in the thread. A
worker that dies costs nothing but speed: its share is checked in the thread.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

Check = tuple[bytes, bytes, bytes]  # raw public key (32), signature (64), signed bytes
SPREAD_FROM = 64  # fewer checks than this are not worth a round trip to the workers
RETRY_S = 60.0  # after a worker died, the thread checks alone this long


def spare_cores() -> int:
    """Cores beyond the collector's own, at most 3: the most `--verify-workers` can use."""
    return max(0, min(3, (os.cpu_count() or 1) - 1))


_KEYS: dict[bytes, Ed25519PublicKey] = {}  # raw -> key object, per process
_KEYS_MAX = 100_000  # doors; beyond that the cache starts again (a key costs ~3 µs to load)


def _public(raw: bytes) -> Ed25519PublicKey:
    key = _KEYS.get(raw)
    if key is None:
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        key = _KEYS[raw] = Ed25519PublicKey.from_public_bytes(raw)
    return key


def check_all(checks: list[Check]) -> list[bool]:
    """Run in a worker process (or the thread): which signatures hold."""
    out = []
    for raw, sig, message in checks:
        try:
            _public(raw).verify(sig, message)
            out.append(True)
        except (InvalidSignature, ValueError):
            out.append(False)
    return out


class SignatureChecker:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._retry_at = 0.0

    def _executor(self) -> ProcessPoolExecutor | None:
        if self.workers and self._pool is None and time.monotonic() >= self._retry_at:
            # spawn: the collector has threads (paho's), which fork would copy half-held
            self._pool = ProcessPoolExecutor(self.workers,
                                             mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def warm(self) -> None:
        """Start the workers now (a second or so), not on the first large batch."""
        pool = self._executor()
        if pool is not None:
            for _ in range(self.workers):
                pool.submit(check_all, [])

    def check(self, checks: list[Check]) -> list[bool]:
        """The verdict for each check, in order."""
        pool = self._executor() if len(checks) >= SPREAD_FROM else None
        if pool is None:
            return check_all(checks)
        # the thread has other work (MQTT, JSON, the database): it takes a half share
        share = len(checks) // (2 * self.workers + 1)
        size = -(-(len(checks) - share) // self.workers)
        parts = [checks[share + i * size: share + (i + 1) * size] for i in range(self.workers)]
        futures: list[Future[list[bool]]] = [pool.submit(check_all, p) for p in parts if p]
        out = check_all(checks[:share])
        for part, future in zip(parts, futures, strict=False):
            try:
                out += future.result()
            except BrokenProcessPool as exc:
                if self._pool is not None:
                    log.warning("a signature worker died (%s); checking in the collector "
                                "for %.0f s", exc, RETRY_S)
                    self.close()
                    self._retry_at = time.monotonic() + RETRY_S
                out += check_all(part)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
