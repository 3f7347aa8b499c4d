"""Stateless acoustic features on a sub-frame grid for the parametric motion model (numpy only).

Video frame ``f`` (40 ms at 25 fps) is split into ``subframes`` equal sub-frames (20 ms each at
25 fps); sub-frame ``j`` covers timeline samples ``[round(j * step), round((j + 1) * step))`` with
``step = 16000 / fps / subframes``. Each sub-frame is analysed with a 32 ms Hann window for level
and band energies and a 48 ms Hann window for periodicity and pitch, both centred on it, so the
analysis reads at most ``FeatureExtractor.reach_samples`` (14 ms at 25 fps) beyond either edge.
Samples outside the window's buffer read as zeros.

Every feature is a pure function of the audio around the sub-frame, so the same audio gives the
same features whatever the window size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar.engine import SAMPLE_RATE, AudioWindow

BAND_EDGES_HZ: tuple[float, ...] = (80.0, 300.0, 1000.0, 2500.0, 7600.0)
"""Band ``k`` spans ``[BAND_EDGES_HZ[k], BAND_EDGES_HZ[k+1])``: voicing/nasal murmur, F1, F2, frication."""
NUM_BANDS = len(BAND_EDGES_HZ) - 1
SILENCE_DB = -100.0
"""Level reported for digital silence (dBFS)."""
PITCH_RANGE_HZ = (60.0, 400.0)
PITCH_LOWPASS_HZ = 4000.0
PEAK_RATIO = 0.9
"""The shortest-lag autocorrelation peak within this ratio of the best one gives the period."""
VOICED_PERIODICITY = 0.5
"""Periodicity above which a sub-frame counts as voiced (``f0_hz`` is 0 below it)."""
SUBFRAME_TARGET_SAMPLES = 320
"""Preferred sub-frame length (20 ms); the real one divides the video frame evenly."""


@dataclass(frozen=True)
class SubframeFeatures:
    """Acoustic description of one sub-frame.

    energy_db    dBFS   RMS level (``SILENCE_DB`` for digital silence)
    band_db      (4,)   level in each ``BAND_EDGES_HZ`` band, dB re full scale
    periodicity  0..1   normalised autocorrelation peak for pitches in ``PITCH_RANGE_HZ``
    f0_hz        Hz     pitch of that peak when ``periodicity >= VOICED_PERIODICITY``, else 0
    """

    energy_db: float
    band_db: np.ndarray
    periodicity: float
    f0_hz: float


def _db(power: np.ndarray | float) -> np.ndarray:
    return np.maximum(10.0 * np.log10(np.maximum(power, 1e-30)), SILENCE_DB)


def _read(samples: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``samples[start:stop]`` as float64 in [-1, 1]; zeros outside the buffer and for NaN/inf."""
    out = np.zeros(stop - start, dtype=np.float64)
    lo, hi = max(start, 0), min(stop, len(samples))
    if hi > lo:
        out[lo - start : hi - start] = samples[lo:hi]
    if not np.isfinite(out).all():
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(out, -1.0, 1.0, out=out)


def _hann(n: int) -> np.ndarray:
    return np.hanning(n + 2)[1:-1]


