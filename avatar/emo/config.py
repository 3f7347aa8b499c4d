"""EMO configuration: ``configs/emo/<name>.yaml`` (or a path) → validated sections and component builders."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from avatar.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "emo"
MAX_AUDIO_GUIDANCE = 20.0
"""Upper bound of ``sampler.audio_guidance`` (and of the distillation's teacher guidance); 1 is off."""

SECTIONS: dict[str, set[str]] = {
    "face": {"crop_size", "crop_scale", "crop_shift", "feather", "composite"},
    "window": {
        "frames",
        "motion_frames",
        "audio_context",
        "first_motion",
        "motion_noise_std",
        "crossfade_frames",
    },
    "sampler": {"scheduler", "steps", "prediction_type", "num_train_timesteps", "audio_guidance"},
    "speed": {"mode", "velocity", "audio_gain"},
    "autoencoder": {
        "kind",
        "latent_channels",
        "encoder_channels",
        "decoder_channels",
        "scaling_factor",
        "block_out_channels",
        "layers_per_block",
        "norm_num_groups",
    },
    "audio_encoder": {"kind", "n_mels", "sub_frames", "hidden", "num_layers", "path", "layers"},
    "audio_projection": {"token_dim"},
    "unet": {
        "block_out_channels",
        "layers_per_block",
        "attention_levels",
        "attention_head_dim",
        "num_attention_heads",
        "norm_num_groups",
        "temporal_heads",
        "max_frames",
        "reference_concat",
    },
    "speed_encoder": {"centers", "radii", "dim"},
    "face_locator": {"channels", "downsample_levels"},
}


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


@dataclass
class EmoConfig:
    """All sections of an EMO yaml (see ``configs/emo/tiny.yaml`` for the meaning of every key)."""

    name: str
    face: dict[str, Any]
    window: dict[str, Any]
    sampler: dict[str, Any]
    speed: dict[str, Any]
    autoencoder: dict[str, Any]
    audio_encoder: dict[str, Any]
    audio_projection: dict[str, Any]
    unet: dict[str, Any]
    speed_encoder: dict[str, Any]
    face_locator: dict[str, Any]

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder["latent_channels"])

    @property
    def downsample_factor(self) -> int:
        if self.autoencoder["kind"] == "tiny":
            return 2 ** len(self.autoencoder["encoder_channels"])
        return 2 ** (len(self.autoencoder["block_out_channels"]) - 1)

    @property
    def latent_size(self) -> int:
        return int(self.face["crop_size"]) // self.downsample_factor

    def validate(self) -> None:
        crop = int(self.face["crop_size"])
        levels = len(self.unet["block_out_channels"])
        if crop % self.downsample_factor or self.latent_size % 2 ** (levels - 1):
            raise ConfigError(
                f"EMO config {self.name}: face.crop_size {crop} must give a latent divisible by "
                f"{2 ** (levels - 1)}"
            )
        if len(self.unet["attention_levels"]) != levels:
            raise ConfigError(f"EMO config {self.name}: unet.attention_levels needs {levels} entries")
        w = self.window
        if (
            w["frames"] < 1
            or w["motion_frames"] < 0
            or w["frames"] + w["motion_frames"] > self.unet["max_frames"]
        ):
            raise ConfigError(
                f"EMO config {self.name}: window.frames + motion_frames must be ≤ unet.max_frames"
            )
        if self.sampler["scheduler"] not in ("lcm", "tcd", "ddim"):
            raise ConfigError(f"EMO config {self.name}: sampler.scheduler must be lcm, tcd or ddim")
        steps = self.sampler["steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"EMO config {self.name}: sampler.steps must be an integer ≥ 1")
        guidance = self.sampler.get("audio_guidance", 1.0)
        number = isinstance(guidance, int | float) and not isinstance(guidance, bool)
        if not number or not 1 <= guidance <= MAX_AUDIO_GUIDANCE:
            raise ConfigError(
                f"EMO config {self.name}: sampler.audio_guidance must be in [1, {MAX_AUDIO_GUIDANCE:g}]"
            )
        if self.autoencoder["kind"] not in ("tiny", "sd_vae"):
            raise ConfigError(f"EMO config {self.name}: autoencoder.kind must be tiny or sd_vae")
        if self.audio_encoder["kind"] not in ("mel", "wav2vec2"):
            raise ConfigError(f"EMO config {self.name}: audio_encoder.kind must be mel or wav2vec2")
        if w["first_motion"] not in ("reference", "zeros") or self.speed["mode"] not in ("constant", "audio"):
            raise ConfigError(
                f"EMO config {self.name}: window.first_motion or speed.mode has an unknown value"
            )

    # --- component constructor arguments -------------------------------------------------------------
    def unet_kwargs(self) -> dict[str, Any]:
        u = self.unet
        return {
            "in_channels": self.latent_channels,
            "block_out_channels": tuple(u["block_out_channels"]),
            "layers_per_block": int(u["layers_per_block"]),
            "attention_levels": tuple(bool(a) for a in u["attention_levels"]),
            "attention_head_dim": int(u["attention_head_dim"]),
            "num_attention_heads": u.get("num_attention_heads"),
            "norm_num_groups": int(u["norm_num_groups"]),
        }

    def backbone_kwargs(self) -> dict[str, Any]:
        return {
            **self.unet_kwargs(),
            "out_channels": self.latent_channels,
            "audio_dim": int(self.audio_projection["token_dim"]),
            "temporal_heads": int(self.unet["temporal_heads"]),
            "max_frames": int(self.unet["max_frames"]),
            "speed_dim": int(self.speed_encoder["dim"]),
            "reference_concat": bool(self.unet.get("reference_concat", False)),
        }


def load_emo_config(name_or_path: str | Path = "tiny", toy: bool = False) -> EmoConfig:
    """Load ``configs/emo/<name>.yaml`` or a yaml path; ``toy`` applies the file's ``toy:`` overrides.

    Raises ``ConfigError`` (one line) for a missing file, unknown sections/keys or inconsistent sizes.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"EMO config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"EMO config {path.name} is not valid YAML: {str(exc).splitlines()[0]}") from None
    toy_over = raw.pop("toy", {}) or {}
    if toy:
        raw = _merge(raw, toy_over)
    for section, keys in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"EMO config {path.name}: unknown section {section!r}")
        unknown = set(keys or {}) - SECTIONS[section]
        if unknown:
            raise ConfigError(f"EMO config {path.name}: unknown key {section}.{sorted(unknown)[0]}")
    missing = [s for s in SECTIONS if s not in raw]
    if missing:
        raise ConfigError(f"EMO config {path.name}: missing section {missing[0]!r}")
    cfg = EmoConfig(name=path.stem + ("-toy" if toy else ""), **{s: dict(raw[s]) for s in SECTIONS})
    cfg.validate()
    return cfg
