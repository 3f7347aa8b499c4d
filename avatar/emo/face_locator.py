"""Face locator: light convs that encode the face-region mask and add it to the noisy latent."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class FaceLocator(ModelMixin, ConfigMixin):
    """mask (n, 1, H·2**k, W·2**k) in {0, 1} → features (n, latent_channels, H, W), k = ``downsample_levels``.

    The last conv starts at zero so an untrained locator adds nothing.
    """

    @register_to_config
    def __init__(
        self, latent_channels: int = 4, channels: tuple[int, ...] = (16, 32), downsample_levels: int = 2
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, channels[0], 3, padding=1), nn.SiLU()]
        prev = channels[0]
        for i in range(downsample_levels):
            ch = channels[min(i + 1, len(channels) - 1)]
            layers += [nn.Conv2d(prev, ch, 3, stride=2, padding=1), nn.SiLU()]
            prev = ch
        self.encoder = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(prev, latent_channels, 1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def mask_scale(self) -> int:
        return 2 ** int(self.config.downsample_levels)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.encoder(mask))
