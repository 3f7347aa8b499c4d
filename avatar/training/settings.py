"""Training hyper-parameters (``configs/emo/train_*.yaml``): the model config to train, global options and
one section per stage (0 autoencoder, 1 image, 2 video, 3 speed) plus ``distill``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from avatar.emo.config import MAX_AUDIO_GUIDANCE, EmoConfig, load_emo_config
from avatar.errors import ConfigError

STAGE_NAMES = {0: "autoencoder", 1: "image", 2: "video", 3: "speed"}
STAGE_DEFAULTS: dict[str, Any] = {
    "lr": 1e-4,
    "batch": 4,
    "steps": 1000,
    "weight_decay": 0.0,
    "motion_noise_std": 0.1,  # stage 2/3: noise added to motion-frame latents
    "motion_drop": 0.1,  # stage 2/3: probability that motion frames are replaced by the reference
    "audio_drop": 0.0,  # stage 2/3: probability that a window's audio tokens are zeroed (enables guidance)
    "latent_reg": 0.01,  # stage 0: pulls the latents' mean square towards 1
    "edge_weight": 0.5,  # stage 0: L1 on image gradients
}
DISTILL_DEFAULTS: dict[str, Any] = {
    "lr": 1e-4,
    "batch": 2,
    "steps": 500,
    "teacher_steps": 50,  # DDIM skip grid of the teacher ODE (k = T / teacher_steps)
    "ema_decay": 0.95,  # target network of the consistency loss
    "huber_c": 0.001,
    "audio_guidance": 1.0,  # teacher ODE with audio classifier-free guidance (trained with audio_drop)
}


@dataclass
class TrainSettings:
    model: EmoConfig
    seed: int = 0
    ema_decay: float = 0.999
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"  # no | bf16
    grad_clip: float = 1.0
    log_every: int = 10
    sample_every: int = 200
    save_every: int = 200
    sample_steps: int = 20
    stages: dict[int, dict[str, Any]] = field(default_factory=dict)
    distill: dict[str, Any] = field(default_factory=dict)

    def stage(self, stage: int) -> dict[str, Any]:
        if stage not in STAGE_NAMES:
            raise ConfigError(f"--stage must be one of 0, 1, 2, 3 (got {stage})")
        options = {**STAGE_DEFAULTS, **self.stages.get(stage, {})}
        for key in ("audio_drop", "motion_drop"):
            if not 0.0 <= float(options[key]) <= 1.0:
                raise ConfigError(f"stages.{stage}.{key} must be a probability in [0, 1]")
        return options

    def distill_options(self) -> dict[str, Any]:
        options = {**DISTILL_DEFAULTS, **self.distill}
        if not 1.0 <= float(options["audio_guidance"]) <= MAX_AUDIO_GUIDANCE:
            raise ConfigError(f"distill.audio_guidance must be in [1, {MAX_AUDIO_GUIDANCE:g}] (1: off)")
        return options


def load_train_settings(path: str | Path | None, model: str | EmoConfig | None = None) -> TrainSettings:
    """Read a training yaml (None: defaults); ``model`` (name, path or EmoConfig) overrides its ``model``."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"training config not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"training config {path.name} is not valid YAML: {str(exc).splitlines()[0]}"
            ) from None
        if "face" in raw and "unet" in raw:
            raise ConfigError(
                f"{path.name} is a model config; pass a training config (configs/emo/train_tiny.yaml)"
            )
    chosen = model if model is not None else raw.pop("model", "tiny")
    raw.pop("model", None)
    cfg = chosen if isinstance(chosen, EmoConfig) else load_emo_config(chosen)
    stages = {int(k): dict(v or {}) for k, v in (raw.pop("stages", {}) or {}).items()}
    for k, v in stages.items():
        unknown = set(v) - set(STAGE_DEFAULTS)
        if unknown:
            raise ConfigError(f"training config: unknown key stages.{k}.{sorted(unknown)[0]}")
    distill = dict(raw.pop("distill", {}) or {})
    if set(distill) - set(DISTILL_DEFAULTS):
        raise ConfigError(
            f"training config: unknown key distill.{sorted(set(distill) - set(DISTILL_DEFAULTS))[0]}"
        )
    known = set(TrainSettings.__dataclass_fields__) - {"model", "stages", "distill"}
    if set(raw) - known:
        raise ConfigError(f"training config: unknown key {sorted(set(raw) - known)[0]}")
    settings = TrainSettings(model=cfg, stages=stages, distill=distill, **raw)
    if settings.mixed_precision not in ("no", "bf16"):
        raise ConfigError("training config: mixed_precision must be no or bf16")
    return settings


def override_options(settings: TrainSettings, section: int | str, pairs: list[str]) -> None:
    """Apply ``KEY=VALUE`` strings (numbers) to stage ``section`` or to ``"distill"``, in place."""
    defaults = DISTILL_DEFAULTS if section == "distill" else STAGE_DEFAULTS
    for pair in pairs:
        key, sep, text = (part.strip() for part in pair.partition("="))
        if not sep or key not in defaults:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, KEY one of {', '.join(sorted(defaults))}")
        try:
            value: int | float = int(text) if text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            raise ConfigError(f"--set {key}: {text!r} is not a number") from None
        if section == "distill":
            settings.distill[key] = value
        else:
            settings.stages[int(section)] = {**settings.stages.get(int(section), {}), key: value}
