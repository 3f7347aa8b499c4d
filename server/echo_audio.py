"""Optional outbound audio (``video.echo_audio``): the session's own audio, delayed to match the video.

Every 20 ms the track reads the ring at the timeline position of the video frame on screen (the last
frame the video track sent, extrapolated by the time since), upsamples 16 kHz -> 48 kHz and sends
960 samples with ``pts`` in 1/48000. Its read cursor advances smoothly and only jumps when it drifts
more than 100 ms from the video (e.g. after the video skipped frames).
"""

from __future__ import annotations

import fractions

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from avatar.audio.io import float_to_pcm16
from avatar.audio.windowing import AudioRing
from avatar.engine import SAMPLE_RATE
from server.clock import Clock, MonotonicClock
from server.pacing import Pacer
from server.video_track import PacedVideoTrack

OUT_RATE = 48000
PTIME = 0.020
IN_CHUNK = int(SAMPLE_RATE * PTIME)  # 320 samples at 16 kHz
OUT_CHUNK = int(OUT_RATE * PTIME)  # 960 samples at 48 kHz
MAX_DRIFT = SAMPLE_RATE // 10  # 100 ms


class EchoAudioTrack(MediaStreamTrack):
    """Audio track replaying ``ring`` in step with ``video`` (silence until the first engine frame)."""

    kind = "audio"

    def __init__(self, ring: AudioRing, video: PacedVideoTrack, clock: Clock | None = None) -> None:
        super().__init__()
        self.ring = ring
        self.video = video
        self.clock = clock or MonotonicClock()
        self.pacer = Pacer(self.clock, PTIME)
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=OUT_RATE)
        self._pending = np.zeros(0, dtype=np.int16)
        self._cursor: int | None = None
        self._in_pts = 0

    def target_sample(self) -> int | None:
        """Timeline sample under the video frame on screen now, or None before the first frame."""
        if self.video.shown_index < 0:
            return None
        spf = SAMPLE_RATE / self.video.fps
        since = max(0.0, self.clock.now() - self.video.shown_at)
        return int(self.video.shown_index * spf + min(since, 0.5) * SAMPLE_RATE)

    def _next_chunk(self) -> np.ndarray:
        target = self.target_sample()
        if target is None:
            return np.zeros(IN_CHUNK, dtype=np.float32)
        if self._cursor is None or abs(self._cursor - target) > MAX_DRIFT:
            self._cursor = target
        chunk = self.ring.read(self._cursor, self._cursor + IN_CHUNK)
        self._cursor += IN_CHUNK
        return chunk

    def _upsample(self, chunk: np.ndarray) -> np.ndarray:
        frame = av.AudioFrame.from_ndarray(float_to_pcm16(chunk).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._in_pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._in_pts += chunk.size
        parts = [self._pending] + [o.to_ndarray().reshape(-1) for o in self._resampler.resample(frame)]
        data = np.concatenate(parts).astype(np.int16, copy=False)
        if data.size < OUT_CHUNK:  # resampler start-up delay: pad the very first packets
            data = np.concatenate([np.zeros(OUT_CHUNK - data.size, dtype=np.int16), data])
        self._pending = data[OUT_CHUNK:][-OUT_CHUNK * 4 :]
        return data[:OUT_CHUNK]

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        tick = await self.pacer.next_tick()
        if self.readyState != "live":
            raise MediaStreamError
        samples = self._upsample(self._next_chunk())
        out = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = OUT_RATE
        out.pts = tick * OUT_CHUNK
        out.time_base = fractions.Fraction(1, OUT_RATE)
        return out
