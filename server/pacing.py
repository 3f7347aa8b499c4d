"""A tick pacer: tick ``k`` is released at ``t0 + k * period`` with no cumulative drift.

When the consumer is late by more than ``max_late`` periods (event loop stalled, encoder slow) it does
not burst through the missed ticks: it skips them (the tick index jumps to the one due now) and counts a
resync, so tick numbers, and the pts derived from them, stay on the wall clock.
"""

from __future__ import annotations

from server.clock import Clock


class Pacer:
    """``await next_tick()`` returns 0, 1, 2, ... each no earlier than ``t0 + k * period``."""

    def __init__(self, clock: Clock, period: float, max_late: float = 2.0) -> None:
        if period <= 0:
            raise ValueError("period must be positive")
        self.clock = clock
        self.period = float(period)
        self.max_late = float(max_late)
        self.t0: float | None = None
        self.tick = 0  # index of the next tick to release
        self.resyncs = 0
        self.skipped = 0  # ticks jumped over by resyncs

    def due(self, tick: int) -> float:
        """Clock time at which ``tick`` is released (the first tick sets ``t0``)."""
        assert self.t0 is not None
        return self.t0 + tick * self.period

    async def next_tick(self) -> int:
        k = self.tick
        if self.t0 is None:
            self.t0 = self.clock.now()
        else:
            lateness = self.clock.now() - self.due(k)
            if lateness < 0:
                await self.clock.sleep(-lateness)
            elif lateness > self.max_late * self.period:
                missed = int(lateness // self.period)
                k += missed
                self.skipped += missed
                self.resyncs += 1
        self.tick = k + 1
        return k
