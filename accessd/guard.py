"""Lockout of a reader after a burst of unknown cards (someone emulating UIDs).

Stateful but pure: the caller passes monotonic time, so tests and the decision stay free of
clocks.
"""

from __future__ import annotations

from collections import deque


class UnknownCardGuard:
    def __init__(self, limit: int, window_s: float, lockout_s: float) -> None:
        self.limit, self.window_s, self.lockout_s = limit, window_s, lockout_s
        self._unknown: deque[float] = deque()
        self.locked_until = float("-inf")

    def locked_out(self, now: float) -> bool:
        return now < self.locked_until

    def record_unknown(self, now: float) -> bool:
        """Count one unknown card; True when this one starts a lockout (raise the alarm)."""
        self._unknown.append(now)
        while self._unknown and self._unknown[0] <= now - self.window_s:
            self._unknown.popleft()
        if len(self._unknown) >= self.limit and not self.locked_out(now):
            self.locked_until = now + self.lockout_s
            self._unknown.clear()
            return True
        return False
