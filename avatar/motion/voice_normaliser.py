"""A voice's long-term spectrum taken out of the motion model's audio input (numpy only, causal).

Unseen speakers differ from the training speakers above all in timbre and in the colouring of their
microphone and room: both are nearly constant over a recording, while the mouth follows how the spectrum
*moves*. So the model sees each 10 ms log-mel hop (``audio_features.log_mel``, (40,)) minus the voice's
running mean spectrum plus the training corpus's mean (``prior``): a voice that sounds like the average
training voice is left as it is, a darker or brighter one, or a tinny microphone, is moved towards it.

The running mean, per hop ``h`` with log-mel row ``x_h``:

- speech gate ``g_h``: the hop's band mean is at most ``GATE`` (20 dB) below a running peak (which
  falls ``PEAK_FALL`` per hop, 4 dB/s) and above ``FLOOR`` (-90 dB), so pauses, breaths and a noise
  floor do not count;
- on speech hops ``s <- d s + x_h``, ``n <- d n + 1`` with ``d = 1 - 1 / (memory_s * 100)``, starting from
  ``s = prior_hops * prior``, ``n = prior_hops``: a new voice starts at the corpus mean and moves to its
  own mean as it speaks (half-way after ``prior_hops`` hops of speech), and forgets over ``memory_s``
  seconds of speech;
- the mean after hop ``h`` is ``s / n``.

A frame's whole 480 ms window is shifted by the mean after the window's last hop (one vector per frame)
and floored at digital silence (``LOG_FLOOR``): a voice brighter than the prior in a band would
otherwise push that band's silence below anything seen in training, and the mouth stayed parted in the
pauses. The state only moves forward hop by hop, so a stream cut into any windows gives the same means
as one offline pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avatar.motion.audio_features import LOG_FLOOR, N_MELS

GATE = 1.0
"""Log-mel units (20 dB) below the running peak still counted as speech."""
PEAK_FALL = 0.002
"""Log-mel units the running peak falls per 10 ms hop (4 dB per second)."""
FLOOR = -2.5
"""Log-mel units (-90 dB band mean) below which a hop is never speech (digital silence)."""
HOPS_PER_SECOND = 100


@dataclass(frozen=True)
class VoiceNormalisation:
    """Settings and corpus prior of the normalisation (saved in the motion model's folder)."""

    prior: np.ndarray
    """Mean log-mel (40,) of the training speakers' speech hops."""
    prior_hops: float = 100.0
    """Weight of the prior in hops of speech (1 s)."""
    memory_s: float = 15.0
    """Seconds of speech over which the running mean forgets."""

    def __post_init__(self) -> None:
        prior = np.asarray(self.prior, np.float32).reshape(-1)
        if prior.shape != (N_MELS,) or not np.isfinite(prior).all():
            raise ValueError(f"voice prior must be {N_MELS} finite values")
        if self.prior_hops <= 0 or self.memory_s <= 0:
            raise ValueError("voice prior_hops and memory_s must be positive")
        object.__setattr__(self, "prior", prior)

    def start(self) -> VoiceState:
        """The state before any audio: the corpus mean with weight ``prior_hops``."""
        return VoiceState(self.prior * self.prior_hops, float(self.prior_hops))

    def running_means(self, log_rows: np.ndarray, state: VoiceState) -> np.ndarray:
        """Advance ``state`` over log-mel hops (H, 40) in order; returns the mean after each hop (H, 40)."""
        decay = 1.0 - 1.0 / (self.memory_s * HOPS_PER_SECOND)
        out = np.empty((len(log_rows), N_MELS), np.float32)
        for h, row in enumerate(np.asarray(log_rows, np.float32)):
            if state.is_speech(row):
                state.total = decay * state.total + row
                state.weight = decay * state.weight + 1.0
            out[h] = state.total / state.weight
        return out

    def apply(self, log_window: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """The model input: log-mel windows (..., 48, 40) shifted by the voice mean (..., 40) towards
        the prior, floored at digital silence."""
        shift = (np.asarray(mean, np.float32) - self.prior)[..., None, :]
        return np.maximum(log_window - shift, LOG_FLOOR).astype(np.float32)

    def to_config(self) -> dict:
        return {"prior_hops": float(self.prior_hops), "memory_s": float(self.memory_s)}

    @classmethod
    def from_config(cls, config: dict, prior: np.ndarray) -> VoiceNormalisation:
        return cls(
            prior=prior,
            prior_hops=float(config.get("prior_hops", 100.0)),
            memory_s=float(config.get("memory_s", 15.0)),
        )


@dataclass
class VoiceState:
    """Running sums of one voice: ``total`` (40,) and ``weight`` (hops), and the speech gate's peak."""

    total: np.ndarray
    weight: float
    peak: float = field(default=-np.inf)

    def is_speech(self, row: np.ndarray) -> bool:
        """Update the running peak with one log-mel hop (40,) and say whether the hop is speech."""
        level = float(row.mean())
        self.peak = max(self.peak - PEAK_FALL, level)
        return level > FLOOR and level > self.peak - GATE


def speech_hops(log_rows: np.ndarray) -> np.ndarray:
    """Indices of the speech hops of a clip's log-mel (H, 40), by the same gate as the running mean."""
    state = VoiceState(np.zeros(N_MELS, np.float32), 1.0)
    return np.array([h for h, row in enumerate(np.asarray(log_rows)) if state.is_speech(row)], np.int64)
