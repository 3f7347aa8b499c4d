"""A WebRTC client's microphone for tests and benchmarks: 16 kHz mono audio sent in real time."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

CHUNK = 320
"""Samples per frame: 20 ms at 16 kHz."""


class WallClockAudioTrack(MediaStreamTrack):
    """An audio track whose ``recv`` hands over one 20 ms frame per 20 ms of wall time; ``sent`` records
    (wall time, RMS) of each."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[float, float]] = []
        self._k = 0
        self._t0: float | None = None

    async def next_slot(self) -> int:
        """Wait for the next frame's turn on the wall clock; its number (0, 1, ...). Raises
        ``MediaStreamError`` once the track is stopped."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        await asyncio.sleep(max(0.0, self._t0 + self._k * 0.02 - time.monotonic()))
        self._k += 1
        return self._k - 1


class PacedAudioTrack(WallClockAudioTrack):
    """Sends float ``audio`` (16 kHz mono, −1..1) as s16 20 ms frames paced by the wall clock.

    After the audio it sends silence, or with ``loop`` starts again (pts keep counting). ``sent`` records
    (wall time, RMS) of every chunk handed over; ``done`` turns true after the last audio chunk.
    """

    def __init__(self, audio: np.ndarray, loop: bool = False) -> None:
        super().__init__()
        self.pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        self.loop = loop
        self.chunks = len(self.pcm) // CHUNK

    async def recv(self) -> av.AudioFrame:
        k = await self.next_slot()
        start = k * CHUNK
        if self.loop:
            start %= max(len(self.pcm) - CHUNK, 1)
        chunk = self.pcm[start : start + CHUNK]
        chunk = np.pad(chunk, (0, CHUNK - len(chunk)))
        self.sent.append((time.monotonic(), float(np.sqrt(np.mean((chunk / 32768.0) ** 2)))))
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, k * CHUNK, fractions.Fraction(1, 16000)
        return frame

    @property
    def done(self) -> bool:
        return self._k >= self.chunks
