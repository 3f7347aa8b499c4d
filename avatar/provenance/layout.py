"""Where the mark lives: a key-seeded spread-spectrum layout over 8x8 block-DCT coefficients of the
luma channel, resampled to a fixed canonical size.

Every image, whatever its size, is read (and written) through a ``CANONICAL`` x ``CANONICAL`` luma
grid, so a frame rescaled to any size is read back at the same grid. The grid is split into 8x8 blocks
(1024 blocks; a block is 16x16 pixels of a 512 px frame) and a mid-frequency band of each block's DCT
carries the mark. Each carrying coefficient belongs to one of ``CHANNELS`` channels (key-seeded
interleaving: a channel's coefficients are scattered over the whole frame) and has a key-seeded ±1
chip. Channels ``[0, CODED)`` carry the convolutionally coded payload, the rest carry a fixed
pseudo-random sync pattern (pilots) used to test for the mark's presence.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from avatar.provenance import ecc
from avatar.provenance.payload import PAYLOAD_BITS

CANONICAL = 256
"""Side of the square luma grid the mark is defined on (pixels)."""
BLOCK = 8
BLOCKS = CANONICAL // BLOCK
BAND: tuple[tuple[int, int], ...] = ((1, 2), (2, 1), (1, 3), (2, 2), (3, 1), (2, 3), (3, 2))
"""DCT positions (row frequency, column frequency) that carry the mark in every block: periods of
about 10-32 px at 512 px, chosen by measurement as what survives VP8 at 500 kbps best for a given PSNR
(lower bands survive better but look like a blotchy grid; higher ones are quantized away)."""
CODED = ecc.coded_length(PAYLOAD_BITS)
CHANNELS = 256
PILOTS = CHANNELS - CODED
DEFAULT_KEY = 0x7A1C_2026
"""Key of this project's marks (public: the mark is for provenance, not for secrecy)."""

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _dct_matrix(n: int = BLOCK) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


DCT = _dct_matrix()


def block_dct(image: np.ndarray) -> np.ndarray:
    """(CANONICAL, CANONICAL) float -> (BLOCKS, BLOCKS, 8, 8) orthonormal DCT-II of each 8x8 block."""
    blocks = image.reshape(BLOCKS, BLOCK, BLOCKS, BLOCK).transpose(0, 2, 1, 3)
    return DCT @ blocks @ DCT.T


def block_idct(coefficients: np.ndarray) -> np.ndarray:
    """Inverse of ``block_dct``: (BLOCKS, BLOCKS, 8, 8) -> (CANONICAL, CANONICAL) float32."""
    blocks = DCT.T @ coefficients.astype(np.float32) @ DCT
    return blocks.transpose(0, 2, 1, 3).reshape(CANONICAL, CANONICAL)


def luma(image_rgb: np.ndarray) -> np.ndarray:
    """uint8/float RGB (h, w, 3) -> float32 luma (h, w), BT.601 weights, 0..255."""
    return image_rgb.astype(np.float32) @ LUMA_WEIGHTS


def to_canonical(plane: np.ndarray) -> np.ndarray:
    """Resample a (h, w) float32 plane to (CANONICAL, CANONICAL): area averaging when shrinking."""
    h, w = plane.shape
    if (h, w) == (CANONICAL, CANONICAL):
        return plane
    shrinking = h >= CANONICAL and w >= CANONICAL
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(plane, (CANONICAL, CANONICAL), interpolation=interpolation)


@dataclass(frozen=True)
class Layout:
    """The key's spread-spectrum layout (read-only, shared)."""

    key: int
    channel: np.ndarray
    """int64 (BLOCKS, BLOCKS, len(BAND)): channel index of each carrying coefficient."""
    chip: np.ndarray
    """float32 (BLOCKS, BLOCKS, len(BAND)): ±1 spreading chip of each carrying coefficient."""
    pilot: np.ndarray
    """float32 (PILOTS,): ±1 sync pattern carried by channels CODED .. CHANNELS-1."""

    def channel_signs(self, payload_bits: np.ndarray) -> np.ndarray:
        """±1 float32 (CHANNELS,): the coded payload followed by the pilot pattern."""
        coded = ecc.encode(payload_bits).astype(np.float32) * 2.0 - 1.0
        return np.concatenate([coded, self.pilot])


@lru_cache(maxsize=8)
def layout_for(key: int = DEFAULT_KEY) -> Layout:
    """The layout for ``key`` (a non-negative integer; the same key always gives the same layout)."""
    if int(key) < 0:
        raise ValueError(f"key must be a non-negative integer, got {key}")
    rng = np.random.default_rng([int(key) & 0xFFFFFFFF, int(key) >> 32, 0x5EED])
    count = BLOCKS * BLOCKS * len(BAND)
    channel = (rng.permutation(count) % CHANNELS).reshape(BLOCKS, BLOCKS, len(BAND))
    chip = (rng.integers(0, 2, size=channel.shape) * 2 - 1).astype(np.float32)
    pilot = (rng.integers(0, 2, size=PILOTS) * 2 - 1).astype(np.float32)
    return Layout(key=int(key), channel=channel, chip=chip, pilot=pilot)
