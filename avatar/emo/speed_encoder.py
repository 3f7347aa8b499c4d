"""Speed layers: head-rotation velocity per frame → bucket activations → MLP → speed tokens."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class SpeedEncoder(ModelMixin, ConfigMixin):
    """velocity (batch, frames + 2·context), in degrees per frame, → tokens (batch, frames, 2·context+1, dim).

    Bucket i has centre c_i and radius r_i: s_i = tanh((w − c_i) / r_i · 3). Frame f's tokens are the
    bucket vectors of frames f−context … f+context through an MLP, plus a learned position embedding.
    """

    @register_to_config
    def __init__(
        self,
        centers: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
        radii: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 2.0, 2.0),
        context: int = 2,
        dim: int = 64,
    ) -> None:
        super().__init__()
        if len(centers) != len(radii):
            raise ValueError("speed buckets need as many radii as centres")
        self.register_buffer("bucket_centers", torch.tensor(centers, dtype=torch.float32), persistent=False)
        self.register_buffer("bucket_radii", torch.tensor(radii, dtype=torch.float32), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(len(centers), dim), nn.SiLU(), nn.Linear(dim, dim))
        self.position = nn.Parameter(torch.zeros(2 * context + 1, dim))

    def buckets(self, velocity: torch.Tensor) -> torch.Tensor:
        """(…, n) → (…, n, buckets) with values in (−1, 1)."""
        return torch.tanh((velocity[..., None] - self.bucket_centers) / self.bucket_radii * 3.0)

    def forward(self, velocity: torch.Tensor) -> torch.Tensor:
        k = 2 * self.config.context + 1
        windows = self.buckets(velocity).unfold(1, k, 1).transpose(-1, -2)  # (b, frames, k, buckets)
        return self.mlp(windows) + self.position
