"""Log-mel features of speech on a fixed 10 ms grid, the learned motion model's audio input (numpy only).

Hop ``h`` is centred on timeline sample ``h * HOP`` (time ``h * 10 ms``) and covers the 25 ms of audio
``[h * HOP - WIN / 2, h * HOP + WIN / 2)`` (zeros outside the audio). Because the grid is anchored at
sample 0 of the timeline, features do not depend on how audio is cut into windows.

Video frame ``f`` at 25 fps (instant ``f * 40 ms``) sees hops ``[4 f - PAST_HOPS, 4 f + AHEAD_HOPS]``:
410 ms before its instant to 60 ms after it, so the last hop ends 72.5 ms after the instant: within the
40 ms look-ahead the server's windows carry past the frame's own 40 ms (``context_needed_ms``: 32.5).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from avatar.engine import SAMPLE_RATE

HOP = 160
"""Samples per hop (10 ms at 16 kHz)."""
WIN = 400
"""Samples per analysis window (25 ms)."""
N_FFT = 512
N_MELS = 40
F_MIN, F_MAX = 60.0, 7600.0
PAST_HOPS = 41
AHEAD_HOPS = 6
CONTEXT_HOPS = PAST_HOPS + 1 + AHEAD_HOPS
"""Hops per frame context (48)."""
FLOOR_DB = -100.0


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """Triangular mel filters (N_MELS, N_FFT // 2 + 1), float32."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), N_MELS + 2))
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (bins[None] - lo) / (mid - lo)
    fall = (hi - bins[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(rise, fall)).astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    window = np.hanning(WIN + 2)[1:-1]
    # A full-scale sine reads about 0 dB in its band.
    return (window / window.sum() * 2.0).astype(np.float32)


def mel_power(read, first_hop: int, count: int) -> np.ndarray:
    """Mel power (count, N_MELS) float32 of hops ``first_hop ..``; ``read(start, stop)`` returns the
    timeline samples [start, stop) as float32, zeros where there is no audio."""
    if count <= 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    start = first_hop * HOP - WIN // 2
    samples = read(start, start + (count - 1) * HOP + WIN)
    frames = np.lib.stride_tricks.sliding_window_view(samples, WIN)[::HOP][:count]
    spectrum = np.abs(np.fft.rfft(frames.astype(np.float64) * _window(), n=N_FFT, axis=1)) ** 2
    # float64 sums: the result does not depend on how many hops are computed at once (streaming
    # computes a few per frame, training whole clips), so streaming and offline features agree.
    return (spectrum @ mel_filterbank().T.astype(np.float64)).astype(np.float32)


def clip_reader(audio: np.ndarray):
    """``read(start, stop)`` over one clip's samples (timeline sample 0 = audio[0]), zeros outside."""
    audio = np.asarray(audio, dtype=np.float32)

    def read(start: int, stop: int) -> np.ndarray:
        out = np.zeros(stop - start, dtype=np.float32)
        lo, hi = max(start, 0), min(stop, audio.size)
        if hi > lo:
            out[lo - start : hi - start] = audio[lo:hi]
        return out

    return read


def clip_mel_power(audio: np.ndarray, hops: int | None = None) -> np.ndarray:
    """Mel power of every hop of a clip, (hops, N_MELS); default one hop per 10 ms of audio."""
    hops = int(np.ceil(audio.size / HOP)) if hops is None else hops
    return mel_power(clip_reader(audio), 0, hops)


def log_mel(power: np.ndarray) -> np.ndarray:
    """Model input from mel power: dB scaled to about -2..2 (0 dB full scale -> 2, -80 dB -> -2),
    never below ``LOG_FLOOR`` (-3, digital silence)."""
    db = 10.0 * np.log10(np.maximum(power, 10.0 ** (FLOOR_DB / 10.0)))
    return ((db + 40.0) / 20.0).astype(np.float32)


LOG_FLOOR = (FLOOR_DB + 40.0) / 20.0
"""``log_mel`` of digital silence (-3)."""


def frame_hops(frame: int, fps: float = 25.0) -> int:
    """Hop index of video frame ``frame``'s instant (``round(frame / fps / 10 ms)``)."""
    return int(round(frame * SAMPLE_RATE / fps / HOP))


def frame_context(mel_power: np.ndarray, frame: int, fps: float = 25.0) -> np.ndarray:
    """The (CONTEXT_HOPS, N_MELS) mel power that video frame ``frame`` sees, cut from a clip's hops
    (``clip_mel_power``); hops before the clip's start or past its end are zeros."""
    lo = frame_hops(frame, fps) - PAST_HOPS
    out = np.zeros((CONTEXT_HOPS, mel_power.shape[1]), np.float32)
    a, b = max(lo, 0), min(lo + CONTEXT_HOPS, len(mel_power))
    if b > a:
        out[a - lo : b - lo] = mel_power[a:b]
    return out
