"""EMO configuration: ``configs/emo/<name>.yaml`` (or a path) → one typed, frozen dataclass per section.

Every section maps onto one model's constructor (``avatar/emo/*.py``) or the sampler (``pipeline.py``);
``configs/emo/tiny.yaml`` documents every key. Missing keys take the defaults below (the tiny config's
values); an unknown section or key, a value of the wrong type or an inconsistent size is a one-line
``ConfigError`` naming ``section.key``. ``EmoConfig.to_dict`` / ``EmoConfig.from_dict`` round-trip through
JSON (a checkpoint's ``emo.json``, ``avatar/emo/checkpoint.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from avatar.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "emo"
MAX_AUDIO_GUIDANCE = 20.0
"""Upper bound of ``sampler.audio_guidance`` (and of the distillation's teacher guidance); 1 is off."""
FEW_STEP_MAX_STEPS = 50
"""Most ``sampler.steps`` for lcm and tcd (diffusers' ``original_inference_steps``: the schedule they
pick their steps from)."""


class Composite(StrEnum):
    """``face.composite``: paste the generated region into the still portrait, or then move the head."""

    STILL = "still"
    PARAMETRIC = "parametric"


class FirstMotion(StrEnum):
    """``window.first_motion``: motion frames of a session's first window."""

    REFERENCE = "reference"
    ZEROS = "zeros"


class SchedulerKind(StrEnum):
    """``sampler.scheduler``: lcm / tcd (distilled few-step student), ddim (teacher)."""

    LCM = "lcm"
    TCD = "tcd"
    DDIM = "ddim"


class PredictionType(StrEnum):
    """``sampler.prediction_type``: what the Backbone predicts."""

    V_PREDICTION = "v_prediction"
    EPSILON = "epsilon"


class SpeedMode(StrEnum):
    """``speed.mode``: constant head speed, or faster when the audio is louder."""

    CONSTANT = "constant"
    AUDIO = "audio"


class AutoencoderKind(StrEnum):
    """``autoencoder.kind``: ``TinyAutoencoder`` or diffusers ``AutoencoderKL`` (SD-VAE shape)."""

    TINY = "tiny"
    SD_VAE = "sd_vae"


class AudioEncoderKind(StrEnum):
    """``audio_encoder.kind``: the built-in mel encoder or a local wav2vec2 folder."""

    MEL = "mel"
    WAV2VEC2 = "wav2vec2"


@dataclass(frozen=True)
class FaceSection:
    crop_size: int = 256
    """Generated region side, pixels (square)."""
    crop_scale: float = 1.9
    """Crop side / face-box longer side."""
    crop_shift: float = 0.0
    """Crop centre below the face-box centre, in face-box sides."""
    feather: float = 0.1
    """Composite feather width, fraction of the crop side."""
    composite: Composite = Composite.STILL


@dataclass(frozen=True)
class WindowSection:
    frames: int = 12
    """f: frames generated together."""
    motion_frames: int = 4
    """n: last generated frames fed back through ReferenceNet."""
    audio_context: int = 2
    """m: frame i sees audio frames i−m … i+m."""
    first_motion: FirstMotion = FirstMotion.REFERENCE
    motion_noise_std: float = 0.0
    """Noise on motion-frame latents (training uses > 0)."""
    crossfade_frames: int = 0
    """Re-generated already-shown frames pinned to their latents (0: off)."""


@dataclass(frozen=True)
class SamplerSection:
    scheduler: SchedulerKind = SchedulerKind.LCM
    steps: int = 2
    prediction_type: PredictionType = PredictionType.V_PREDICTION
    num_train_timesteps: int = 1000
    audio_guidance: float = 1.0
    """Audio classifier-free guidance weight w in [1, MAX_AUDIO_GUIDANCE]; 1 is off."""


@dataclass(frozen=True)
class SpeedSection:
    mode: SpeedMode = SpeedMode.CONSTANT
    velocity: float = 1.0
    """Degrees per frame (mode constant), the base for mode audio."""
    audio_gain: float = 2.0
    """Extra degrees per frame at full-scale RMS (mode audio)."""


@dataclass(frozen=True)
class AutoencoderSection:
    kind: AutoencoderKind = AutoencoderKind.TINY
    latent_channels: int = 8
    encoder_channels: tuple[int, ...] = (16, 32, 64, 128)
    """tiny: one stride-2 stage per entry."""
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16)
    scaling_factor: float = 1.0
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    """sd_vae: AutoencoderKL blocks (downsampling 2^(len − 1))."""
    layers_per_block: int = 2
    norm_num_groups: int = 32


@dataclass(frozen=True)
class AudioEncoderSection:
    kind: AudioEncoderKind = AudioEncoderKind.MEL
    n_mels: int = 40
    sub_frames: int = 4
    hidden: int = 96
    num_layers: int = 3
    path: str | None = None
    """wav2vec2 folder with config.json + weights (kind wav2vec2)."""
    layers: tuple[int, ...] = (-1,)
    """wav2vec2 hidden-state layers used."""


@dataclass(frozen=True)
class AudioProjectionSection:
    token_dim: int = 64


