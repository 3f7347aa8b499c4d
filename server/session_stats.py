"""One session's statistics: frame counts, engine time, latency, start-up times and degradation.

``SessionStats`` reads the session's parts (video track, frame buffer, audio input, load shedder, engine
worker) and keeps the few figures they do not: engine seconds and frames since the last report, the
engine's busy time for the load shedder, audio-in to frame-out latencies. It gives

* ``report()``: the video, engine and audio fields of the ``stats`` event (docs/protocol.md), rates since
  the previous report;
* ``totals()``: counters and gauges for ``/metrics`` (summed over sessions by server/metrics.py);
* the per-session histograms of ``ServerMetrics`` (engine seconds per frame, server latency, offer to
  first frame, offer to first animated frame), observed as the figures become known.

All times are seconds on the session's clock; ``*_ms`` fields are milliseconds.
"""

from __future__ import annotations

from typing import Any

from avatar.engine import SAMPLE_RATE, Frame
from server.audio_input import AudioInput
from server.clock import Clock
from server.degrade import LoadShedder
from server.engine_worker import EngineWorker
from server.metrics import ServerMetrics
from server.video_track import FrameBuffer, PacedVideoTrack

MAX_LATENCY_SAMPLES = 1000
"""Latencies kept between two reports (one per fresh frame: 40 s at 25 fps)."""

GAUGES = ("queue_depth", "frame_buffer", "degraded")
"""The ``totals`` keys that are gauges: an ended session adds nothing to them."""


