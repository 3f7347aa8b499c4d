"""One outgoing track read once, a private copy of each frame for every consumer (peer connection).

aiortc encodes each sender's frames in a worker thread, and PyAV keeps conversion state on the frame
itself: two senders encoding the *same* ``VideoFrame`` at once crash the process (seen with aiortc's
``MediaRelay``). ``FanOut`` therefore reads the source track once, converts a video frame to the
encoders' ``yuv420p`` once, and hands each subscriber its own frame object built from those planes
(one 512x512 frame: 384 KiB copied per consumer, about 0.1 ms). Video subscribers keep only the newest
frame (a slow consumer skips, it never queues latency); audio subscribers keep up to
``AUDIO_BACKLOG`` 20 ms frames and drop the oldest beyond that.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

log = logging.getLogger("server.broadcast")

AUDIO_BACKLOG = 10
VIDEO_BACKLOG = 1


class FanOutTrack(MediaStreamTrack):
    """A subscriber of a ``FanOut``: a track any peer connection can send."""

    def __init__(self, fanout: FanOut, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._fanout = fanout
        self._frames: deque = deque(maxlen=AUDIO_BACKLOG if kind == "audio" else VIDEO_BACKLOG)
        self._ready = asyncio.Event()
        self._ended = False

    def _offer(self, frame) -> None:
        if frame is None:
            self._ended = True
        else:
            self._frames.append(frame)
        self._ready.set()

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        self._fanout._start()
        while not self._frames:
            if self._ended:
                self.stop()
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

    def stop(self) -> None:
        super().stop()
        self._fanout._unsubscribe(self)


class FanOut:
    """``FanOut(source).subscribe()`` -> a track; the source is read from the first ``recv`` on."""

    def __init__(self, source: MediaStreamTrack) -> None:
        self.source = source
        self._subscribers: list[FanOutTrack] = []
        self._task: asyncio.Task | None = None

    def subscribe(self) -> FanOutTrack:
        track = FanOutTrack(self, self.source.kind)
        self._subscribers.append(track)
        return track

    def _unsubscribe(self, track: FanOutTrack) -> None:
        if track in self._subscribers:
            self._subscribers.remove(track)
        if not self._subscribers and self._task is not None:
            self._task.cancel()

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self._subscribers:
            try:
                frame = await self.source.recv()
            except MediaStreamError:
                break
            copy = _copier(frame)
            for track in list(self._subscribers):
                track._offer(copy())
        for track in list(self._subscribers):
            track._offer(None)


def _copier(frame):
    """A function returning a fresh copy of ``frame`` (video as yuv420p, converted once)."""
    if isinstance(frame, VideoFrame):
        planes = frame.to_ndarray(format="yuv420p")

        def video() -> VideoFrame:
            out = VideoFrame.from_ndarray(planes, format="yuv420p")
            out.pts, out.time_base = frame.pts, frame.time_base
            return out

        return video
    if isinstance(frame, AudioFrame):
        samples = frame.to_ndarray()

        def audio() -> AudioFrame:
            out = AudioFrame.from_ndarray(samples, format=frame.format.name, layout=frame.layout.name)
            out.sample_rate, out.pts, out.time_base = frame.sample_rate, frame.pts, frame.time_base
            return out

        return audio
    return lambda: frame
