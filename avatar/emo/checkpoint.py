"""EMO checkpoints: building the components for a config, saving them, and loading them with fit checks.

A checkpoint folder holds one diffusers folder per trainable model (``<model>/config.json`` written by
``register_to_config`` + ``<model>/diffusion_pytorch_model.safetensors``) and ``emo.json``: the config's
name, every section (``EmoConfig.to_dict``) and the training step count. Loading checks the weight-shaping
keys (``MODEL_SECTIONS`` and ``face.crop_size``) against the caller's config, then every tensor name and
shape, and refuses a misfit with a one-line ``ConfigError``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from avatar.emo.audio_encoder import AudioProjection, MelAudioEncoder, Wav2Vec2AudioEncoder
from avatar.emo.autoencoder import TinyAutoencoder
from avatar.emo.backbone import EmoBackbone
from avatar.emo.config import MODEL_SECTIONS, AudioEncoderKind, AutoencoderKind, EmoConfig, build_section
from avatar.emo.face_locator import FaceLocator
from avatar.emo.pipeline import EmoPipeline
from avatar.emo.reference_net import ReferenceNet
from avatar.emo.speed_encoder import SpeedEncoder
from avatar.errors import ConfigError

CHECKPOINT_META = "emo.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
FIT_IGNORED = {("audio_encoder", "path")}
"""Keys of ``MODEL_SECTIONS`` that do not shape the saved weights."""
FIT_FACE_KEYS = ("crop_size", "crop_shift")
"""``face`` keys a checkpoint must agree on: the region's size and where on the face it was trained."""


def build_components(config: EmoConfig, seed: int = 0) -> dict[str, torch.nn.Module]:
    """Randomly initialised components (seeded); zero-initialised where the paper's design wants it."""
    torch.manual_seed(seed)
    ae = config.autoencoder
    if ae.kind == AutoencoderKind.TINY:
        autoencoder: torch.nn.Module = TinyAutoencoder(
            latent_channels=ae.latent_channels,
            encoder_channels=ae.encoder_channels,
            decoder_channels=ae.decoder_channels,
            scaling_factor=ae.scaling_factor,
        )
    else:
        n = len(ae.block_out_channels)
        autoencoder = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=ae.latent_channels,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=ae.block_out_channels,
            layers_per_block=ae.layers_per_block,
            norm_num_groups=ae.norm_num_groups,
            scaling_factor=ae.scaling_factor,
        )
    au = config.audio_encoder
    if au.kind == AudioEncoderKind.WAV2VEC2:
        if not au.path:
            raise ConfigError("audio_encoder.kind is wav2vec2 but audio_encoder.path is not set")
        audio_encoder: torch.nn.Module = Wav2Vec2AudioEncoder(au.path, au.layers)
    else:
        audio_encoder = MelAudioEncoder(
            n_mels=au.n_mels, sub_frames=au.sub_frames, hidden=au.hidden, num_layers=au.num_layers
        )
    m = config.window.audio_context
    return {
        "reference_net": ReferenceNet(**config.unet_kwargs()),
        "backbone": EmoBackbone(**config.backbone_kwargs()),
        "autoencoder": autoencoder,
        "audio_encoder": audio_encoder,
        "audio_projection": AudioProjection(
            feature_layers=audio_encoder.feature_layers,
            feature_dim=audio_encoder.feature_dim,
            context=m,
            token_dim=config.audio_projection.token_dim,
        ),
        "face_locator": FaceLocator(
            latent_channels=config.latent_channels,
            channels=config.face_locator.channels,
            downsample_levels=config.face_locator.downsample_levels,
        ),
        "speed_encoder": SpeedEncoder(
            centers=config.speed_encoder.centers,
            radii=config.speed_encoder.radii,
            context=m,
            dim=config.speed_encoder.dim,
        ),
    }


def build_pipeline(config: EmoConfig, seed: int = 0) -> EmoPipeline:
    """A pipeline with freshly initialised (seeded) components, in eval mode."""
    return EmoPipeline(config, build_components(config, seed)).eval()


