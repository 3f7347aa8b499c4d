"""Outbound video: a bounded frame buffer filled by the engine worker and a clock-paced track.

``recv()`` only waits for the next tick and takes what is there: the next rendered frame, else the
last one again (counted as repeated), or the avatar's still portrait before the first rendered frame.
Frame ``k`` has ``pts = k * 90000 / fps`` in time base 1/90000.

Every sent frame is one of three kinds, counted separately (``sent == fresh + repeated + stills``):
**fresh** (a picture the engine made and that was not sent before), **repeated** (the last engine
picture again, because no new one was ready) and **still** (the unanimated portrait, before the first
engine picture). The first fresh frame is the *first animated frame*: the first picture the engine
generated from the audio timeline (silence included: idle motion, blinks and breathing count), as
opposed to the prepared portrait shown while the engine starts.
"""

from __future__ import annotations

import collections
import fractions
from collections.abc import Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from avatar.engine import Frame
from server.clock import Clock, MonotonicClock
from server.pacing import Pacer

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


def video_frame(image: np.ndarray) -> VideoFrame:
    """An rgb24 ``VideoFrame`` over ``image`` (uint8 (h, w, 3) RGB) without copying its pixels.

    The frame shares the array's memory (and keeps it alive): engine pictures are never written after
    they are handed over, and the encoder only reads them. ``VideoFrame.from_ndarray`` copied the
    picture first, on the event loop, for every frame sent (repeats too): 0.15-0.5 ms per 512x512 frame
    more on this machine (``benchmarks/session_cost.py``; docs/benchmarks.md, "Where a session's
    milliseconds go"). The encoder's yuv420p conversion reads the same pixels either way.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)  # copies only a strided or non-uint8 picture
    try:
        return VideoFrame.from_numpy_buffer(image, format="rgb24")
    except ValueError:  # a shape this PyAV version will not wrap: copy it
        return VideoFrame.from_ndarray(image, format="rgb24")


class FrameBuffer:
    """Rendered frames waiting for the track: bounded (oldest dropped when full), latency-capped
    (when more than ``max_backlog`` frames wait, ``take`` skips to the newest) and draining: when at
    least ``DRAIN_MIN_WAITING`` frames were waiting at every ``take`` of the last ``drain_every`` ticks
    (a backlog left by a stall, which steady production would otherwise keep forever), one frame is
    skipped, so latency added by a hiccup melts away at one frame per ``drain_every`` ticks."""

    DRAIN_MIN_WAITING = 2

    def __init__(self, capacity: int = 8, max_backlog: int = 3, drain_every: int = 25) -> None:
        self.capacity = max(1, int(capacity))
        self.max_backlog = max(1, int(max_backlog))
        self.drain_every = max(1, int(drain_every))
        self._frames: collections.deque[Frame] = collections.deque()
        self.pushed = 0
        self.dropped = 0  # pushed out because the buffer was full
        self.skipped = 0  # jumped over to keep latency bounded
        self.drained = 0  # of those, skipped to drain a lasting backlog
        self._takes = 0
        self._least_waiting = 0

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, frame: Frame) -> None:
        if len(self._frames) >= self.capacity:
            self._frames.popleft()
            self.dropped += 1
        self._frames.append(frame)
        self.pushed += 1

    def take(self) -> Frame | None:
        waiting = len(self._frames)
        self._least_waiting = waiting if self._takes == 0 else min(self._least_waiting, waiting)
        self._takes += 1
        if self._takes >= self.drain_every:
            if self._least_waiting >= self.DRAIN_MIN_WAITING and len(self._frames) >= 2:
                self._frames.popleft()
                self.skipped += 1
                self.drained += 1
            self._takes = 0
        if not self._frames:
            return None
        if len(self._frames) > self.max_backlog:
            self.skipped += len(self._frames) - 1
            newest = self._frames[-1]
            self._frames.clear()
            return newest
        return self._frames.popleft()

    def clear(self) -> None:
        self._frames.clear()


class PacedVideoTrack(MediaStreamTrack):
    """Video track sending one frame per tick of ``fps`` from a ``FrameBuffer``."""

    kind = "video"

    def __init__(
        self,
        buffer: FrameBuffer,
        still_image: np.ndarray,
        fps: float,
        clock: Clock | None = None,
        on_shown: Callable[[Frame, float], None] | None = None,
    ) -> None:
        super().__init__()
        self.buffer = buffer
        self.on_shown = on_shown
        """Called with each engine frame and the clock time it is sent (for latency statistics)."""
        self.fps = float(fps)
        self.clock = clock or MonotonicClock()
        self.pacer = Pacer(self.clock, 1.0 / self.fps)
        self._image = np.ascontiguousarray(still_image, dtype=np.uint8)
        self.sent = 0
        self.fresh = 0  # ticks that sent a new engine frame
        self.repeated = 0  # ticks that re-sent the previous engine frame
        self.stills = 0  # ticks that sent the portrait before the first engine frame
        self.shown_index = -1  # timeline index of the engine frame sent last (-1: none yet)
        self.shown_at = 0.0  # clock time it was sent
        self.first_sent_at: float | None = None
        self.first_fresh_at: float | None = None
        """Clock time the first animated (engine) frame was sent; None before it."""
        self.first_fresh_tick: int | None = None
        """Tick number of that frame (its pts is ``tick * 90000 / fps``); None before it."""

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        tick = await self.pacer.next_tick()
        if self.readyState != "live":
            raise MediaStreamError
        frame = self.buffer.take()
        now = self.clock.now()
        if frame is not None:
            self._image = frame.image
            self.shown_index, self.shown_at = frame.index, now
            self.fresh += 1
            if self.first_fresh_at is None:
                self.first_fresh_at, self.first_fresh_tick = now, tick
            if self.on_shown is not None:
                self.on_shown(frame, now)
        elif self.shown_index >= 0:
            self.repeated += 1
        else:
            self.stills += 1
        if self.first_sent_at is None:
            self.first_sent_at = now
        out = video_frame(self._image)
        out.pts = round(tick * VIDEO_CLOCK_RATE / self.fps)
        out.time_base = VIDEO_TIME_BASE
        self.sent += 1
        return out