@dataclass(frozen=True)
class UnetSection:
    """ReferenceNet and Backbone share this shape."""

    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    attention_levels: tuple[bool, ...] = (True, True, True)
    attention_head_dim: int = 32
    num_attention_heads: int | None = None
    norm_num_groups: int = 16
    temporal_heads: int = 2
    max_frames: int = 24
    reference_concat: bool = False
    """Backbone input = noisy latent ⊕ reference latent."""


@dataclass(frozen=True)
class SpeedEncoderSection:
    centers: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
    radii: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 2.0, 2.0)
    dim: int = 32


@dataclass(frozen=True)
class FaceLocatorSection:
    channels: tuple[int, ...] = (16, 32)
    downsample_levels: int = 2


SECTIONS: dict[str, type] = {
    "face": FaceSection,
    "window": WindowSection,
    "sampler": SamplerSection,
    "speed": SpeedSection,
    "autoencoder": AutoencoderSection,
    "audio_encoder": AudioEncoderSection,
    "audio_projection": AudioProjectionSection,
    "unet": UnetSection,
    "speed_encoder": SpeedEncoderSection,
    "face_locator": FaceLocatorSection,
}
MODEL_SECTIONS = ("autoencoder", "audio_encoder", "audio_projection", "unet", "speed_encoder", "face_locator")
"""Sections that shape the weights (a checkpoint must agree on them, and on ``face.crop_size`` and
``face.crop_shift``: ``checkpoint.check_fit``)."""


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _coerce(where: str, value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (int, float, bool, str, a StrEnum, X | None, tuple[X, ...])."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(where, value, args[0])
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(f"{where}[{i}]", v, typing.get_args(hint)[0]) for i, v in enumerate(value))
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        try:
            return hint(value)
        except ValueError:
            choices = ", ".join(m.value for m in hint)
            raise ConfigError(f"{where} must be one of {choices}, got {value!r}") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{where} must be a whole number, got {value!r}")
            return int(value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"no coercion for {hint!r}")  # a programming error in the dataclasses above


def build_section(section: str, raw: Any, context: str = "EMO config") -> Any:
    """The ``section`` dataclass from a mapping (missing keys: defaults); ConfigError for unknown keys."""
    cls = SECTIONS[section]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{context}: section {section!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(raw) - known)  # yaml keys may be numbers
    if unknown:
        raise ConfigError(
            f"{context}: unknown key {section}.{unknown[0]} "
            f"(section {section} has: {', '.join(sorted(known))})"
        )
    values = {}
    for key, value in raw.items():
        try:
            values[key] = _coerce(f"{section}.{key}", value, hints[key])
        except ConfigError as exc:
            raise ConfigError(f"{context}: {exc}") from None
    return cls(**values)


