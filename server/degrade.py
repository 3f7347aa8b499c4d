"""Graceful degradation: when a session's engine cannot keep up, render every other audio window.

``LoadShedder.update`` runs about once a second with the engine's busy time and the worker's dropped
window count. The session degrades (``stride`` 2: every other window is skipped, so the video track
repeats the last frame for those ticks) when windows were dropped or the engine was busy more than
``busy_high`` of the wall time; it recovers (``stride`` 1) once the estimated full-rate load
(busy fraction x stride) stayed below ``busy_low`` for ``recover_after_s``, doubled after each
degradation (up to 8x) so that a session on the edge does not flap between the two rates.

``busy_low`` is 0.75: with 0.6, a session whose full-rate load sits between 0.6 and 0.9 (it would keep
up) stayed at half rate for good after a single spike had degraded it; this was seen beside a browser
on two cores, when the engine took 27 ms a frame (0.68 at full rate).
"""

from __future__ import annotations


class LoadShedder:
    """Decides which windows reach the engine (``admit``), with hysteresis between the two rates."""

    def __init__(self, enabled: bool = True, busy_high: float = 0.9, busy_low: float = 0.75,
                 recover_after_s: float = 3.0, grace_s: float = 2.0) -> None:
        self.enabled = enabled
        self.grace_s = grace_s
        """A session's first seconds never degrade it: the first windows pay for warming the engine up
        (caches, first allocations) and once cost a session seconds at half rate."""
        self._age_s = 0.0
        self.busy_high = busy_high
        self.busy_low = busy_low
        self.recover_after_s = recover_after_s
        self.stride = 1
        self.skipped = 0  # windows not rendered on purpose
        self.degradations = 0  # times the session switched to stride 2
        self._count = 0
        self._healthy_s = 0.0
        self._last_dropped = 0

    @property
    def degraded(self) -> bool:
        return self.stride > 1

    def admit(self) -> bool:
        """True when the next window should be rendered (counts the skipped ones)."""
        self._count += 1
        if self.stride == 1 or self._count % self.stride == 1:
            return True
        self.skipped += 1
        return False

    def update(self, elapsed_s: float, engine_busy_s: float, windows_dropped_total: int) -> None:
        """Feed the last ``elapsed_s`` seconds: engine seconds spent and the dropped-window total."""
        if not self.enabled or elapsed_s <= 0:
            return
        dropped = windows_dropped_total - self._last_dropped
        self._last_dropped = windows_dropped_total
        busy = engine_busy_s / elapsed_s
        self._age_s += elapsed_s
        if self._age_s <= self.grace_s:
            return
        if self.stride == 1:
            if dropped > 0 or busy > self.busy_high:
                self.stride, self._count, self._healthy_s = 2, 0, 0.0
                self.degradations += 1
            return
        if dropped == 0 and busy * self.stride < self.busy_low:
            self._healthy_s += elapsed_s
            if self._healthy_s >= self.recover_after_s * 2 ** min(self.degradations - 1, 3):
                self.stride, self._healthy_s = 1, 0.0
        else:
            self._healthy_s = 0.0
