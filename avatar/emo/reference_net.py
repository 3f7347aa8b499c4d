"""ReferenceNet: the Backbone's UNet shape without temporal layers; encodes the reference portrait
(reference bank) and, separately, the motion frames (per-slot spatial features)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from avatar.emo.unet_blocks import EmoUNetBase, UNetIO, UNetSpec


@dataclass
class ReferenceFeatures:
    """bank: per attention layer (n, h·w, c), the tokens entering self-attention.
    slots: per motion-module slot (n, c, h, w), the spatial features where the Backbone's motion modules
    sit."""

    bank: list[torch.Tensor]
    slots: list[torch.Tensor]


class ReferenceNet(ModelMixin, ConfigMixin, EmoUNetBase):
    """UNet encoder of reference / motion-frame latents, run at timestep 0. No audio, no temporal layers,
    no output head (the SD1.5 ``conv_norm_out``/``conv_out`` keys are not used)."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        attention_levels: tuple[bool, ...] = (True, True, True, False),
        attention_head_dim: int = 40,
        norm_num_groups: int = 32,
        num_attention_heads: int | None = None,
    ) -> None:
        super().__init__()
        spec = UNetSpec(
            in_channels=in_channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            attention_levels=tuple(attention_levels),
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            audio_dim=None,
            temporal=False,
            temporal_heads=1,
            max_frames=1,
            num_attention_heads=num_attention_heads,
            speed_dim=None,
        )
        self._build(spec, out_channels=None)

    def forward(self, latents: torch.Tensor, timestep: float | torch.Tensor = 0.0) -> ReferenceFeatures:
        """latents: (n, in_channels, h, w) → features of each of the n images (independently)."""
        io = UNetIO(num_frames=1, record_bank=[], record_slots=[])
        self._run(latents, torch.as_tensor(timestep, dtype=latents.dtype), io, head=False)
        return ReferenceFeatures(bank=io.record_bank, slots=io.record_slots)
