"""An ``EngineSession`` wrapper that watermarks every frame it returns (live and offline alike)."""

from __future__ import annotations

import threading

from avatar.engine import AudioWindow, EngineSession, Frame
from avatar.provenance.payload import Payload
from avatar.provenance.watermark import Watermarker

_shared_marker: Watermarker | None = None
_shared_lock = threading.Lock()


def shared_watermarker() -> Watermarker:
    """One ``Watermarker`` per process (it caches the per-payload residuals and is thread-safe)."""
    global _shared_marker
    with _shared_lock:
        if _shared_marker is None:
            _shared_marker = Watermarker()
        return _shared_marker


class WatermarkedSession(EngineSession):
    """Marks each frame of ``inner`` with ``payload`` (a random session id and the start minute)."""

    def __init__(self, inner: EngineSession, size: int, payload: Payload | None = None) -> None:
        self.inner = inner
        self.payload = payload or Payload.create()
        self._marker = shared_watermarker()
        self._marker.prepare(self.payload, size, size)

    def process(self, window: AudioWindow) -> list[Frame]:
        frames = self.inner.process(window)
        for frame in frames:
            frame.image = self._marker.embed(frame.image, self.payload)
        return frames

    def interrupt(self) -> None:
        self.inner.interrupt()

    def close(self) -> None:
        self.inner.close()
