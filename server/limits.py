"""Per-socket message rate limit: a token bucket, and the point at which a client counts as abusive.

Each socket may send ``rate`` messages per second on average with bursts of ``burst``; messages over
that get an error reply (and are not handled). When more than ``abuse_per_s`` messages are refused
within one second the socket is closed with 1008 (policy violation).
"""

from __future__ import annotations

import collections

from server.clock import Clock, MonotonicClock

ALLOWED, REFUSED, ABUSIVE = "allowed", "refused", "abusive"


class MessageRateLimit:
    """``check()`` for each received message returns ``ALLOWED``, ``REFUSED`` or ``ABUSIVE``."""

    def __init__(self, rate: float, abuse_per_s: float, burst: float | None = None,
                 clock: Clock | None = None) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, 2 * rate))
        self.abuse_per_s = float(abuse_per_s)
        self.clock = clock or MonotonicClock()
        self._tokens = self.burst
        self._last = self.clock.now()
        self._refused_at: collections.deque[float] = collections.deque()
        self.refused = 0

    def check(self) -> str:
        now = self.clock.now()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return ALLOWED
        self.refused += 1
        self._refused_at.append(now)
        while self._refused_at and now - self._refused_at[0] >= 1.0:
            self._refused_at.popleft()
        return ABUSIVE if len(self._refused_at) > self.abuse_per_s else REFUSED
