"""Drawn training clips for the EMO trainer tests (no third-party media): a bright square 'face' that
moves on noise, vowel-burst audio, face boxes and head speed, saved in the prepared-data layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avatar.training.data import ClipArrays, save_clip, write_manifest
from tests.media import vowel_bursts


def write_drawn_clips(out: Path, crop: int = 64, clips: int = 2, frames: int = 16) -> Path:
    """``clips`` clips of ``frames`` frames (crop × crop, 25 fps) under ``out``; returns ``out``."""
    rng = np.random.default_rng(0)
    for i in range(clips):
        images = (rng.random((frames, crop, crop, 3)) * 80 + 60).astype(np.uint8)
        q = crop // 4
        for t in range(frames):
            x = q + (t % 4)
            images[t, q : 3 * q, x : x + 2 * q] = (220, 180, 150)
        audio = vowel_bursts(frames / 25, lead_silence_s=0.1)
        boxes = np.tile([[q, q, 3 * q, 3 * q]], (frames, 1)).astype(np.float32)
        head, speed = np.zeros((frames, 3), np.float32), np.ones(frames, np.float32)
        clip = ClipArrays(images, audio, boxes, head, speed)
        save_clip(out / f"clip{i}", clip, {"source": f"drawn{i}", "kind": "test", "fps": 25.0})
    write_manifest(out, crop, 25.0, [])
    return out
