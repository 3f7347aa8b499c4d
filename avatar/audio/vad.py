"""Voice activity on 20 ms frames of 16 kHz audio with webrtcvad, indexed on the session timeline."""

from __future__ import annotations

import collections

import numpy as np
import webrtcvad

from avatar.audio.io import float_to_pcm16
from avatar.engine import SAMPLE_RATE

VAD_FRAME = SAMPLE_RATE // 50  # 320 samples = 20 ms


class VoiceActivity:
    """Streaming VAD: feed consecutive samples, ask what fraction of a sample range was speech.

    Keeps the last ``history`` 20 ms decisions (bounded); older ranges count as silence.
    An energy floor (``min_rms``) stops webrtcvad from calling faint noise speech.
    """

    def __init__(self, aggressiveness: int = 2, history: int = 1500, min_rms: float = 0.004) -> None:
        self._vad = webrtcvad.Vad(int(aggressiveness))
        self._pending = np.zeros(0, dtype=np.float32)
        self._next_frame = 0  # index of the next 20 ms frame to classify
        self._flags: collections.deque[tuple[int, bool]] = collections.deque(maxlen=history)
        self._min_rms = float(min_rms)

    def feed(self, samples: np.ndarray) -> None:
        """Append consecutive float32 16 kHz samples (the stream continues where the last call ended)."""
        buf = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        n = len(buf) // VAD_FRAME
        for i in range(n):
            chunk = buf[i * VAD_FRAME : (i + 1) * VAD_FRAME]
            loud = float(np.sqrt(np.mean(chunk * chunk))) >= self._min_rms
            speech = loud and self._vad.is_speech(float_to_pcm16(chunk).tobytes(), SAMPLE_RATE)
            self._flags.append((self._next_frame, speech))
            self._next_frame += 1
        self._pending = buf[n * VAD_FRAME :]

    def speech_fraction(self, start_sample: int, stop_sample: int) -> float:
        """Fraction of the 20 ms frames overlapping [start_sample, stop_sample) judged speech."""
        first, last = start_sample // VAD_FRAME, max(start_sample, stop_sample - 1) // VAD_FRAME
        total = last - first + 1
        hits = sum(1 for idx, s in self._flags if first <= idx <= last and s)
        return hits / total if total > 0 else 0.0

    def is_speaking(self, recent_ms: int = 300) -> bool:
        """Whether any of the last ``recent_ms`` of classified audio was speech (barge-in)."""
        n = max(1, recent_ms // 20)
        return any(s for _, s in list(self._flags)[-n:])
