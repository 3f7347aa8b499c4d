"""Prometheus metrics for ``GET /metrics``, written in the text exposition format (version 0.0.4).

No client library: three small metric kinds (``Counter``, ``Gauge``, ``Histogram``) without labels,
a ``Registry`` that renders them, and ``ServerMetrics``, the server's own set. Values that live in
sessions (frames sent, queue depth ...) are read at scrape time through callbacks, so the hot paths
only pay for the two histograms (a list index and two additions per observation).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


class Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(Metric):
    """A monotonically increasing total; ``source`` (if given) is added at scrape time."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, source: Callable[[], float] | None = None) -> None:
        super().__init__(name, help_text)
        self.value = 0.0
        self.source = source

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount

    def get(self) -> float:
        return self.value + (self.source() if self.source is not None else 0.0)

    def samples(self) -> list[str]:
        return [f"{self.name} {_number(self.get())}"]


class Gauge(Metric):
    """A value that goes up and down, read from ``source`` at scrape time (or ``set``)."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, source: Callable[[], float] | None = None) -> None:
        super().__init__(name, help_text)
        self.value = 0.0
        self.source = source

    def set(self, value: float) -> None:
        self.value = float(value)

    def get(self) -> float:
        return float(self.source()) if self.source is not None else self.value

    def samples(self) -> list[str]:
        return [f"{self.name} {_number(self.get())}"]


class Histogram(Metric):
    """Cumulative buckets (upper bounds in the metric's unit), ``_sum`` and ``_count``."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text)
        self.bounds = sorted(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def samples(self) -> list[str]:
        lines, running = [], 0
        for bound, count in zip([*self.bounds, math.inf], self.counts, strict=True):
            running += count
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {running}')
        lines.append(f"{self.name}_sum {_number(self.sum)}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class Registry:
    """Metrics in registration order; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def add(self, metric: Metric) -> Metric:
        if any(m.name == metric.name for m in self.metrics):
            raise ValueError(f"duplicate metric {metric.name}")
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.metrics:
            lines += metric.header() + metric.samples()
        return "\n".join(lines) + "\n"


SECONDS_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)
STARTUP_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class ServerMetrics:
    """The server's metrics. ``live`` returns the running sessions' counter values to add at scrape
    time: a mapping name -> value for ``frames_sent``, ``frames_fresh``, ``frames_repeated``,
    ``frames_still``, ``frames_dropped``, ``windows_dropped``, ``windows_skipped``, ``queue_depth``,
    ``frame_buffer``, ``degraded``."""

    def __init__(self, live: Callable[[], dict[str, float]], sessions: Callable[[], int],
                 connections: Callable[[], int]) -> None:
        self._live = live
        self.closed_totals: dict[str, float] = {}
        """Counters of sessions that have ended (added on close so totals never go down)."""
        r = self.registry = Registry()
        r.add(Gauge("avatar_sessions", "Sessions starting or running.", sessions))
        r.add(Gauge("avatar_connections", "Open WebSocket signalling connections.", connections))
        self.sessions_started = r.add(Counter("avatar_sessions_started_total", "Sessions started."))
        self.sessions_rejected = r.add(Counter(
            "avatar_sessions_rejected_total", "Offers refused because the server was full or stopping."))
        for key, help_text in (
            ("frames_sent", "Video frames sent (one per tick of engine.fps): fresh + repeated + still."),
            ("frames_fresh", "Ticks that sent a new picture from the engine."),
            ("frames_repeated", "Ticks that re-sent the previous frame because no new one was ready."),
            ("frames_still", "Ticks that sent the unanimated portrait before the engine's first frame."),
            ("frames_dropped", "Rendered frames thrown away (buffer full or skipped for latency)."),
            ("windows_dropped", "Audio windows dropped because the engine fell behind."),
            ("windows_skipped", "Audio windows not rendered on purpose while a session was degraded."),
        ):
            r.add(Counter(f"avatar_{key}_total", help_text, self._reader(key, total=True)))
        r.add(Gauge("avatar_queue_depth", "Audio windows waiting for the engines (all sessions).",
                    self._reader("queue_depth")))
        r.add(Gauge("avatar_frame_buffer", "Rendered frames waiting to be sent (all sessions).",
                    self._reader("frame_buffer")))
        r.add(Gauge("avatar_sessions_degraded", "Sessions rendering every other window to keep up.",
                    self._reader("degraded")))
        self.messages_refused = r.add(Counter(
            "avatar_messages_refused_total", "Client messages refused by the per-socket rate limit."))
        self.sockets_closed = r.add(Counter(
            "avatar_sockets_closed_total", "Sockets the server closed (idle, abuse, oversized)."))
        self.connections_refused = r.add(Counter(
            "avatar_connections_refused_total", "WebSocket upgrades refused (capacity, origin, token)."))
        self.engine_seconds = r.add(Histogram(
            "avatar_engine_seconds", "Engine time per rendered frame.", SECONDS_BUCKETS))
        self.latency_seconds = r.add(Histogram(
            "avatar_server_latency_seconds",
            "Audio in to frame out inside the server (the server's part of mouth-to-photon).",
            SECONDS_BUCKETS))
        self.first_frame_seconds = r.add(Histogram(
            "avatar_first_frame_seconds",
            "Offer received to first video frame sent (often the still portrait), per session.",
            STARTUP_BUCKETS))
        self.first_animated_frame_seconds = r.add(Histogram(
            "avatar_first_animated_frame_seconds",
            "Offer received to first engine-generated (animated) frame sent, per session.",
            STARTUP_BUCKETS))

    def _reader(self, key: str, total: bool = False) -> Callable[[], float]:
        def read() -> float:
            live = float(self._live().get(key, 0.0))
            return live + (self.closed_totals.get(key, 0.0) if total else 0.0)

        return read

    def session_closed(self, counters: dict[str, float]) -> None:
        """Fold an ended session's final counters into the totals."""
        for key, value in counters.items():
            self.closed_totals[key] = self.closed_totals.get(key, 0.0) + float(value)

    def render(self) -> str:
        return self.registry.render()
