"""Reads prepared clips (``avatar.training.data`` layout) and samples training examples as tensors.

Images are float32 in [-1, 1], (…, 3, S, S); masks are float32 {0, 1} (…, 1, S, S) (face-box union of the
frames involved, the face locator's input); audio is the whole clip's 16 kHz samples with frame indices
into it; velocity is degrees per frame for the frames f−m … f+m of the window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avatar.errors import ConfigError
from avatar.training.data import MANIFEST


@dataclass
class Clip:
    id: str
    frames: np.ndarray  # uint8 (T, S, S, 3), memory-mapped
    audio: np.ndarray  # float32 (n,)
    boxes: np.ndarray  # float32 (T, 4)
    velocity: np.ndarray  # float32 (T,)


@dataclass
class WindowExample:
    """One video window of a clip: n motion frames then f target frames (``first`` = first target)."""

    reference: torch.Tensor  # (3, S, S)
    mask: torch.Tensor  # (1, S, S)
    motion: torch.Tensor  # (n, 3, S, S)
    target: torch.Tensor  # (f, 3, S, S)
    audio: torch.Tensor  # (samples,) whole clip
    first: int
    velocity: torch.Tensor  # (f + 2m,)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (…, S, S, 3) → float32 (…, 3, S, S) in [-1, 1]."""
    x = torch.from_numpy(np.array(frames)).float() / 127.5 - 1.0
    return x.movedim(-1, -3)


def box_mask(boxes: np.ndarray, size: int) -> torch.Tensor:
    """Union of face boxes (k, 4) in crop pixels → (1, size, size) float mask."""
    x0, y0 = np.floor(boxes[:, :2].min(0)).clip(0, size).astype(int)
    x1, y1 = np.ceil(boxes[:, 2:].max(0)).clip(0, size).astype(int)
    mask = torch.zeros(1, size, size)
    mask[:, y0:y1, x0:x1] = 1.0
    return mask


class ClipDataset:
    """All clips listed in ``root/manifest.json``; sampling methods take a ``numpy`` Generator."""

    def __init__(self, root: str | Path, crop_size: int | None = None) -> None:
        root = Path(root)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise ConfigError(
                f"no prepared data in {root} (no {MANIFEST}; run python -m avatar prepare-data)"
            )
        manifest = json.loads(manifest_path.read_text())
        self.crop_size = int(manifest["crop_size"])
        self.fps = float(manifest["fps"])
        if crop_size is not None and crop_size != self.crop_size:
            raise ConfigError(
                f"data in {root} has {self.crop_size}px crops but the model wants {crop_size}px; "
                "prepare the data with the model's config"
            )
        self.clips = [self._load(root / c["id"], c["id"]) for c in manifest["clips"]]
        if not self.clips:
            raise ConfigError(f"prepared data in {root} has no clips")

    @staticmethod
    def _load(d: Path, clip_id: str) -> Clip:
        return Clip(
            id=clip_id,
            frames=np.load(d / "frames.npy", mmap_mode="r"),
            audio=np.load(d / "audio.npy"),
            boxes=np.load(d / "boxes.npy"),
            velocity=np.load(d / "velocity.npy"),
        )

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def total_frames(self) -> int:
        return sum(len(c.frames) for c in self.clips)

    def sample_frames(self, rng: np.random.Generator, batch: int) -> torch.Tensor:
        """Random single frames (batch, 3, S, S) for the autoencoder."""
        out = []
        for _ in range(batch):
            clip = self.clips[rng.integers(len(self.clips))]
            out.append(clip.frames[rng.integers(len(clip.frames))])
        return to_tensor(np.stack(out))

    def sample_pairs(self, rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, ...]:
        """Stage 1: reference, target (batch, 3, S, S) from the same clip; mask (batch, 1, S, S)."""
        refs, targets, masks = [], [], []
        for _ in range(batch):
            clip = self.clips[rng.integers(len(self.clips))]
            r, t = rng.integers(len(clip.frames), size=2)
            refs.append(clip.frames[r])
            targets.append(clip.frames[t])
            masks.append(box_mask(clip.boxes[[r, t]], self.crop_size))
        return to_tensor(np.stack(refs)), to_tensor(np.stack(targets)), torch.stack(masks)

    def sample_window(
        self, rng: np.random.Generator, n_motion: int, frames: int, context: int
    ) -> WindowExample:
        """Stage 2/3: n motion + f target consecutive frames of one clip long enough (else the longest)."""
        need = n_motion + frames
        long_enough = [c for c in self.clips if len(c.frames) >= need]
        pool = long_enough or [max(self.clips, key=lambda c: len(c.frames))]
        clip = pool[rng.integers(len(pool))]
        total = len(clip.frames)
        start = int(rng.integers(0, max(1, total - need + 1)))
        idx = np.clip(np.arange(start, start + need), 0, total - 1)
        ref = int(rng.integers(total))
        first = start + n_motion
        vel_idx = np.clip(np.arange(first - context, first + frames + context), 0, total - 1)
        seq = to_tensor(clip.frames[idx])
        return WindowExample(
            reference=to_tensor(clip.frames[ref]),
            mask=box_mask(clip.boxes[np.append(idx[n_motion:], ref)], self.crop_size),
            motion=seq[:n_motion],
            target=seq[n_motion:],
            audio=torch.from_numpy(clip.audio),
            first=first,
            velocity=torch.from_numpy(clip.velocity[vel_idx]),
        )
