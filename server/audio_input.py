"""Per-session inbound audio: resample to 16 kHz mono, voice activity, ring buffer, windowing,
and silence padding that keeps the timeline moving when audio stalls or never arrives.

Everything here runs on the event loop and is cheap (about 0.1 ms per 20 ms packet).
"""

from __future__ import annotations

import collections

import av
import numpy as np

from avatar.audio.io import pcm16_to_float
from avatar.audio.vad import VoiceActivity
from avatar.audio.windowing import AudioRing, WindowConfig, Windower
from avatar.engine import SAMPLE_RATE, AudioWindow
from server.clock import Clock, MonotonicClock


class MonoResampler:
    """Any PyAV audio frame (48 kHz Opus stereo from browsers, or anything else) -> 16 kHz mono float32."""

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self.rate = rate
        self._resampler = self._new()

    def _new(self) -> av.AudioResampler:
        return av.AudioResampler(format="s16", layout="mono", rate=self.rate)

    def __call__(self, frame: av.AudioFrame) -> np.ndarray:
        """float32 samples in [-1, 1), shape (n,), continuing the stream of earlier calls."""
        try:
            outputs = self._resampler.resample(frame)
        except ValueError:  # the input format changed mid-stream: start a fresh resampler
            self._resampler = self._new()
            outputs = self._resampler.resample(frame)
        chunks = [pcm16_to_float(out.to_ndarray().reshape(-1)) for out in outputs]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


class MutableAudioRing(AudioRing):
    """An ``AudioRing`` whose recent past can be silenced (an interrupt mutes speech already queued)."""

    def mute(self, start: int, stop: int) -> int:
        """Zero the timeline samples [start, stop) still held; returns how many were zeroed."""
        lo, hi = max(start, self.end - self.capacity, 0), min(stop, self.end)
        if hi <= lo:
            return 0
        self._buf[np.arange(lo, hi) % self.capacity] = 0.0
        return hi - lo


class AudioInput:
    """Turns inbound audio into engine windows on the session timeline.

    The timeline starts when the session starts. Real audio is appended as it arrives; when the
    newest real audio plus the wall time elapsed since it arrived is more than ``max_gap_ms`` ahead of
    the ring's end, ``pad_silence`` appends zeros so that the ring trails that estimate by exactly
    ``max_gap_ms`` (a steady 20 ms of silence per 20 ms tick, never a burst).
    """

    def __init__(
        self,
        window: WindowConfig,
        vad_aggressiveness: int = 2,
        ring_seconds: float = 10.0,
        max_gap_ms: float = 200.0,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock or MonotonicClock()
        self.resample = MonoResampler()
        self.vad = VoiceActivity(aggressiveness=vad_aggressiveness)
        self.ring = MutableAudioRing(ring_seconds)
        self.windower = Windower(window)
        self.max_gap_samples = int(max_gap_ms * SAMPLE_RATE / 1000)
        self._anchor_time = self.clock.now()
        self._anchor_end = 0
        self.received_samples = 0
        self.padded_samples = 0
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque(maxlen=1000)

    def push_frame(self, frame: av.AudioFrame) -> list[AudioWindow]:
        """Add one inbound PyAV audio frame; returns the windows that became ready."""
        return self.push_samples(self.resample(frame))

    def push_samples(self, samples: np.ndarray) -> list[AudioWindow]:
        """Add real 16 kHz mono float32 audio; returns the windows that became ready."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size:
            self._append(samples)
            self.received_samples += samples.size
        self._anchor_time, self._anchor_end = self.clock.now(), self.ring.end
        return self._ready()

    def append(self, samples: np.ndarray, real: int) -> list[AudioWindow]:
        """Speak mode: add timeline audio of which the first ``real`` samples are speech and the rest
        silence (counted as padding); returns the windows that became ready."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size:
            self._append(samples)
            self.received_samples += real
            self.padded_samples += samples.size - real
        self._anchor_time, self._anchor_end = self.clock.now(), self.ring.end
        return self._ready()

    def mute(self, start: int) -> int:
        """Silence the timeline from sample ``start`` to the ring's end; returns samples zeroed."""
        return self.ring.mute(start, self.ring.end)

    def samples_behind(self) -> int:
        """How far the ring's end trails the wall-clock estimate of where live audio should be."""
        elapsed = max(0.0, self.clock.now() - self._anchor_time)
        return int(self._anchor_end + elapsed * SAMPLE_RATE) - self.ring.end

    def pad_silence(self) -> list[AudioWindow]:
        """Append silence when audio is more than ``max_gap_ms`` behind; returns ready windows."""
        missing = self.samples_behind() - self.max_gap_samples
        if missing <= 0:
            return []
        self._append(np.zeros(missing, dtype=np.float32))
        self.padded_samples += missing
        return self._ready()

    def is_speaking(self) -> bool:
        return self.vad.is_speaking()

    def arrival_time(self, sample: int) -> float | None:
        """Clock time at which timeline sample ``sample`` arrived (or was padded); None if unknown."""
        found = None
        for end, when in reversed(self._arrivals):
            if end <= sample:
                break
            found = when
        return found

    def _append(self, samples: np.ndarray) -> None:
        self.vad.feed(samples)  # the VAD counts fed samples, so it must see the padding too
        self.ring.write(samples)
        self._arrivals.append((self.ring.end, self.clock.now()))

    def _ready(self) -> list[AudioWindow]:
        return list(self.windower.ready(self.ring, self.vad.speech_fraction))
