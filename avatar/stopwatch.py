"""One stopwatch for stage timings, shared by the engines, the renderer and the benchmarks.

``Stopwatch`` keeps, per named stage, the total milliseconds and the number of timed intervals. Time a
block with ``with watch.stage("unet"): ...``, or a run of consecutive stages with ``watch.lap("audio")``
(the time since the previous lap or ``restart``). A ``sync`` callable (e.g. ``torch.cuda.synchronize``)
runs before every reading, so asynchronous GPU work is charged to the stage that queued it. Cheap: one
clock reading per ``lap`` (two per ``stage``) and two dict updates per interval; not thread-safe (one per
session or benchmark).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Stopwatch:
    """Per-stage totals (ms) and counts. ``clock``: seconds (default ``time.perf_counter``)."""

    def __init__(
        self, clock: Callable[[], float] = time.perf_counter, sync: Callable[[], None] | None = None
    ) -> None:
        self._clock = clock
        self._sync = sync
        self._totals: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._last = self._now()

    def _now(self) -> float:
        if self._sync is not None:
            self._sync()
        return self._clock()

    def add(self, name: str, ms: float) -> None:
        """Charge ``ms`` milliseconds (one interval) to stage ``name``."""
        self._totals[name] = self._totals.get(name, 0.0) + ms
        self._counts[name] = self._counts.get(name, 0) + 1

    def restart(self) -> None:
        """Start the next ``lap`` interval now."""
        self._last = self._now()

    def lap(self, name: str) -> float:
        """Charge the time since the previous lap (or ``restart``) to ``name``; returns those ms."""
        now = self._now()
        ms = (now - self._last) * 1000.0
        self._last = now
        self.add(name, ms)
        return ms

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as one interval of ``name`` (also when it raises)."""
        start = self._now()
        try:
            yield
        finally:
            now = self._now()
            self.add(name, (now - start) * 1000.0)
            self._last = now

    def totals(self) -> dict[str, float]:
        """Milliseconds per stage, in the order the stages were first timed."""
        return dict(self._totals)

    def counts(self) -> dict[str, int]:
        """Timed intervals per stage."""
        return dict(self._counts)

    def means(self) -> dict[str, float]:
        """Mean milliseconds per interval, per stage."""
        return {k: v / self._counts[k] for k, v in self._totals.items()}

    def merge(self, other: Stopwatch | dict[str, float]) -> None:
        """Add another stopwatch's totals and counts (or a ``{stage: ms}`` dict, one interval each)."""
        if isinstance(other, Stopwatch):
            for name, ms in other._totals.items():
                self._totals[name] = self._totals.get(name, 0.0) + ms
                self._counts[name] = self._counts.get(name, 0) + other._counts[name]
        else:
            for name, ms in other.items():
                self.add(name, ms)

    def reset(self) -> None:
        """Forget every stage and restart the lap interval."""
        self._totals.clear()
        self._counts.clear()
        self.restart()

    def __len__(self) -> int:
        return len(self._totals)
