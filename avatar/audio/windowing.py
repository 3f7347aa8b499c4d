"""Sample-accurate ring buffer and the windower that cuts overlapping audio windows for engines.

Used identically by the live server (audio arrives in 20 ms packets) and the offline renderer
(the whole file at once), so both paths produce the same windows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from avatar.engine import SAMPLE_RATE, AudioWindow


class AudioRing:
    """Fixed-capacity ring of float32 samples addressed by absolute timeline sample index.

    ``write`` appends at ``end``; ranges older than ``end - capacity`` or not yet written read as zeros.
    """

    def __init__(self, capacity_seconds: float = 10.0) -> None:
        self.capacity = int(capacity_seconds * SAMPLE_RATE)
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self.end = 0  # absolute index one past the newest sample

    def write(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        total = len(samples)
        if total >= self.capacity:
            samples = samples[-self.capacity :]
        n = len(samples)
        pos = (self.end + total - n) % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos : pos + first] = samples[:first]
        self._buf[: n - first] = samples[first:]
        self.end += total

    def pad_to(self, index: int) -> None:
        """Write zeros up to absolute index ``index`` (keeps the timeline moving through gaps)."""
        if index > self.end:
            self.write(np.zeros(index - self.end, dtype=np.float32))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) on the timeline; zeros where unavailable."""
        out = np.zeros(max(0, stop - start), dtype=np.float32)
        lo, hi = max(start, self.end - self.capacity, 0), min(stop, self.end)
        if hi > lo:
            idx = np.arange(lo, hi) % self.capacity
            out[lo - start : hi - start] = self._buf[idx]
        return out


@dataclass(frozen=True)
class WindowConfig:
    """Window geometry. Frames per window and hop in video frames; contexts in milliseconds."""

    fps: float = 25.0
    frames_per_window: int = 1
    hop: int = 1
    left_context_ms: float = 200.0
    right_context_ms: float = 40.0

    def at_least(self, right_context_ms: float) -> WindowConfig:
        """This geometry with at least ``right_context_ms`` of right context (whole ms)."""
        needed = float(math.ceil(right_context_ms - 1e-9))
        return self if self.right_context_ms >= needed else dataclasses.replace(self, right_context_ms=needed)

    def __post_init__(self) -> None:
        if not (0 < self.hop <= self.frames_per_window):
            raise ValueError("window hop must be between 1 and frames_per_window")
        if self.fps <= 0 or self.left_context_ms < 0 or self.right_context_ms < 0:
            raise ValueError("fps must be positive and audio contexts non-negative")

    @property
    def samples_per_frame(self) -> float:
        return SAMPLE_RATE / self.fps

    @property
    def right_context_samples(self) -> int:
        return round(self.right_context_ms * SAMPLE_RATE / 1000.0)

    @property
    def left_context_samples(self) -> int:
        return round(self.left_context_ms * SAMPLE_RATE / 1000.0)


class Windower:
    """Emits ``AudioWindow``s in order as soon as their audio (with look-ahead) is available.

    Window ``k`` asks for frames ``[k*hop, k*hop + frames_per_window)`` and must return the frames
    not returned before (``emit_from``). The first window emits all its frames.
    """

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.next_first_frame = 0
        self.emitted_until = 0  # frames [0, emitted_until) were requested already

    def window_end_sample(self, first_frame: int) -> int:
        """Timeline sample that must be available before the window starting at ``first_frame`` can run."""
        c = self.config
        return round((first_frame + c.frames_per_window) * c.samples_per_frame) + c.right_context_samples

    def ready(self, ring: AudioRing, speech_fraction=None) -> Iterator[AudioWindow]:
        """Yield every window whose audio is in ``ring`` (``ring.end`` decides)."""
        while self.window_end_sample(self.next_first_frame) <= ring.end:
            yield self._cut(ring, self.next_first_frame, speech_fraction)

    def flush(self, ring: AudioRing, total_frames: int, speech_fraction=None) -> Iterator[AudioWindow]:
        """Offline end of stream: cut the remaining windows (zeros as look-ahead) until
        ``total_frames`` frames were requested."""
        while self.emitted_until < total_frames:
            yield self._cut(ring, self.next_first_frame, speech_fraction)

    def _cut(self, ring: AudioRing, first: int, speech_fraction) -> AudioWindow:
        c = self.config
        spf = c.samples_per_frame
        start = round(first * spf) - c.left_context_samples
        own_start, own_stop = round(first * spf), round((first + c.frames_per_window) * spf)
        stop = own_stop + c.right_context_samples
        emit_from = max(first, self.emitted_until)
        window = AudioWindow(
            samples=ring.read(start, stop),
            start_sample=start,
            first_frame=first,
            num_frames=c.frames_per_window,
            fps=c.fps,
            emit_from=emit_from,
            speech=float(speech_fraction(own_start, own_stop)) if speech_fraction else 0.0,
        )
        self.emitted_until = first + c.frames_per_window
        self.next_first_frame = first + c.hop
        return window