class SessionStats:
    """Counts for one session; ``worker`` is set once the engine thread exists."""

    def __init__(self, clock: Clock, started_at: float, video: PacedVideoTrack, buffer: FrameBuffer,
                 audio: AudioInput, shedder: LoadShedder, metrics: ServerMetrics | None = None) -> None:
        self.clock = clock
        self.started_at = started_at
        self.video = video
        self.buffer = buffer
        self.audio = audio
        self.shedder = shedder
        self.metrics = metrics
        self.worker: EngineWorker | None = None
        self._engine_s = 0.0  # engine seconds and frames since the last report
        self._engine_frames = 0
        self._busy_s = 0.0  # engine seconds since the last ``take_busy_s``
        self._last_report = (started_at, 0, 0)  # time, frames sent, fresh frames
        self._last_engine_ms = 0.0
        self._latency_s: list[float] = []
        self._last_latency_ms = 0.0
        self._first_frame_observed = False

    # ------------------------------------------------------------------------------ observations
    def engine_rendered(self, frames: int, engine_s: float) -> None:
        """The engine made ``frames`` frames in ``engine_s`` seconds (one window)."""
        self._engine_s += engine_s
        self._busy_s += engine_s
        self._engine_frames += frames
        if self.metrics is not None and frames:
            for _ in range(frames):
                self.metrics.engine_seconds.observe(engine_s / frames)

    def frame_shown(self, frame: Frame, sent_at: float) -> None:
        """A fresh engine frame went to the encoder at ``sent_at``: its audio-in to frame-out latency
        (from the arrival of the audio at the end of the frame's span), and the first animated frame."""
        end_sample = round((frame.index + 1) * SAMPLE_RATE / self.video.fps)
        arrived = self.audio.arrival_time(end_sample)
        if arrived is not None and len(self._latency_s) < MAX_LATENCY_SAMPLES:
            self._latency_s.append(sent_at - arrived)
        if arrived is not None and self.metrics is not None:
            self.metrics.latency_seconds.observe(max(0.0, sent_at - arrived))
        if self.video.fresh == 1:
            self.observe_first_frame()
            if self.metrics is not None:
                self.metrics.first_animated_frame_seconds.observe(max(0.0, sent_at - self.started_at))

    def observe_first_frame(self) -> None:
        """Record offer -> first frame sent in /metrics, once, as soon as it is known."""
        first = self.video.first_sent_at
        if first is None or self._first_frame_observed:
            return
        self._first_frame_observed = True
        if self.metrics is not None:
            self.metrics.first_frame_seconds.observe(max(0.0, first - self.started_at))

    def take_busy_s(self) -> float:
        """Engine seconds since the previous call (the load shedder's input)."""
        busy, self._busy_s = self._busy_s, 0.0
        return busy

    # ----------------------------------------------------------------------------------- figures
    @property
    def windows_dropped(self) -> int:
        return self.worker.windows_dropped if self.worker is not None else 0

    @property
    def queue_depth(self) -> int:
        return self.worker.depth if self.worker is not None else 0

    @property
    def frames_dropped(self) -> int:
        """Rendered frames thrown away: pushed out of a full buffer or skipped for latency."""
        return self.buffer.dropped + self.buffer.skipped

    def totals(self) -> dict[str, float]:
        """Counters (for /metrics) and gauges (``GAUGES``) of this session right now."""
        video = self.video
        return {
            "frames_sent": video.sent,
            "frames_fresh": video.fresh,
            "frames_repeated": video.repeated,
            "frames_still": video.stills,
            "frames_dropped": self.frames_dropped,
            "windows_dropped": self.windows_dropped,
            "windows_skipped": self.shedder.skipped,
            "queue_depth": self.queue_depth,
            "frame_buffer": len(self.buffer),
            "degraded": int(self.shedder.degraded),
        }

    def counters(self) -> dict[str, float]:
        """``totals`` without the gauges: what an ended session adds to the server's totals."""
        return {key: value for key, value in self.totals().items() if key not in GAUGES}

    def report(self) -> dict[str, Any]:
        """The video, engine and audio fields of the ``stats`` event; rates (``fps``, ``fresh_fps``) and
        averages (``engine_ms``, ``latency_ms``) cover the time since the previous report."""
        now = self.clock.now()
        last_time, last_sent, last_fresh = self._last_report
        elapsed = max(1e-6, now - last_time)
        if self._engine_frames:
            self._last_engine_ms = 1000.0 * self._engine_s / self._engine_frames
        self._engine_s, self._engine_frames = 0.0, 0
        if self._latency_s:
            self._last_latency_ms = 1000.0 * sum(self._latency_s) / len(self._latency_s)
            self._latency_s = []
        video, audio = self.video, self.audio
        self._last_report = (now, video.sent, video.fresh)
        self.observe_first_frame()
        return {
            "fps": round((video.sent - last_sent) / elapsed, 2),
            "fresh_fps": round((video.fresh - last_fresh) / elapsed, 2),
            "frames_sent": video.sent,
            "frames_fresh": video.fresh,
            "frames_repeated": video.repeated,
            "frames_still": video.stills,
            "repeat_share": round(1.0 - video.fresh / video.sent, 4) if video.sent else None,
            "first_frame_s": _since(video.first_sent_at, self.started_at),
            "first_animated_s": _since(video.first_fresh_at, self.started_at),
            "frames_dropped": self.frames_dropped,
            "windows_dropped": self.windows_dropped,
            "engine_ms": round(self._last_engine_ms, 2),
            "latency_ms": round(self._last_latency_ms, 1),
            "queue_depth": self.queue_depth,
            "frame_buffer": len(self.buffer),
            "speaking": bool(audio.is_speaking()),
            "audio_in_s": round(audio.received_samples / SAMPLE_RATE, 2),
            "silence_padded_s": round(audio.padded_samples / SAMPLE_RATE, 2),
            "uptime_s": round(now - self.started_at, 2),
            "degraded": self.shedder.degraded,
            "windows_skipped": self.shedder.skipped,
            "timeline_s": round(audio.ring.end / SAMPLE_RATE, 3),
            "shown_frame": video.shown_index,
        }


def _since(moment: float | None, start: float) -> float | None:
    """Seconds from ``start`` to ``moment`` (3 decimals), None while ``moment`` is unknown."""
    return None if moment is None else round(moment - start, 3)
