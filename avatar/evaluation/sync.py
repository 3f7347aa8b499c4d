"""Audio-visual synchrony: the speech envelope, and lagged Pearson correlation between per-frame tracks.

All tracks are 1-D float arrays with one value per video frame (``fps`` frames per second); NaN marks
frames with no measurement (no face found) and is ignored pairwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.engine import SAMPLE_RATE

MIN_PAIRED_FRAMES = 8
"""Fewer finite frame pairs than this make a correlation meaningless; it is reported as 0."""


@dataclass(frozen=True)
class LagCorrelation:
    """Best Pearson r over a range of lags. ``lag_ms`` > 0 means the first track follows the second."""

    r: float
    lag_ms: float
    frames: int
    """Number of finite frame pairs behind ``r``."""


def frame_times(num_frames: int, fps: float) -> np.ndarray:
    """Instants ``f / fps`` (seconds) shown by frames ``0..num_frames-1``, float64 (num_frames,)."""
    return np.arange(num_frames, dtype=np.float64) / fps


def speech_envelope(
    audio: np.ndarray, times: np.ndarray, smoothing_ms: float = 100.0, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Linear RMS of ``audio`` in a centred ``smoothing_ms`` box around each of ``times`` (seconds).

    ``audio``: float mono at ``sample_rate``. Returns float64 shaped like ``times``; zero past the audio.
    """
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    width = max(1, round(smoothing_ms * sample_rate / 1000.0))
    power = np.concatenate([[0.0], np.cumsum(audio * audio)])
    centres = np.round(np.asarray(times, dtype=np.float64) * sample_rate).astype(np.int64)
    lo = np.clip(centres - width // 2, 0, len(audio))
    hi = np.clip(centres - width // 2 + width, 0, len(audio))
    total = power[hi] - power[lo]
    return np.sqrt(np.maximum(total, 0.0) / width)


def pearson(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Pearson r over frames where both tracks are finite, and how many such frames there were.

    Returns r = 0 when either track is constant there or fewer than ``MIN_PAIRED_FRAMES`` pairs exist
    (a frozen face has no correlation with anything; never NaN).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    ok = np.isfinite(a) & np.isfinite(b)
    count = int(ok.sum())
    if count < MIN_PAIRED_FRAMES:
        return 0.0, count
    a, b = a[ok], b[ok]
    if _is_flat(a) or _is_flat(b):
        return 0.0, count
    x, y = a - a.mean(), b - b.mean()
    denom = np.sqrt(np.dot(x, x) * np.dot(y, y))
    return float(np.clip(np.dot(x, y) / denom, -1.0, 1.0)), count


def _is_flat(values: np.ndarray) -> bool:
    """True when the spread is nil relative to the magnitude (float noise of a constant track)."""
    return float(np.ptp(values)) <= 1e-9 * max(float(np.abs(values).max()), 1e-30)


def shift(track: np.ndarray, frames: int) -> np.ndarray:
    """``track`` delayed by ``frames`` (content moves to later indices), NaN-padded, same length."""
    track = np.asarray(track, dtype=np.float64)
    out = np.full_like(track, np.nan)
    if frames >= 0:
        out[frames:] = track[: len(track) - frames] if frames < len(track) else []
    else:
        out[:frames] = track[-frames:]
    return out


def best_lag_correlation(
    follower: np.ndarray, leader: np.ndarray, fps: float, max_lag_ms: float = 200.0
) -> LagCorrelation:
    """Highest Pearson r of ``follower`` against ``leader`` shifted by up to ``±max_lag_ms``.

    ``lag_ms`` is positive when ``follower`` happens after ``leader`` (mouth after sound). The lag is
    refined below one frame by a parabola through the peak and its neighbours.
    """
    n = min(len(follower), len(leader))
    follower = np.asarray(follower, dtype=np.float64)[:n]
    leader = np.asarray(leader, dtype=np.float64)[:n]
    max_lag = int(np.floor(max_lag_ms * fps / 1000.0 + 1e-9))
    lags = np.arange(-max_lag, max_lag + 1)
    results = [pearson(follower, shift(leader, int(k))) for k in lags]
    rs = np.array([r for r, _ in results])
    best = int(np.argmax(rs))
    lag = float(lags[best])
    if 0 < best < len(rs) - 1:
        left, mid, right = rs[best - 1], rs[best], rs[best + 1]
        curvature = left - 2 * mid + right
        if curvature < 0:
            lag += float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
    if rs[best] == 0.0:
        lag = 0.0
    return LagCorrelation(r=float(rs[best]), lag_ms=lag * 1000.0 / fps, frames=results[best][1])


def frame_speech(
    audio: np.ndarray, fps: float, num_frames: int, margin_ms: float = 120.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame voice activity from ``avatar.audio.vad.VoiceActivity`` over 16 kHz ``audio``.

    Returns ``(speech, silent)`` bool arrays (num_frames,): ``speech`` where at least half of the frame's
    audio span is speech; ``silent`` where no speech lies within ``margin_ms`` of the frame (so the
    mouth has had time to close and is not yet opening for the next word).
    """
    from avatar.audio.vad import VAD_FRAME, VoiceActivity

    vad = VoiceActivity(history=len(audio) // VAD_FRAME + 16)
    vad.feed(np.asarray(audio, dtype=np.float32))
    spf = SAMPLE_RATE / fps
    spans = [(round(f * spf), round((f + 1) * spf)) for f in range(num_frames)]
    fraction = np.array([vad.speech_fraction(lo, hi) for lo, hi in spans], dtype=np.float64)
    margin = int(np.ceil(margin_ms * fps / 1000.0))
    any_speech = fraction > 0
    padded = np.concatenate([np.zeros(margin, bool), any_speech, np.zeros(margin, bool)])
    near = np.lib.stride_tricks.sliding_window_view(padded, 2 * margin + 1).any(axis=1)
    return fraction >= 0.5, ~near
