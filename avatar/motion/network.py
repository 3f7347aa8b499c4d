"""The motion denoiser in plain numpy: the inference side of ``avatar.training.motion_model`` (torch).

Both implement exactly the same function with the same parameter names, so weights trained with torch
run here without torch (the server's default install has no torch), in well under a millisecond per
denoising step on one core.

Per generated frame (shapes without the batch axis):

1. ``condition(mel (48, 40), context (8, 27)) -> c (H,)``, once per frame: a two-layer MLP over the
   480 ms of log-mel (``audio_features``; trained with dropout: on 30 minutes of speech a wider or
   convolutional encoder overfits and follows unseen speakers less), plus a projection of the last 8
   generated motion frames (the motion frames). ``mel=None`` gives the learned "no audio" embedding
   used by classifier-free guidance.
2. ``velocity(x_t (27,), t, c) -> v (27,)``, once per denoising step: an MLP with residual blocks
   (pre-LayerNorm, tanh-GELU) on the noisy motion, the condition and a sinusoidal embedding of the
   diffusion time ``t`` in [0, 1]. The schedule is cosine: ``x_t = cos(pi t / 2) x_0 + sin(pi t / 2) e``,
   and the net predicts ``v = cos(pi t / 2) e - sin(pi t / 2) x_0`` (v-prediction).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from avatar.errors import ConfigError
from avatar.motion.audio_features import CONTEXT_HOPS, N_MELS
from avatar.motion.representation import MOTION_DIM, MotionPart, part_dims
from avatar.motion.voice_normaliser import VoiceNormalisation

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "motion_weights.npz"


@dataclass(frozen=True)
class MotionNetConfig:
    """Sizes of the denoiser (``register_to_config``-style: saved beside the weights)."""

    part: str = MotionPart.MOUTH.value
    """Which values this net generates (``representation.MotionPart``)."""
    n_mels: int = N_MELS
    audio_hops: int = CONTEXT_HOPS
    context_frames: int = 8
    hidden: int = 256
    blocks: int = 4
    audio_hidden: int = 256
    audio_dropout: float = 0.3
    """Dropout on the audio MLP's hidden layer while training (the input gets a third of it)."""
    time_dim: int = 64
    fps: float = 25.0

    def __post_init__(self) -> None:
        try:
            MotionPart(self.part)
        except ValueError:
            raise ConfigError(f"unknown motion part {self.part!r}") from None

    @property
    def dims(self) -> np.ndarray:
        return part_dims(self.part)

    @property
    def motion_dim(self) -> int:
        """Values this net generates (19 for the mouth, 8 for the head)."""
        return len(self.dims)

    @property
    def motion_frames(self) -> int:
        """Motion frames it sees: none for the mouth (which follows the voice: with motion frames it
        learns to continue its last frames, and to guess the speaker from their head motion), else
        ``context_frames`` of its own values."""
        return 0 if self.part == MotionPart.MOUTH else self.context_frames

    @classmethod
    def from_dict(cls, data: dict) -> MotionNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"motion config has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in data.items() if k in known})