def _plain(value: Any) -> Any:
    """JSON/YAML-ready: enums as their strings, tuples as lists."""
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class EmoConfig:
    """All sections of an EMO yaml (see ``configs/emo/tiny.yaml`` for the meaning of every key)."""

    name: str = "tiny"
    face: FaceSection = field(default_factory=FaceSection)
    window: WindowSection = field(default_factory=WindowSection)
    sampler: SamplerSection = field(default_factory=SamplerSection)
    speed: SpeedSection = field(default_factory=SpeedSection)
    autoencoder: AutoencoderSection = field(default_factory=AutoencoderSection)
    audio_encoder: AudioEncoderSection = field(default_factory=AudioEncoderSection)
    audio_projection: AudioProjectionSection = field(default_factory=AudioProjectionSection)
    unet: UnetSection = field(default_factory=UnetSection)
    speed_encoder: SpeedEncoderSection = field(default_factory=SpeedEncoderSection)
    face_locator: FaceLocatorSection = field(default_factory=FaceLocatorSection)

    # --- save / load ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str = "tiny", context: str | None = None) -> EmoConfig:
        """Validated config from ``{section: {key: value}}`` (missing sections and keys: defaults)."""
        context = context or f"EMO config {name}"
        if not isinstance(data, dict):
            raise ConfigError(f"{context}: must be a mapping of sections (face, window, ...)")
        unknown = [s for s in data if s not in SECTIONS]
        if unknown:
            raise ConfigError(
                f"{context}: unknown section {unknown[0]!r}; sections are: {', '.join(SECTIONS)}"
            )
        sections = {s: build_section(s, data.get(s), context) for s in SECTIONS}
        config = cls(name=name, **sections)
        config.validate()
        return config

    def to_dict(self, sections: tuple[str, ...] = tuple(SECTIONS)) -> dict[str, dict[str, Any]]:
        """``{section: {key: value}}`` with plain lists and strings (JSON and YAML)."""
        return {
            s: {k: _plain(v) for k, v in dataclasses.asdict(getattr(self, s)).items()} for s in sections
        }

    def with_overrides(self, **sections: dict[str, Any]) -> EmoConfig:
        """A validated copy with ``section={key: value}`` changes, e.g.
        ``with_overrides(sampler={"steps": 4})``; the same one-line ConfigError as a yaml for a bad key
        or value (this config is left as it was)."""
        data = self.to_dict()
        for section, values in sections.items():
            if section not in SECTIONS:
                raise ConfigError(f"EMO config {self.name}: unknown section {section!r}")
            data[section] = {**data[section], **_plain_mapping(values)}
        return EmoConfig.from_dict(data, self.name)

    # --- derived sizes -------------------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        return self.autoencoder.latent_channels

    @property
    def downsample_factor(self) -> int:
        if self.autoencoder.kind == AutoencoderKind.TINY:
            return 2 ** len(self.autoencoder.encoder_channels)
        return 2 ** (len(self.autoencoder.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.face.crop_size // self.downsample_factor

    def validate(self) -> None:
        """Cross-field and range checks (types were checked when the sections were built)."""
        name = self.name
        crop = self.face.crop_size
        levels = len(self.unet.block_out_channels)
        grouped: dict[str, UnetSection | AutoencoderSection] = {"unet": self.unet}
        if self.autoencoder.kind == AutoencoderKind.SD_VAE:
            grouped["autoencoder"] = self.autoencoder
        for section, shape in grouped.items():
            groups, sizes = shape.norm_num_groups, shape.block_out_channels
            if not sizes or groups < 1 or any(c < 1 or c % groups for c in sizes):  # GroupNorm per block
                raise ConfigError(
                    f"EMO config {name}: {section}.block_out_channels must be a non-empty list of sizes "
                    f"divisible by {section}.norm_num_groups ({groups})"
                )
        if crop < 8 or crop % self.downsample_factor or self.latent_size % 2 ** (levels - 1):
            raise ConfigError(
                f"EMO config {name}: face.crop_size {crop} must give a latent divisible by "
                f"{2 ** (levels - 1)}"
            )
        if len(self.unet.attention_levels) != levels:
            raise ConfigError(f"EMO config {name}: unet.attention_levels needs {levels} entries")
        w = self.window
        if w.frames < 1 or w.motion_frames < 0 or w.frames + w.motion_frames > self.unet.max_frames:
            raise ConfigError(f"EMO config {name}: window.frames + motion_frames must be ≤ unet.max_frames")
        if w.audio_context < 0 or w.crossfade_frames < 0:
            raise ConfigError(f"EMO config {name}: window.audio_context and crossfade_frames must be ≥ 0")
        sampler = self.sampler
        most = sampler.num_train_timesteps
        if sampler.scheduler in (SchedulerKind.LCM, SchedulerKind.TCD):
            most = min(most, FEW_STEP_MAX_STEPS)
        if not 1 <= sampler.steps <= most:
            raise ConfigError(
                f"EMO config {name}: sampler.steps must be an integer in [1, {most}] for scheduler "
                f"{sampler.scheduler} (num_train_timesteps {sampler.num_train_timesteps})"
            )
        if not 1 <= self.sampler.audio_guidance <= MAX_AUDIO_GUIDANCE:
            raise ConfigError(
                f"EMO config {name}: sampler.audio_guidance must be in [1, {MAX_AUDIO_GUIDANCE:g}]"
            )
        if len(self.speed_encoder.centers) != len(self.speed_encoder.radii):
            raise ConfigError(f"EMO config {name}: speed_encoder.centers and radii need the same length")

    # --- component constructor arguments -------------------------------------------------------------
    def unet_kwargs(self) -> dict[str, Any]:
        u = self.unet
        return {
            "in_channels": self.latent_channels,
            "block_out_channels": u.block_out_channels,
            "layers_per_block": u.layers_per_block,
            "attention_levels": u.attention_levels,
            "attention_head_dim": u.attention_head_dim,
            "num_attention_heads": u.num_attention_heads,
            "norm_num_groups": u.norm_num_groups,
        }

    def backbone_kwargs(self) -> dict[str, Any]:
        return {
            **self.unet_kwargs(),
            "out_channels": self.latent_channels,
            "audio_dim": self.audio_projection.token_dim,
            "temporal_heads": self.unet.temporal_heads,
            "max_frames": self.unet.max_frames,
            "speed_dim": self.speed_encoder.dim,
            "reference_concat": self.unet.reference_concat,
        }


def _plain_mapping(values: Any) -> Any:
    return {k: _plain(v) for k, v in values.items()} if isinstance(values, dict) else values


def load_emo_config(name_or_path: str | Path = "tiny", toy: bool = False) -> EmoConfig:
    """Load ``configs/emo/<name>.yaml`` or a yaml path; ``toy`` applies the file's ``toy:`` overrides.

    Raises ``ConfigError`` (one line) for a missing file, unknown sections/keys, wrong types or
    inconsistent sizes.
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
    if not isinstance(raw, dict):
        raise ConfigError(f"EMO config {path.name} must be a mapping of sections (face, window, ...)")
    toy_over = raw.pop("toy", {}) or {}
    if not isinstance(toy_over, dict):
        raise ConfigError(f"EMO config {path.name}: section 'toy' must be a mapping of sections")
    if toy:
        raw = _merge(raw, toy_over)
    name = path.stem + ("-toy" if toy else "")
    return EmoConfig.from_dict(raw, name=name, context=f"EMO config {path.name}")
