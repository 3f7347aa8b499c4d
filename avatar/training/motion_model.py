"""The motion denoiser in torch, for training; same function and parameter names as the numpy
``avatar.motion.network.MotionDenoiser`` that runs it at inference (see that module for shapes)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from avatar.motion.network import MotionNetConfig


def schedule(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma) of the cosine schedule at diffusion times ``t`` in [0, 1]."""
    return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class _Block(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, 2 * hidden)
        self.fc2 = nn.Linear(2 * hidden, hidden)
        self.act = nn.GELU(approximate="tanh")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.act(self.fc1(self.norm(h))))


class _AudioEncoder(nn.Module):
    def __init__(self, c: MotionNetConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c.audio_hops * c.n_mels, c.audio_hidden)
        self.proj = nn.Linear(c.audio_hidden, c.hidden)
        self.null = nn.Parameter(torch.zeros(c.hidden))
        self.act = nn.GELU(approximate="tanh")
        self.drop_in = nn.Dropout(c.audio_dropout / 3.0)
        self.drop = nn.Dropout(c.audio_dropout)
        self.register_buffer("mel_mean", torch.zeros(c.n_mels))
        self.register_buffer("mel_std", torch.ones(c.n_mels))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        mel = (mel - self.mel_mean) / self.mel_std
        h = self.act(self.fc1(self.drop_in(mel.reshape(mel.shape[0], -1))))
        return self.proj(self.drop(h))


class _MotionEncoder(nn.Module):
    def __init__(self, c: MotionNetConfig) -> None:
        super().__init__()
        self.frames = c.motion_frames
        self.proj = nn.Linear(c.motion_frames * c.motion_dim, c.hidden)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.proj(context[:, -self.frames :].reshape(context.shape[0], -1))


class _TimeMLP(nn.Module):
    def __init__(self, c: MotionNetConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c.time_dim, c.hidden)
        self.fc2 = nn.Linear(c.hidden, c.hidden)
        self.act = nn.GELU(approximate="tanh")
        self.dim = c.time_dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(time_embedding(t, self.dim))))


class MotionDenoiserModule(nn.Module):
    """One part's denoiser: ``condition(mel, context, audio_keep)`` once per frame, ``velocity(x_t, t, c)``
    per step, on that part's values only."""

    def __init__(self, config: MotionNetConfig) -> None:
        super().__init__()
        self.config = config
        self.audio = _AudioEncoder(config)
        self.motion = _MotionEncoder(config) if config.motion_frames else None
        self.time = _TimeMLP(config)
        self.in_proj = nn.Linear(config.motion_dim, config.hidden)
        self.blocks = nn.ModuleList(_Block(config.hidden) for _ in range(config.blocks))
        self.out_norm = nn.LayerNorm(config.hidden)
        self.out_proj = nn.Linear(config.hidden, config.motion_dim)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def condition(
        self, mel: torch.Tensor, context: torch.Tensor, audio_keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        """c (B, H) from log-mel (B, 48, 40) and this part's motion frames (B, n, D); rows where
        ``audio_keep`` (B,) is 0 take the learned no-audio embedding."""
        audio = self.audio(mel)
        if audio_keep is not None:
            keep = audio_keep[:, None]
            audio = keep * audio + (1.0 - keep) * self.audio.null[None]
        return audio if self.motion is None else audio + self.motion(context)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.in_proj(x) + cond + self.time(t)
        for block in self.blocks:
            h = block(h)
        return self.out_proj(self.out_norm(h))

    def x0(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        alpha, sigma = schedule(t)
        return alpha[:, None] * x - sigma[:, None] * self.velocity(x, t, cond)

    def set_mel_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Fix the per-band standardisation of the log-mel input (from the training data)."""
        self.audio.mel_mean.copy_(torch.from_numpy(np.asarray(mean, np.float32)))
        self.audio.mel_std.copy_(torch.from_numpy(np.maximum(np.asarray(std, np.float32), 1e-3)))

    def numpy_params(self) -> dict[str, np.ndarray]:
        """Parameters as float32 arrays under the numpy denoiser's names."""
        return {k: v.detach().cpu().float().numpy() for k, v in self.state_dict().items()}

    def load_numpy_params(self, params: dict[str, np.ndarray]) -> None:
        self.load_state_dict(
            {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in params.items()}
        )
