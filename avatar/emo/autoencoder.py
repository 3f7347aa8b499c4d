"""The project's small autoencoder (256² face ↔ 16×16 latent) and a codec wrapper that also accepts
diffusers' ``AutoencoderKL`` (SD-VAE, base512)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.nn.functional.silu(self.conv1(x)))


class TinyAutoencoder(ModelMixin, ConfigMixin):
    """Deterministic conv autoencoder; downsampling factor 2**len(encoder_channels).

    The decoder upsamples with pixel-shuffle: its last conv runs at half resolution and emits 3·4
    channels, so nothing but a pixel-shuffle touches full resolution (cheap on CPU).
    Images are float in [-1, 1], (n, 3, H, W); latents are (n, latent_channels, H/f, W/f), already scaled
    by ``scaling_factor`` (≈ unit variance for a trained model).
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 8,
        encoder_channels: tuple[int, ...] = (16, 32, 64, 128),
        decoder_channels: tuple[int, ...] = (128, 64, 32, 16),
        scaling_factor: float = 1.0,
    ) -> None:
        super().__init__()
        if len(encoder_channels) != len(decoder_channels):
            raise ValueError("encoder_channels and decoder_channels need the same number of levels")
        enc: list[nn.Module] = []
        prev = 3
        for ch in encoder_channels:
            enc += [nn.Conv2d(prev, ch, 3, stride=2, padding=1), nn.SiLU()]
            prev = ch
        enc += [_Residual(prev), nn.Conv2d(prev, latent_channels, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [
            nn.Conv2d(latent_channels, decoder_channels[0], 3, padding=1),
            nn.SiLU(),
            _Residual(decoder_channels[0]),
        ]
        for i, ch in enumerate(decoder_channels):
            out = decoder_channels[i + 1] if i + 1 < len(decoder_channels) else 3
            dec += [nn.Conv2d(ch, out * 4, 3, padding=1), nn.PixelShuffle(2)]
            if i + 1 < len(decoder_channels):
                dec.append(nn.SiLU())
        self.decoder = nn.Sequential(*dec)

    @property
    def downsample_factor(self) -> int:
        return 2 ** len(self.config.encoder_channels)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images) * self.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents / self.config.scaling_factor).clamp(-1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))


class LatentCodec:
    """Uniform encode/decode over ``TinyAutoencoder`` or ``AutoencoderKL`` (latent mean × scaling factor)."""

    def __init__(self, model: TinyAutoencoder | AutoencoderKL) -> None:
        self.model = model

    @property
    def latent_channels(self) -> int:
        return int(self.model.config.latent_channels)

    @property
    def downsample_factor(self) -> int:
        if isinstance(self.model, TinyAutoencoder):
            return self.model.downsample_factor
        return 2 ** (len(self.model.config.block_out_channels) - 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images: (n, 3, H, W) in [-1, 1] → (n, latent_channels, H/f, W/f)."""
        if isinstance(self.model, TinyAutoencoder):
            return self.model.encode(images)
        return self.model.encode(images).latent_dist.mean * self.model.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents → images (n, 3, H, W) in [-1, 1]."""
        if isinstance(self.model, TinyAutoencoder):
            return self.model.decode(latents)
        return self.model.decode(latents / self.model.config.scaling_factor).sample.clamp(-1, 1)
