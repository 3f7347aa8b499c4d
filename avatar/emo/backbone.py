"""Backbone: the denoising UNet of EMO (reference-attention, audio-attention, temporal modules with
motion frames and speed layers)."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from avatar.emo.unet_blocks import EmoUNetBase, UNetIO, UNetSpec


class EmoBackbone(ModelMixin, ConfigMixin, EmoUNetBase):
    """Predicts the v-target (or ε, per the scheduler config) for a window of frame latents.

    Every transformer block: reference-attention (self-attention over the frame's tokens plus the
    ReferenceNet bank tokens of the same block), then audio-attention (cross-attention to the frame's audio
    tokens), then feed-forward. A temporal module follows every resnet/attention pair and the mid block.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        attention_levels: tuple[bool, ...] = (True, True, True, False),
        attention_head_dim: int = 40,
        norm_num_groups: int = 32,
        num_attention_heads: int | None = None,
        audio_dim: int = 768,
        temporal_heads: int = 8,
        max_frames: int = 32,
        speed_dim: int | None = 64,
        reference_concat: bool = False,
    ) -> None:
        super().__init__()
        spec = UNetSpec(
            in_channels=in_channels * (2 if reference_concat else 1),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            attention_levels=tuple(attention_levels),
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            audio_dim=audio_dim,
            temporal=True,
            temporal_heads=temporal_heads,
            max_frames=max_frames,
            num_attention_heads=num_attention_heads,
            speed_dim=speed_dim,
        )
        self._build(spec, out_channels=out_channels)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        audio_tokens: torch.Tensor,
        reference_bank: list[torch.Tensor],
        motion_features: list[torch.Tensor] | None = None,
        speed_tokens: torch.Tensor | None = None,
        face_features: torch.Tensor | None = None,
        reference_latent: torch.Tensor | None = None,
        trace: list | None = None,
    ) -> torch.Tensor:
        """
        sample: (batch, frames, in_channels, h, w) noisy latents; timestep: scalar or (batch,);
        audio_tokens: (batch, frames, tokens, audio_dim); reference_bank: per attention layer (batch, h·w, c);
        motion_features: per slot (batch, n_motion, c, h, w) or None;
        speed_tokens: (batch, frames, s, speed_dim);
        face_features: (batch, in_channels, h, w) from the face locator, added to every frame's noisy latent.
        reference_latent: (batch, in_channels, h, w), the reference's clean latent; with
        ``reference_concat`` it is concatenated to every frame's input channels (an image-to-video
        shortcut beside reference-attention: aligned crops copy identity from the first steps).
        Returns (batch, frames, out_channels, h, w).
        """
        b, f = sample.shape[:2]
        if f + (motion_features[0].shape[1] if motion_features else 0) > self.config.max_frames:
            raise ValueError(
                f"window of {f} frames plus motion frames exceeds max_frames={self.config.max_frames}"
            )
        x = sample
        if face_features is not None:
            x = x + face_features[:, None].to(x.dtype)
        if self.config.reference_concat:
            if reference_latent is None:
                raise ValueError("this Backbone concatenates the reference latent: pass reference_latent")
            ref = reference_latent[:, None].to(x.dtype).expand(b, f, *reference_latent.shape[1:])
            x = torch.cat([x, ref], dim=2)
        io = UNetIO(
            num_frames=f,
            reference=reference_bank,
            motion=motion_features,
            audio=audio_tokens.reshape(b * f, *audio_tokens.shape[2:]),
            speed=speed_tokens,
        )
        t = torch.as_tensor(timestep, dtype=sample.dtype).reshape(-1)
        out = self._run(x.reshape(b * f, *x.shape[2:]), t, io, head=True)
        if trace is not None:
            trace.extend(io.trace)
        return out.reshape(b, f, *out.shape[1:])