def schedule(t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, sigma) of the cosine schedule at diffusion time ``t`` in [0, 1]."""
    t = np.asarray(t, dtype=np.float32)
    return np.cos(0.5 * np.pi * t).astype(np.float32), np.sin(0.5 * np.pi * t).astype(np.float32)


def time_embedding(t: np.ndarray, dim: int) -> np.ndarray:
    """Sinusoidal embedding (B, dim) of times ``t`` (B,) in [0, 1] (scaled by 1000)."""
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float32) / half)
    args = 1000.0 * np.asarray(t, np.float32)[:, None] * freqs[None]
    return np.concatenate([np.cos(args), np.sin(args)], axis=1).astype(np.float32)


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    inv_n = 1.0 / x.shape[-1]
    centred = x - np.add.reduce(x, axis=-1, keepdims=True) * inv_n
    var = np.add.reduce(centred * centred, axis=-1, keepdims=True) * inv_n
    return centred / np.sqrt(var + eps) * weight + bias


class MotionDenoiser:
    """Numpy denoiser with ``from_pretrained``/``save_pretrained`` (float16 weights on disk)."""

    def __init__(self, config: MotionNetConfig, params: dict[str, np.ndarray]) -> None:
        self.config = config
        self.p = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
        self._check()
        # Weight matrices transposed once (x @ W.T with a contiguous W.T is the fast path), and the
        # time embedding MLP's output cached per diffusion time (samplers reuse a few fixed times).
        self.t = {
            k: np.ascontiguousarray(v.T) for k, v in self.p.items() if k.endswith("weight") and v.ndim == 2
        }
        self._time_cache: dict[float, np.ndarray] = {}

    def _check(self) -> None:
        c = self.config
        expected = {
            "audio.fc1.weight": (c.audio_hidden, c.audio_hops * c.n_mels),
            "audio.mel_mean": (c.n_mels,),
            "audio.mel_std": (c.n_mels,),
            "audio.proj.weight": (c.hidden, c.audio_hidden),
            "in_proj.weight": (c.hidden, c.motion_dim),
            "out_proj.weight": (c.motion_dim, c.hidden),
        }
        if c.motion_frames:
            expected["motion.proj.weight"] = (c.hidden, c.motion_frames * c.motion_dim)
        for name, shape in expected.items():
            got = self.p.get(name)
            if got is None or got.shape != shape:
                found = "missing" if got is None else f"shape {tuple(got.shape)}"
                raise ConfigError(
                    f"motion weights do not fit their config: {name} is {found}, expected {shape}"
                )

    # --- the two halves of the net -------------------------------------------------------------------
    def condition(self, mel: np.ndarray | None, context: np.ndarray) -> np.ndarray:
        """c (B, H) from log-mel (B, hops, n_mels) (None: no audio) and the last motion frames of this
        part's values (B, n, D) (ignored by the mouth)."""
        p = self.p
        batch = context.shape[0]
        if mel is None:
            audio = np.broadcast_to(p["audio.null"], (batch, self.config.hidden))
        else:
            mel = (mel - p["audio.mel_mean"]) / p["audio.mel_std"]
            h = gelu(mel.reshape(batch, -1) @ self.t["audio.fc1.weight"] + p["audio.fc1.bias"])
            audio = h @ self.t["audio.proj.weight"] + p["audio.proj.bias"]
        if not self.config.motion_frames:
            return np.array(audio, dtype=np.float32)
        frames = context[:, -self.config.motion_frames :].reshape(batch, -1)
        return (audio + frames @ self.t["motion.proj.weight"] + p["motion.proj.bias"]).astype(np.float32)

    def time_features(self, t: np.ndarray) -> np.ndarray:
        """The time MLP's output (B, H) for diffusion times t (B,) (cached when all t are equal)."""
        p, w = self.p, self.t
        key = float(t[0]) if t.size and np.all(t == t[0]) else None
        cached = self._time_cache.get(key) if key is not None else None
        if cached is not None and len(cached) >= len(t):
            return cached[: len(t)]
        emb = time_embedding(t, self.config.time_dim)
        emb = (
            gelu(emb @ w["time.fc1.weight"] + p["time.fc1.bias"]) @ w["time.fc2.weight"] + p["time.fc2.bias"]
        )
        if key is not None and len(self._time_cache) < 64:
            self._time_cache[key] = emb
        return emb

    def velocity(self, x: np.ndarray, t: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """v (B, D) for noisy motion x (B, D) at times t (B,) under condition (B, H)."""
        p, w = self.p, self.t
        h = x @ w["in_proj.weight"] + p["in_proj.bias"] + cond + self.time_features(np.asarray(t, np.float32))
        for i in range(self.config.blocks):
            pre = f"blocks.{i}."
            y = layer_norm(h, p[pre + "norm.weight"], p[pre + "norm.bias"])
            y = gelu(y @ w[pre + "fc1.weight"] + p[pre + "fc1.bias"])
            h = h + y @ w[pre + "fc2.weight"] + p[pre + "fc2.bias"]
        h = layer_norm(h, p["out_norm.weight"], p["out_norm.bias"])
        return (h @ w["out_proj.weight"] + p["out_proj.bias"]).astype(np.float32)

    def x0(self, x: np.ndarray, t: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """Clean-motion prediction ``alpha x - sigma v`` (B, D)."""
        alpha, sigma = schedule(t)
        return alpha[:, None] * x - sigma[:, None] * self.velocity(x, t, cond)


class MotionNets:
    """The denoisers of all parts as one: the full motion vector (B, 27) in and out.

    ``condition`` returns one condition per part; ``velocity``/``x0`` assemble each part's values.
    Values no part generates (a model trained for one part) stay at ``fill`` (the normalised rest).
    ``voice``: the voice normalisation of the audio input (``voice_normaliser``), or None for a model
    trained on plain log-mel.

    Saved as one folder: ``config.json`` (``{"kind": "motion-sampler", "parts": {part: net config},
    "voice": ..., "sampler": ..., "training": ...}``) and ``motion_weights.npz`` (float16
    ``<part>.<name>`` weights, the float32 ``basis.*`` arrays of the motion basis and ``voice.prior``).
    """

    def __init__(
        self,
        nets: list[MotionDenoiser],
        fill: np.ndarray | None = None,
        voice: VoiceNormalisation | None = None,
    ) -> None:
        if not nets:
            raise ConfigError("a motion model needs at least one part")
        parts = [n.config.part for n in nets]
        if len(set(parts)) != len(parts):
            raise ConfigError("a motion model has the same part twice")
        self.nets = nets
        self.motion_dim = MOTION_DIM
        self.context_frames = max(1, max(n.config.context_frames for n in nets))
        self.fill = np.zeros(MOTION_DIM, np.float32) if fill is None else np.asarray(fill, np.float32)
        self.voice = voice

    @property
    def parts(self) -> list[str]:
        return [n.config.part for n in self.nets]

    def condition(self, mel: np.ndarray | None, context: np.ndarray) -> list[np.ndarray]:
        """Per part, its condition from log-mel (B, 48, 40) (None: no audio) and motion frames (B, n, 27)."""
        return [n.condition(mel, context[..., n.config.dims]) for n in self.nets]

    def _assemble(self, x: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
        out = np.broadcast_to(self.fill, x.shape).copy()
        for net, values in zip(self.nets, parts, strict=True):
            out[:, net.config.dims] = values
        return out

    def velocity(self, x: np.ndarray, t: np.ndarray, conds: list[np.ndarray]) -> np.ndarray:
        return self._assemble(
            x, [n.velocity(x[:, n.config.dims], t, c) for n, c in zip(self.nets, conds, strict=True)]
        )

    def x0(self, x: np.ndarray, t: np.ndarray, conds: list[np.ndarray]) -> np.ndarray:
        return self._assemble(
            x, [n.x0(x[:, n.config.dims], t, c) for n, c in zip(self.nets, conds, strict=True)]
        )

    # --- files ----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path) -> tuple[MotionNets, dict, dict[str, np.ndarray]]:
        """(nets, the whole config dict, every array in the weights file) from a saved folder.

        Raises ``ConfigError`` with one line for a missing folder, file or mismatched weights."""
        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise ConfigError(f"no motion model in {folder} (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            data = json.loads(config_path.read_text(encoding="utf-8"))
            with np.load(weights_path) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read motion model in {folder}: {exc.__class__.__name__}") from None
        if not isinstance(data, dict) or data.get("kind") != "motion-sampler":
            raise ConfigError(f"{config_path} is not a motion model config")
        parts = data.get("parts")
        if not isinstance(parts, dict) or not parts:
            raise ConfigError(f"{config_path} names no parts")
        nets = []
        for part, net_config in parts.items():
            if not isinstance(net_config, dict):
                raise ConfigError(f"{config_path}: part {part!r} is not a mapping")
            config = MotionNetConfig.from_dict({**net_config, "part": part})
            prefix = f"{part}."
            params = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            nets.append(MotionDenoiser(config, params))
        voice = None
        if "voice" in data:
            try:
                voice = VoiceNormalisation.from_config(data["voice"], arrays["voice.prior"])
            except (KeyError, TypeError, ValueError, AttributeError):
                raise ConfigError(f"{folder}: bad voice normalisation ('voice', 'voice.prior')") from None
        return cls(nets, voice=voice), data, arrays

    @staticmethod
    def save_pretrained(
        folder: str | Path,
        configs: list[MotionNetConfig],
        params: list[dict[str, np.ndarray]],
        extra_arrays: dict[str, np.ndarray],
        extra_config: dict | None = None,
    ) -> None:
        """Write ``config.json`` and ``motion_weights.npz`` (float16 weights, float32 extra arrays)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        parts = {c.part: {k: v for k, v in asdict(c).items() if k != "part"} for c in configs}
        data = {"kind": "motion-sampler", "parts": parts, **(extra_config or {})}
        (folder / CONFIG_NAME).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        out = {}
        for config, part_params in zip(configs, params, strict=True):
            out.update(
                {f"{config.part}.{k}": np.asarray(v, dtype=np.float16) for k, v in part_params.items()}
            )
        for k, v in extra_arrays.items():
            v = np.asarray(v)
            out[k] = v if v.dtype.kind in "iub" else v.astype(np.float32)
        np.savez(folder / WEIGHTS_NAME, **out)