def save_checkpoint(
    pipe: EmoPipeline, directory: str | Path, training_steps: int | None = None, half: bool = False
) -> Path:
    """Write ``pipe`` as a checkpoint folder; ``half``: float16 tensors (half the size; loading gives
    float32). ``training_steps`` defaults to ``pipe.training_steps``. Returns the folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, module in pipe.trainable_modules().items():
        (copy.deepcopy(module).half() if half else module).save_pretrained(directory / name)
    steps = pipe.training_steps if training_steps is None else training_steps
    meta = {"config_name": pipe.config.name, "training_steps": int(steps), "config": pipe.config.to_dict()}
    (directory / CHECKPOINT_META).write_text(json.dumps(meta, indent=2))
    return directory


def read_meta(directory: str | Path) -> dict[str, Any]:
    """``emo.json`` of a checkpoint folder; ConfigError when it is not one."""
    directory = Path(directory)
    path = directory / CHECKPOINT_META
    if not path.is_file():
        raise ConfigError(f"{directory} is not an EMO checkpoint (no {CHECKPOINT_META})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"checkpoint {directory.name}: {CHECKPOINT_META} is not valid JSON") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
        raise ConfigError(f"checkpoint {directory.name}: {CHECKPOINT_META} has no config mapping")
    steps = meta.get("training_steps", 0)
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise ConfigError(
            f"checkpoint {directory.name}: {CHECKPOINT_META} training_steps must be a whole number, "
            f"got {steps!r}"
        )
    return meta


def check_fit(saved: dict[str, Any], config: EmoConfig, name: str) -> None:
    """ConfigError naming the first weight-shaping key where a checkpoint's saved config sections
    (``{section: {key: value}}``, missing keys: defaults) and ``config`` disagree."""
    context = f"checkpoint {name}"
    for section in MODEL_SECTIONS + ("face",):
        theirs = build_section(section, saved.get(section), context)
        ours = getattr(config, section)
        keys = [f.name for f in dataclasses.fields(ours) if (section, f.name) not in FIT_IGNORED]
        for key in FIT_FACE_KEYS if section == "face" else keys:
            a, b = getattr(ours, key), getattr(theirs, key)
            if a != b:
                raise ConfigError(
                    f"checkpoint {name} does not fit config {config.name}: {section}.{key} is "
                    f"{_shown(b)} in the checkpoint but {_shown(a)} in the config"
                )


def _shown(value: Any) -> str:
    """A value as the yaml/JSON would show it (lists, plain strings)."""
    if isinstance(value, tuple):
        return repr(list(value))
    return repr(str(value) if isinstance(value, str) else value)


def load_checkpoint(directory: str | Path, config: EmoConfig | None = None) -> EmoPipeline:
    """The pipeline saved in ``directory`` for ``config`` (None: the config stored in the checkpoint).

    One-line ``ConfigError`` when the folder is not a checkpoint, when its config disagrees with
    ``config`` on a weight-shaping key, or when a tensor is missing, unexpected or mis-shaped."""
    directory = Path(directory)
    meta = read_meta(directory)
    saved = meta.get("config", {})
    if config is None:
        try:
            config = EmoConfig.from_dict(saved, str(meta.get("config_name", directory.name)))
        except ConfigError as exc:  # say where the bad config is: this emo.json, not a yaml
            raise ConfigError(f"checkpoint {directory.name} ({CHECKPOINT_META}): {exc}") from None
    check_fit(saved, config, directory.name)
    pipe = build_pipeline(config)
    for name, module in pipe.trainable_modules().items():
        path = directory / name / WEIGHTS
        if not path.is_file():
            raise ConfigError(f"checkpoint {directory.name} lacks {name}/{WEIGHTS}")
        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise ConfigError(
                f"checkpoint {directory.name}/{name}: cannot read {WEIGHTS} ({str(exc).splitlines()[0]})"
            ) from None
        own = module.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or extra or wrong:
            first = (missing or extra or wrong)[0]
            raise ConfigError(
                f"checkpoint {directory.name}/{name} does not fit config {config.name}: "
                f"{len(missing)} missing, {len(extra)} unexpected, {len(wrong)} mis-shaped tensors "
                f"(first: {first})"
            )
        module.load_state_dict(state, strict=True)
    pipe.training_steps = int(meta.get("training_steps", 0))
    return pipe.eval()
