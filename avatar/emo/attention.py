"""Attention layers of the EMO UNets: reference-attention, audio-attention, temporal (motion) modules.

Key names follow diffusers so that Stable Diffusion 1.5 (``Transformer2DModel``) and AnimateDiff
(``MotionAdapter``) state dicts map onto them (see ``sd15_loader``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import SinusoidalPositionalEmbedding
from torch import nn


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, tokens, heads*dim) -> (batch, heads, tokens, dim)."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


@dataclass(frozen=True)
class ReferenceKeyValues:
    """A reference-bank entry already projected by its layer's ``to_k`` / ``to_v``: (batch, ref_tokens,
    dim) each. Projected once per avatar (``EmoPipeline.project_reference``), it spares every denoising
    step those two matmuls over the reference tokens."""

    key: torch.Tensor
    value: torch.Tensor


class ReferenceAttnProcessor:
    """Self-attention whose keys/values also include ReferenceNet tokens of the same layer.

    ``hidden_states``: (batch·frames, tokens, dim); ``reference_tokens``: (batch, ref_tokens, dim) or None,
    shared by the ``frames`` rows of each batch item (batch-major order), or those tokens' keys and values
    (``ReferenceKeyValues``). Without reference tokens this is plain self-attention (the ReferenceNet).
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        reference_tokens: torch.Tensor | ReferenceKeyValues | None = None,
    ) -> torch.Tensor:
        q = attn.to_q(hidden_states)
        k = attn.to_k(hidden_states)
        v = attn.to_v(hidden_states)
        if reference_tokens is not None:
            if isinstance(reference_tokens, ReferenceKeyValues):
                rk, rv = reference_tokens.key.to(k.dtype), reference_tokens.value.to(v.dtype)
            else:
                rk, rv = attn.to_k(reference_tokens), attn.to_v(reference_tokens)
            repeat = hidden_states.shape[0] // rk.shape[0]
            rk, rv = rk.repeat_interleave(repeat, dim=0), rv.repeat_interleave(repeat, dim=0)
            k, v = torch.cat([k, rk], dim=1), torch.cat([v, rv], dim=1)
        out = F.scaled_dot_product_attention(
            _heads(q, attn.heads), _heads(k, attn.heads), _heads(v, attn.heads)
        )
        out = out.transpose(1, 2).reshape(hidden_states.shape[0], -1, q.shape[-1])
        return attn.to_out[1](attn.to_out[0](out))


