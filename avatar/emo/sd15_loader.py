"""Initialise base512 models from local Stable Diffusion 1.5, AnimateDiff and SD-VAE weights.

Accepted layouts (nothing is downloaded):
* SD1.5 UNet in diffusers layout (``UNet2DConditionModel`` state dict: a ``.safetensors``/``.bin`` file or a
  diffusers ``unet/`` folder). ``proj_in``/``proj_out`` 1×1 convs become our linear layers. Backbone: every
  key maps (``attn2`` = audio-attention: to_q/to_out always, to_k/to_v when audio tokens are 768-d).
  ReferenceNet: everything except ``attn2``/``norm2`` and the output head.
* AnimateDiff motion modules in diffusers ``MotionAdapter`` layout or the original layout
  (``temporal_transformer``, ``attention_blocks``, ``norms``, ``ff_norm``, ``pos_encoder``), converted.
  Sinusoidal position tables are rebuilt, not loaded.
* SD-VAE in diffusers ``AutoencoderKL`` layout.
Original single-file LDM checkpoints (``model.diffusion_model.*``) must be converted with diffusers first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from avatar.errors import ConfigError

ANIMATEDIFF_RENAMES = (
    (".temporal_transformer.", "."),
    (".attention_blocks.0.pos_encoder.pe", ".pos_embed.pe"),
    (".attention_blocks.0.", ".attn1."),
    (".attention_blocks.1.", ".attn2."),
    (".norms.0.", ".norm1."),
    (".norms.1.", ".norm2."),
    (".ff_norm.", ".norm3."),
)


@dataclass
class MappingReport:
    """What a source state dict did to a target model (key names are the target's)."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Source keys the target has no place for (e.g. ReferenceNet's absent text cross-attention)."""
    mismatched: list[str] = field(default_factory=list)
    """Keys present in both with different shapes (left at their initial values)."""
    not_covered: list[str] = field(default_factory=list)
    """Target keys the source did not provide (new EMO layers keep their initialisation)."""

    def summary(self) -> str:
        return (
            f"{len(self.loaded)} loaded, {len(self.skipped)} skipped, {len(self.mismatched)} mismatched, "
            f"{len(self.not_covered)} new"
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` / ``.bin`` / ``.ckpt`` / ``.pt`` file or a diffusers model folder."""
    path = Path(path)
    if path.is_dir():
        for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
            if (path / name).is_file():
                return read_state_dict(path / name)
        raise ConfigError(f"no diffusers weights in {path}")
    if not path.is_file():
        raise ConfigError(f"weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    if any(k.startswith("model.diffusion_model.") for k in state):
        raise ConfigError(
            f"{path.name} is an original LDM checkpoint; convert it to the diffusers layout first"
        )
    return state


def convert_animatediff_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original AnimateDiff motion-module names → diffusers ``MotionAdapter`` names (others unchanged)."""
    out = {}
    for key, value in state.items():
        if ".attention_blocks.1.pos_encoder." in key:
            continue  # both attentions share one sinusoidal table in the diffusers layout
        for old, new in ANIMATEDIFF_RENAMES:
            key = key.replace(old, new)
        out[key] = value
    return out


def map_state_dict(
    source: dict[str, torch.Tensor],
    target: nn.Module,
    prefix_filter: str | None = None,
) -> tuple[dict[str, torch.Tensor], MappingReport]:
    """Match ``source`` keys to ``target``'s by name; reshape 1×1 conv projections to linear weights.

    ``prefix_filter``: only target keys containing this substring count as not covered
    (e.g. 'motion_modules').
    """
    own = target.state_dict()
    report = MappingReport()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if key.endswith("pos_embed.pe"):
            report.skipped.append(key)
            continue
        if key not in own:
            report.skipped.append(key)
            continue
        if value.ndim == 4 and own[key].ndim == 2 and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0]
        if tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append(key)
            continue
        mapped[key] = value.to(own[key].dtype)
        report.loaded.append(key)
    report.not_covered = sorted(
        k
        for k in own
        if k not in mapped
        and not k.endswith("pos_embed.pe")
        and (prefix_filter is None or prefix_filter in k)
    )
    return mapped, report


def load_mapped(
    source: dict[str, torch.Tensor], target: nn.Module, prefix_filter: str | None = None
) -> MappingReport:
    """Map and load (non-strict: new EMO layers keep their initialisation)."""
    mapped, report = map_state_dict(source, target, prefix_filter)
    target.load_state_dict(mapped, strict=False)
    return report


def init_from_sd15(
    pipeline,
    unet: str | Path | None = None,
    motion_module: str | Path | None = None,
    vae: str | Path | None = None,
) -> dict[str, MappingReport]:
    """Initialise an ``EmoPipeline`` (base512 config) from local SD1.5 / AnimateDiff / SD-VAE weights."""
    reports: dict[str, MappingReport] = {}
    if unet is not None:
        state = read_state_dict(unet)
        reports["backbone"] = load_mapped(state, pipeline.backbone)
        reports["reference_net"] = load_mapped(state, pipeline.reference_net)
    if motion_module is not None:
        state = convert_animatediff_keys(read_state_dict(motion_module))
        reports["motion_modules"] = load_mapped(state, pipeline.backbone, prefix_filter="motion_modules")
    if vae is not None:
        from diffusers import AutoencoderKL

        if not isinstance(pipeline.autoencoder, AutoencoderKL):
            raise ConfigError("SD-VAE weights need autoencoder.kind: sd_vae (the base512 config)")
        state = read_state_dict(vae)
        report = load_mapped(state, pipeline.autoencoder)
        if report.mismatched or report.not_covered:
            raise ConfigError(f"the SD-VAE weights do not fit autoencoder config: {report.summary()}")
        reports["autoencoder"] = report
    return reports
