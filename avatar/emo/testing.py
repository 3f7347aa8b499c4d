"""Tiny, seeded EMO components and drawn inputs for tests and benchmarks (CPU, a few MB)."""

from __future__ import annotations

import numpy as np
import torch

from avatar.emo.checkpoint import build_pipeline
from avatar.emo.config import EmoConfig, load_emo_config
from avatar.emo.pipeline import EmoPipeline


def micro_config(**window) -> EmoConfig:
    """tiny.yaml shrunk: 64² face region, 8×8×4 latent, UNet (16, 32, 32); ``window`` overrides keys of
    the window section."""
    return load_emo_config("tiny").with_overrides(
        face={"crop_size": 64},
        autoencoder={"latent_channels": 4, "encoder_channels": [8, 8, 8], "decoder_channels": [16, 8, 8]},
        audio_encoder={"n_mels": 16, "hidden": 16, "num_layers": 3},
        audio_projection={"token_dim": 16},
        unet={"block_out_channels": [16, 32, 32], "norm_num_groups": 8, "attention_head_dim": 8,
              "temporal_heads": 2},
        speed_encoder={"dim": 8},
        face_locator={"channels": [4, 8]},
        window={"frames": 6, "motion_frames": 2, **window},
    )


def randomize_zero_layers(pipe: EmoPipeline, seed: int = 0, std: float = 0.05) -> None:
    """Give the zero-initialised outputs (temporal, speed, face locator) random weights, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(pipe.backbone.named_parameters()) + list(pipe.face_locator.named_parameters()):
            zero_init = "proj_out" in name or "attn_speed.to_out" in name or "conv_out" in name
            if zero_init and p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def make_pipeline(seed: int = 0, trained_like: bool = False, **window) -> EmoPipeline:
    pipe = build_pipeline(micro_config(**window), seed=seed)
    if trained_like:
        randomize_zero_layers(pipe, seed)
    return pipe


def drawn_face(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A drawn uint8 (size, size, 3) image and a face-box mask (size, size)."""
    rng = np.random.default_rng(seed)
    img = (rng.random((size, size, 3)) * 60 + 100).astype(np.uint8)
    q = size // 4
    img[q : 3 * q, q : 3 * q] = (220, 180, 150)
    mask = np.zeros((size, size), np.float32)
    mask[q : 3 * q, q : 3 * q] = 1.0
    return img, mask


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonic tone + noise bursts, float32 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 560), start=1))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    return (0.2 * tone * env + 0.03 * rng.standard_normal(t.size)).astype(np.float32)