class ReferenceTransformerBlock(nn.Module):
    """BasicTransformerBlock layout: norm1/attn1 (reference-attention), norm2/attn2 (audio-attention,
    only when ``audio_dim``), norm3/ff. Tokens: (batch·frames, h·w, dim)."""

    def __init__(self, dim: int, heads: int, audio_dim: int | None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=heads, dim_head=dim // heads, processor=ReferenceAttnProcessor())
        self.has_audio = audio_dim is not None
        if audio_dim is not None:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = Attention(dim, cross_attention_dim=audio_dim, heads=heads, dim_head=dim // heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")

    def forward(
        self, x: torch.Tensor, reference: torch.Tensor | ReferenceKeyValues | None, audio: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (tokens, the normalised tokens entering self-attention: the reference-bank entry)."""
        normed = self.norm1(x)
        x = x + self.attn1(normed, reference_tokens=reference)
        if self.has_audio and audio is not None:
            x = x + self.attn2(self.norm2(x), encoder_hidden_states=audio)
        x = x + self.ff(self.norm3(x))
        return x, normed


class SpatialTransformer(nn.Module):
    """Transformer2DModel layout (norm, proj_in, transformer_blocks.0, proj_out) on (n, c, h, w) maps."""

    def __init__(self, channels: int, heads: int, groups: int, audio_dim: int | None) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([ReferenceTransformerBlock(channels, heads, audio_dim)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(
        self,
        x: torch.Tensor,
        reference: torch.Tensor | ReferenceKeyValues | None = None,
        audio: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (n, c, h, w); reference: (batch, h·w, c) with n = batch·frames (or its ReferenceKeyValues);
        audio: (n, tokens, audio_dim).
        Returns (output (n, c, h, w), bank entry (n, h·w, c))."""
        n, c, h, w = x.shape
        t = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c))
        t, bank = self.transformer_blocks[0](t, reference, audio)
        t = self.proj_out(t).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return t + x, bank


class SpeedAttention(nn.Module):
    """Per-frame cross-attention from temporal tokens to that frame's speed tokens.

    queries (batch·h·w, frames, dim) attend only to keys of their own frame:
    speed (batch, frames, s, speed_dim).
    The output projection starts at zero, so a fresh module is the identity.
    """

    def __init__(self, dim: int, speed_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(speed_dim, dim, bias=False)
        self.to_v = nn.Linear(speed_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor, speed: torch.Tensor) -> torch.Tensor:
        b, f, s, _ = speed.shape
        p = x.shape[0] // b
        hd = x.shape[-1] // self.heads
        q = self.to_q(x).view(b, p, f, self.heads, hd)
        k = self.to_k(speed).view(b, f, s, self.heads, hd)
        v = self.to_v(speed).view(b, f, s, self.heads, hd)
        w = torch.einsum("bpfhd,bfshd->bpfhs", q, k).mul(hd**-0.5).softmax(dim=-1)
        out = torch.einsum("bpfhs,bfshd->bpfhd", w, v).reshape(b * p, f, -1)
        return self.to_out(out)


class TemporalTransformerBlock(nn.Module):
    """AnimateDiff block (MotionAdapter key names): two temporal self-attentions with sinusoidal frame
    positions, then speed cross-attention (EMO speed layers, new keys), then a GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, max_frames: int, speed_dim: int | None) -> None:
        super().__init__()
        self.pos_embed = SinusoidalPositionalEmbedding(dim, max_seq_length=max_frames)
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=heads, dim_head=dim // heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads=heads, dim_head=dim // heads)
        self.has_speed = speed_dim is not None
        if speed_dim is not None:
            self.norm_speed = nn.LayerNorm(dim)
            self.attn_speed = SpeedAttention(dim, speed_dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")

    def forward(self, x: torch.Tensor, num_motion: int, speed: torch.Tensor | None) -> torch.Tensor:
        """x: (batch·h·w, motion+frames, dim); speed: (batch, frames, s, speed_dim) or None."""
        x = x + self.attn1(self.pos_embed(self.norm1(x)))
        x = x + self.attn2(self.pos_embed(self.norm2(x)))
        if self.has_speed and speed is not None:
            current = x[:, num_motion:]
            current = current + self.attn_speed(self.norm_speed(current), speed)
            x = torch.cat([x[:, :num_motion], current], dim=1)
        return x + self.ff(self.norm3(x))


class TemporalModule(nn.Module):
    """AnimateDiff-style motion module over frames; motion-frame features join along the frame axis and
    are dropped after it. Output projection starts at zero (a fresh module is the identity)."""

    def __init__(
        self, channels: int, heads: int, groups: int, max_frames: int, speed_dim: int | None
    ) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(channels, heads, max_frames, speed_dim)]
        )
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(
        self,
        x: torch.Tensor,
        num_frames: int,
        motion: torch.Tensor | None = None,
        speed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (batch·frames, c, h, w); motion: (batch, n_motion, c, h, w) or None. Returns x's shape."""
        n, c, h, w = x.shape
        b = n // num_frames
        seq = x.view(b, num_frames, c, h, w)
        m = 0
        if motion is not None and motion.shape[1] > 0:
            m = motion.shape[1]
            seq = torch.cat([motion.to(seq.dtype).expand(b, -1, -1, -1, -1), seq], dim=1)
        t = m + num_frames
        normed = self.norm(seq.permute(0, 2, 1, 3, 4)).permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)
        y = self.transformer_blocks[0](self.proj_in(normed), m, speed)
        y = self.proj_out(y[:, m:]).view(b, h, w, num_frames, c).permute(0, 3, 4, 1, 2)
        return x + y.reshape(n, c, h, w)
