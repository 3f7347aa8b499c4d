"""The UNet skeleton shared by ReferenceNet and the Backbone (SD1.5 / diffusers key layout).

Layout for ``block_out_channels = (c0, c1, ...)`` and ``layers_per_block = L``:
``conv_in`` → ``down_blocks[i]`` (L × resnet [+ attention] [+ motion module], downsampler except last) →
``mid_block`` (resnet, attention, [motion module], resnet) → ``up_blocks[i]`` (L+1 × resnet on skip concat
[+ attention] [+ motion module], upsampler except last) → ``conv_norm_out``/``conv_out`` (Backbone only).

A *slot* is every place a motion module sits (after each resnet/attention pair and in the mid block);
ReferenceNet records its spatial features at the same slots for the Backbone's motion frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from torch import nn

from avatar.emo.attention import SpatialTransformer, TemporalModule


@dataclass
class UNetIO:
    """Per-call inputs/outputs threaded through the blocks.

    reference: bank entries to read, one (batch, h·w, c) tensor per attention layer, in forward order.
    motion: per slot (batch, n_motion, c, h, w) or None. audio: (batch·frames, tokens, audio_dim) or None.
    speed: (batch, frames, s, speed_dim) or None. record_*: ReferenceNet fills these lists.
    """

    num_frames: int = 1
    reference: list[torch.Tensor] | None = None
    motion: list[torch.Tensor] | None = None
    audio: torch.Tensor | None = None
    speed: torch.Tensor | None = None
    record_bank: list[torch.Tensor] | None = None
    record_slots: list[torch.Tensor] | None = None
    _attn_index: int = 0
    _slot_index: int = 0
    trace: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)

    def next_reference(self) -> torch.Tensor | None:
        ref = self.reference[self._attn_index] if self.reference is not None else None
        self._attn_index += 1
        return ref

    def next_motion(self) -> torch.Tensor | None:
        mot = self.motion[self._slot_index] if self.motion is not None else None
        self._slot_index += 1
        return mot


class UNetLayer(nn.Module):
    """Helper owner of the per-layer calls (resnet, attention, motion module) with optional checkpointing."""

    gradient_checkpointing: bool

    def _call(self, fn: Callable, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(fn, *args)
        return fn(*args)

    def _attend_and_move(self, x: torch.Tensor, i: int, io: UNetIO) -> torch.Tensor:
        if self.attentions is not None:
            ref = io.next_reference()
            x, bank = self._call(self.attentions[i], x, ref, io.audio)
            if io.record_bank is not None:
                b = x.shape[0]
                io.record_bank.append(bank.reshape(b, -1, bank.shape[-1]))
        if io.record_slots is not None:
            io.record_slots.append(x)
        if self.motion_modules is not None:
            mot = io.next_motion()
            x = self._call(self.motion_modules[i], x, io.num_frames, mot, io.speed)
        else:
            io._slot_index += 1
        io.trace.append((type(self).__name__, tuple(x.shape)))
        return x


def _attention(channels: int, spec: UNetSpec) -> SpatialTransformer:
    return SpatialTransformer(channels, spec.heads_for(channels), spec.norm_num_groups, spec.audio_dim)


def _motion(channels: int, spec: UNetSpec) -> TemporalModule:
    return TemporalModule(
        channels, spec.temporal_heads, spec.norm_num_groups, spec.max_frames, spec.speed_dim
    )


@dataclass(frozen=True)
class UNetSpec:
    """Everything that shapes the skeleton (taken from the model config)."""

    in_channels: int
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    attention_levels: tuple[bool, ...]
    attention_head_dim: int
    norm_num_groups: int
    audio_dim: int | None
    temporal: bool
    temporal_heads: int
    max_frames: int
    speed_dim: int | None
    num_attention_heads: int | None = None

    def heads_for(self, channels: int) -> int:
        """Fixed head count when ``num_attention_heads`` is set (SD1.5: 8), else channels / head dim."""
        if self.num_attention_heads:
            return self.num_attention_heads
        return max(1, channels // self.attention_head_dim)


class DownBlock(UNetLayer):
    def __init__(self, cin: int, cout: int, attention: bool, last: bool, temb: int, spec: UNetSpec) -> None:
        super().__init__()
        self.gradient_checkpointing = False
        g, n = spec.norm_num_groups, spec.layers_per_block
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(
                    in_channels=cin if j == 0 else cout, out_channels=cout, temb_channels=temb, groups=g
                )
                for j in range(n)
            ]
        )
        self.attentions = nn.ModuleList([_attention(cout, spec) for _ in range(n)]) if attention else None
        self.motion_modules = (
            nn.ModuleList([_motion(cout, spec) for _ in range(n)]) if spec.temporal else None
        )
        down = Downsample2D(cout, use_conv=True, out_channels=cout, padding=1, name="op")
        self.downsamplers = None if last else nn.ModuleList([down])

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, io: UNetIO
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = self._call(resnet, x, temb)
            x = self._attend_and_move(x, i, io)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class MidBlock(UNetLayer):
    def __init__(self, channels: int, temb: int, spec: UNetSpec) -> None:
        super().__init__()
        self.gradient_checkpointing = False
        g = spec.norm_num_groups
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(in_channels=channels, out_channels=channels, temb_channels=temb, groups=g)
                for _ in range(2)
            ]
        )
        self.attentions = nn.ModuleList([_attention(channels, spec)])
        self.motion_modules = nn.ModuleList([_motion(channels, spec)]) if spec.temporal else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, io: UNetIO) -> torch.Tensor:
        x = self._call(self.resnets[0], x, temb)
        x = self._attend_and_move(x, 0, io)
        return self._call(self.resnets[1], x, temb)


class UpBlock(UNetLayer):
    def __init__(
        self, prev: int, cout: int, skip_in: int, attention: bool, last: bool, temb: int, spec: UNetSpec
    ) -> None:
        super().__init__()
        self.gradient_checkpointing = False
        g, n = spec.norm_num_groups, spec.layers_per_block + 1
        self.resnets = nn.ModuleList()
        for j in range(n):
            skip = skip_in if j == n - 1 else cout
            rin = prev if j == 0 else cout
            self.resnets.append(
                ResnetBlock2D(in_channels=rin + skip, out_channels=cout, temb_channels=temb, groups=g)
            )
        self.attentions = nn.ModuleList([_attention(cout, spec) for _ in range(n)]) if attention else None
        self.motion_modules = (
            nn.ModuleList([_motion(cout, spec) for _ in range(n)]) if spec.temporal else None
        )
        self.upsamplers = (
            None if last else nn.ModuleList([Upsample2D(cout, use_conv=True, out_channels=cout)])
        )

    def forward(
        self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor, io: UNetIO
    ) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = torch.cat([x, skips.pop()], dim=1)
            x = self._call(resnet, x, temb)
            x = self._attend_and_move(x, i, io)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class EmoUNetBase:
    """Mixin (placed after ModelMixin) that builds the skeleton into ``self``: conv_in, time embedding,
    down/mid/up blocks[, conv_out]."""

    def _build(self, spec: UNetSpec, out_channels: int | None) -> None:
        self.spec = spec
        boc = spec.block_out_channels
        c0 = boc[0]
        temb = c0 * 4
        self.conv_in = nn.Conv2d(spec.in_channels, c0, 3, padding=1)
        self.time_proj = Timesteps(c0, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(c0, temb)
        self.down_blocks = nn.ModuleList()
        cout = c0
        for i, ch in enumerate(boc):
            cin, cout = cout, ch
            self.down_blocks.append(
                DownBlock(cin, cout, spec.attention_levels[i], i == len(boc) - 1, temb, spec)
            )
        self.mid_block = MidBlock(boc[-1], temb, spec)
        rev = list(reversed(boc))
        up_levels = tuple(reversed(spec.attention_levels))
        self.up_blocks = nn.ModuleList()
        cout = rev[0]
        for i, ch in enumerate(rev):
            prev, cout = cout, ch
            skip_in = rev[min(i + 1, len(boc) - 1)]
            self.up_blocks.append(UpBlock(prev, cout, skip_in, up_levels[i], i == len(boc) - 1, temb, spec))
        if out_channels is not None:
            self.conv_norm_out = nn.GroupNorm(spec.norm_num_groups, c0, eps=1e-5)
            self.conv_act = nn.SiLU()
            self.conv_out = nn.Conv2d(c0, out_channels, 3, padding=1)

    def _run(self, x: torch.Tensor, timestep: torch.Tensor, io: UNetIO, head: bool) -> torch.Tensor:
        """x: (batch·frames, in_channels, h, w) with h, w divisible by 2**(levels-1)."""
        t = timestep.to(x.device).float().reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        elif t.numel() != x.shape[0]:
            t = t.repeat_interleave(x.shape[0] // t.numel())
        temb = self.time_embedding(self.time_proj(t).to(x.dtype))
        x = self.conv_in(x)
        skips = [x]
        for block in self.down_blocks:
            x, s = block(x, temb, io)
            skips.extend(s)
        x = self.mid_block(x, temb, io)
        io.trace.append(("MidBlockOut", tuple(x.shape)))
        for block in self.up_blocks:
            n = len(block.resnets)
            x = block(x, skips[-n:], temb, io)
            del skips[-n:]
        if head:
            x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return x