class FeatureExtractor:
    """Computes ``SubframeFeatures`` for any sub-frame of an ``AudioWindow`` at a fixed frame rate."""

    def __init__(self, fps: float = 25.0) -> None:
        self.fps = float(fps)
        samples_per_frame = SAMPLE_RATE / self.fps
        self.subframes = max(1, round(samples_per_frame / SUBFRAME_TARGET_SAMPLES))
        self.step = samples_per_frame / self.subframes
        """Sub-frame length in samples (may be fractional)."""
        self.spec_len = int(min(512, 2 * round(self.step)))
        self.spec_fft = 512
        self._spec_win = _hann(self.spec_len)
        # |rfft|^2 * norm summed over bins = window-weighted mean square of the segment.
        self._spec_norm = 2.0 / float(np.sum(self._spec_win**2)) / self.spec_fft
        freqs = np.fft.rfftfreq(self.spec_fft, 1.0 / SAMPLE_RATE)
        edges = zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:], strict=True)
        self._band_masks = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in edges]).astype(np.float64)
        self.pitch_len = int(max(768, 2 * round(self.step)))
        self.pitch_fft = 1 << int(np.ceil(np.log2(2 * self.pitch_len)))
        self._pitch_win = _hann(self.pitch_len)
        win_ac = np.fft.irfft(np.abs(np.fft.rfft(self._pitch_win, self.pitch_fft)) ** 2)
        self._min_lag = int(SAMPLE_RATE / PITCH_RANGE_HZ[1])
        self._max_lag = int(np.ceil(SAMPLE_RATE / PITCH_RANGE_HZ[0]))
        self._win_ac = np.maximum(win_ac[: self._max_lag + 2] / win_ac[0], 1e-3)
        pfreqs = np.fft.rfftfreq(self.pitch_fft, 1.0 / SAMPLE_RATE)
        self._pitch_lowpass = (pfreqs < PITCH_LOWPASS_HZ).astype(np.float64)

    @property
    def reach_samples(self) -> int:
        """How far the analysis reads beyond either edge of a sub-frame (samples)."""
        return int(np.ceil((max(self.spec_len, self.pitch_len) - self.step) / 2.0))

    def span(self, index: int) -> tuple[int, int]:
        """Timeline sample range ``[start, stop)`` of sub-frame ``index``."""
        return round(index * self.step), round((index + 1) * self.step)

    def subframe(self, window: AudioWindow, index: int) -> SubframeFeatures:
        """Features of timeline sub-frame ``index`` read from ``window.samples``."""
        return self.subframes_of(window, index, 1)[0]

    def subframes_of(self, window: AudioWindow, first: int, count: int) -> list[SubframeFeatures]:
        """Features of timeline sub-frames ``[first, first + count)`` (one vectorised pass)."""
        if count <= 0:
            return []
        index = np.arange(first, first + count)
        starts = np.round(index * self.step).astype(np.int64) - window.start_sample
        stops = np.round((index + 1) * self.step).astype(np.int64) - window.start_sample
        centres = (starts + stops) // 2
        lo = int(min(starts[0], centres[0] - self.pitch_len // 2))
        hi = int(max(stops[-1], centres[-1] + self.pitch_len))
        samples, offset = _read(window.samples, lo, hi), -lo
        spec = self._gather(samples, centres - self.spec_len // 2 + offset, self.spec_len)
        spec -= spec.mean(axis=1, keepdims=True)
        power = np.abs(np.fft.rfft(spec * self._spec_win, self.spec_fft, axis=1)) ** 2 * self._spec_norm
        band_db = _db(power @ self._band_masks.T)
        energy_db = _db(power.sum(axis=1))
        pitch = self._gather(samples, centres - self.pitch_len // 2 + offset, self.pitch_len)
        periodicity, f0 = self._pitch(pitch - pitch.mean(axis=1, keepdims=True))
        rows = zip(energy_db.tolist(), band_db, periodicity.tolist(), f0.tolist(), strict=True)
        return [SubframeFeatures(e, b, p, f) for e, b, p, f in rows]

    @staticmethod
    def _gather(samples: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """Rows ``samples[start : start + length]`` for each start, shape (len(starts), length)."""
        return samples[starts[:, None] + np.arange(length)]

    def _pitch(self, segs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Periodicity (0..1) and pitch (Hz, 0 when unvoiced) per row, from the low-passed autocorrelation."""
        spec = np.abs(np.fft.rfft(segs * self._pitch_win, self.pitch_fft, axis=1)) ** 2 * self._pitch_lowpass
        ac = np.fft.irfft(spec, axis=1)[:, : self._max_lag + 2]
        energy = ac[:, :1]
        norm = ac / np.maximum(energy, 1e-12) / self._win_ac
        lo, hi = self._min_lag, self._max_lag
        search = norm[:, lo - 1 : hi + 2]  # one extra lag each side to find local peaks
        mid = search[:, 1:-1]
        best = mid.max(axis=1, keepdims=True)
        # Shortest lag whose local peak comes close to the best one (avoids picking twice the period).
        is_peak = (mid >= search[:, :-2]) & (mid >= search[:, 2:]) & (mid >= PEAK_RATIO * best)
        rows = np.arange(len(segs))
        lag = lo + np.where(is_peak.any(axis=1), np.argmax(is_peak, axis=1), np.argmax(mid, axis=1))
        periodicity = np.clip(norm[rows, lag], 0.0, 1.0)
        periodicity[energy[:, 0] <= 1e-12] = 0.0
        a, b, c = norm[rows, lag - 1], norm[rows, lag], norm[rows, lag + 1]
        denom = a - 2.0 * b + c
        safe = np.where(denom < 0, denom, -1.0)
        offset = np.where(denom < 0, 0.5 * (a - c) / safe, 0.0)
        f0 = np.where(periodicity >= VOICED_PERIODICITY, SAMPLE_RATE / (lag + offset), 0.0)
        return periodicity, f0
