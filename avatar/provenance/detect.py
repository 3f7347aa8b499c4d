"""Detection: read the mark back from an image or a video and decide whether it is there.

Per image, each channel yields a statistic ``t`` = (sum of chip x normalised coefficient) / (root of
the sum of squared normalised coefficients). On an image that does not carry the mark, the key's
chips are independent of the content, so every ``t`` -- and the sync score ``z`` = pilot-pattern
correlation of the pilot channels' ``t`` / sqrt(pilots) -- is a Rademacher sum with unit variance:
P(z >= x) <= exp(-x^2 / 2) (Hoeffding), whatever the picture. The coded channels' ``t`` are then
independent and sign-symmetric, so the Viterbi output is a uniformly random message and passes the
marker + CRC check with probability exactly 2^-24, independently of ``z`` (disjoint coefficients).
Averaging over video frames keeps both facts (an average of sub-Gaussian variables is sub-Gaussian
with the same proxy). Hence the false-alarm probability of a decision is bounded by

    p_false = exp(-max(z, 0)^2 / 2) * (2^-24 if the decoded payload's marker and CRC check else 1)

A mark is reported when ``p_false <= FOUND_P_FALSE`` (1e-9): z >= 2.9 with a valid payload, or
z >= 6.4 without one (a mark too damaged to read). ``confidence`` maps p_false to 0..1 on a log scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avatar.provenance import ecc
from avatar.provenance.layout import (
    BAND,
    CHANNELS,
    CODED,
    DEFAULT_KEY,
    PILOTS,
    block_dct,
    layout_for,
    luma,
    to_canonical,
)
from avatar.provenance.payload import CRC_BITS, MARKER_BITS, Payload

FOUND_P_FALSE = 1e-9
"""Largest false-alarm probability bound at which a mark is reported."""
CONFIDENCE_LOG10_RANGE = (2.0, 10.0)
"""confidence is 0 when p_false >= 1e-2 and 1 when p_false <= 1e-10, linear in log10(p_false) between."""
NOISE_FLOOR = 1.0
"""Added (in DCT units) to each block's band magnitude before normalising: keeps flat areas quiet."""

_BAND_U = np.array([u for u, _ in BAND])
_BAND_V = np.array([v for _, v in BAND])


@dataclass
class Detection:
    """Outcome of looking for the mark in an image or a video."""

    found: bool
    """True when the evidence bounds the false-alarm probability by ``FOUND_P_FALSE``."""
    confidence: float
    """0..1; 1 means p_false <= 1e-10 (see the module docstring)."""
    payload: Payload | None
    """The decoded message when its marker and CRC check, else None."""
    bit_accuracy: float
    """Fraction of the 256 channel signs that agree with the decoded codeword and the sync pattern:
    1.0 on a clean mark, about 0.65-0.75 on unmarked input (decoding fits the codeword nearest to the
    noise), 0 on an image without any texture in the mark's band (flat)."""
    sync_score: float
    """z: pilot correlation in standard deviations of the no-mark distribution."""
    log10_p_false: float
    """log10 of the bound on the probability that unmarked input scores as well (more negative is
    stronger evidence)."""
    frames: int = 1
    """Frames aggregated (1 for an image)."""
    notes: list[str] = field(default_factory=list)

    @property
    def p_false(self) -> float:
        """The false-alarm probability bound itself (0.0 when it underflows)."""
        return 10.0**self.log10_p_false

    def summary(self) -> str:
        """One line for people."""
        if not self.found:
            return f"no mark found (confidence {self.confidence:.2f}, sync z={self.sync_score:.1f})"
        what = str(self.payload) if self.payload else "payload unreadable"
        return f"marked by this project (confidence {self.confidence:.2f}): {what}"


def channel_statistics(image_rgb: np.ndarray, key: int = DEFAULT_KEY) -> np.ndarray:
    """float64 (CHANNELS,) per-channel statistics ``t`` of one RGB image (uint8 (h, w, 3), any size)."""
    layout = layout_for(key)
    coefficients = block_dct(to_canonical(luma(image_rgb)))
    band = coefficients[:, :, _BAND_U, _BAND_V].astype(np.float64)  # (BLOCKS, BLOCKS, len(BAND))
    magnitude = np.sqrt(np.mean(band**2, axis=2, keepdims=True)) + NOISE_FLOOR
    normalised = band / magnitude
    flat_channel = layout.channel.reshape(-1)
    numerator = np.bincount(flat_channel, (layout.chip * normalised).reshape(-1), minlength=CHANNELS)
    energy = np.bincount(flat_channel, (normalised**2).reshape(-1), minlength=CHANNELS)
    return np.divide(numerator, np.sqrt(energy), out=np.zeros(CHANNELS), where=energy > 1e-12)


def decide(statistics: np.ndarray, key: int = DEFAULT_KEY, frames: int = 1) -> Detection:
    """Decode and judge (possibly frame-averaged) channel statistics of shape (CHANNELS,)."""
    layout = layout_for(key)
    coded, pilots = statistics[:CODED], statistics[CODED:]
    sync = float(np.dot(pilots, layout.pilot) / math.sqrt(PILOTS))
    bits = ecc.decode(coded)
    payload = Payload.from_bits(bits)
    expected = layout.channel_signs(bits)
    agreement = float(np.mean(np.sign(statistics) == expected))
    log10_p = -(max(sync, 0.0) ** 2) / (2.0 * math.log(10.0))
    if payload is not None:
        log10_p -= (MARKER_BITS + CRC_BITS) * math.log10(2.0)
    detection = Detection(False, 0.0, payload, agreement, sync, log10_p, frames)
    return with_tests(detection, 1)


def with_tests(detection: Detection, tests: int) -> Detection:
    """Set ``found`` and ``confidence`` for a result that was the best of ``tests`` judgements
    (multiplies the false-alarm bound by ``tests``, capped at 1)."""
    detection.log10_p_false = min(0.0, detection.log10_p_false + math.log10(max(tests, 1)))
    low, high = CONFIDENCE_LOG10_RANGE
    detection.confidence = min(max((-detection.log10_p_false - low) / (high - low), 0.0), 1.0)
    detection.found = detection.log10_p_false <= math.log10(FOUND_P_FALSE)
    return detection


def detect(image_rgb: np.ndarray, key: int = DEFAULT_KEY) -> Detection:
    """Look for the mark in one RGB image (uint8 (h, w, 3), any size >= 16x16)."""
    if not isinstance(image_rgb, np.ndarray) or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError("image must be an array of shape (height, width, 3)")
    return decide(channel_statistics(image_rgb, key), key)


def detect_frames(frames_rgb: list[np.ndarray], key: int = DEFAULT_KEY) -> Detection:
    """Soft-vote over frames of one video: average the channel statistics, then decode once."""
    if not frames_rgb:
        raise ValueError("no frames to look at")
    mean = np.mean([channel_statistics(f, key) for f in frames_rgb], axis=0)
    return decide(mean, key, frames=len(frames_rgb))


def detect_video(path: str | Path, key: int = DEFAULT_KEY, max_frames: int = 300) -> Detection:
    """Look for the mark in a video file (soft vote over frames; see ``avatar.provenance.files``)."""
    from avatar.provenance import files

    return files.detect_video(path, key, max_frames)
