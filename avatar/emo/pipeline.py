"""EmoPipeline: the components, checkpoint save/load with fit checks, and the windowed sampler.

A call renders one window of frames given the cached reference state, that window's audio tokens, the
previous window's last latents (motion frames) and a head speed. Noise is seeded per (seed, frame index),
so the same frame gets the same noise however the timeline is cut into windows.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, LCMScheduler, TCDScheduler
from safetensors.torch import load_file

from avatar.emo.audio_encoder import AudioProjection, MelAudioEncoder, Wav2Vec2AudioEncoder
from avatar.emo.autoencoder import LatentCodec, TinyAutoencoder
from avatar.emo.backbone import EmoBackbone
from avatar.emo.config import EmoConfig
from avatar.emo.face_locator import FaceLocator
from avatar.emo.reference_net import ReferenceNet
from avatar.emo.speed_encoder import SpeedEncoder
from avatar.errors import ConfigError

CHECKPOINT_META = "emo.json"
MODEL_SECTIONS = ("autoencoder", "audio_encoder", "audio_projection", "unet", "speed_encoder", "face_locator")
WEIGHTS = "diffusion_pytorch_model.safetensors"


@dataclass
class ReferenceState:
    """Per-avatar cache. latent: (1, C, h, w); bank: per attention layer (1, h·w, c);
    face_features: (1, C, h, w) face-locator output added to every noisy latent."""

    latent: torch.Tensor
    bank: list[torch.Tensor]
    face_features: torch.Tensor


@dataclass
class EmoPipelineOutput:
    latents: torch.Tensor
    """(frames, C, h, w) clean latents of the window."""
    images: np.ndarray | None
    """uint8 (frames − pinned, S, S, 3) RGB face crops of the non-pinned frames, or None for 'latent'."""


def noise_schedule(sampler: dict) -> dict:
    """The forward process shared by training and every sampler: scaled-linear betas rescaled to zero
    terminal SNR, the config's prediction type (diffusers scheduler keyword arguments)."""
    return dict(
        num_train_timesteps=int(sampler["num_train_timesteps"]),
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=sampler["prediction_type"],
        rescale_betas_zero_snr=True,
        clip_sample=False,
    )


def make_scheduler(sampler: dict):
    """Diffusers scheduler for ``sampler`` (zero-terminal-SNR betas, trailing timesteps for all kinds)."""
    kw = dict(noise_schedule(sampler), timestep_spacing="trailing")
    kind = sampler["scheduler"]
    if kind == "ddim":
        return DDIMScheduler(**kw, set_alpha_to_one=False)
    if kind == "lcm":
        return LCMScheduler(**kw, set_alpha_to_one=False)
    return TCDScheduler(**kw, set_alpha_to_one=False)


def frame_noise(seed: int, frame: int, salt: int, shape: Sequence[int]) -> torch.Tensor:
    """Gaussian noise that depends only on (seed, frame index, salt)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + frame * 7_919 + salt * 104_729) % (2**63 - 1))
    return torch.randn(*shape, generator=g)


class EmoPipeline:
    """All EMO components for one config; ``__call__`` samples a window (diffusers-style numbered steps)."""

    def __init__(self, config: EmoConfig, components: dict[str, torch.nn.Module]) -> None:
        self.config = config
        self.reference_net: ReferenceNet = components["reference_net"]
        self.backbone: EmoBackbone = components["backbone"]
        self.autoencoder = components["autoencoder"]
        self.codec = LatentCodec(self.autoencoder)
        self.audio_encoder = components["audio_encoder"]
        self.audio_projection: AudioProjection = components["audio_projection"]
        self.face_locator: FaceLocator = components["face_locator"]
        self.speed_encoder: SpeedEncoder = components["speed_encoder"]
        self.scheduler = make_scheduler(config.sampler)
        self.training_steps = 0

    # --- construction / checkpoints ----------------------------------------------------------------
    @staticmethod
    def build_components(config: EmoConfig, seed: int = 0) -> dict[str, torch.nn.Module]:
        """Randomly initialised components (seeded); zero-initialised where the paper's design wants it."""
        torch.manual_seed(seed)
        ae = dict(config.autoencoder)
        if ae["kind"] == "tiny":
            autoencoder = TinyAutoencoder(
                latent_channels=ae["latent_channels"],
                encoder_channels=tuple(ae["encoder_channels"]),
                decoder_channels=tuple(ae["decoder_channels"]),
                scaling_factor=float(ae["scaling_factor"]),
            )
        else:
            n = len(ae["block_out_channels"])
            autoencoder = AutoencoderKL(
                in_channels=3,
                out_channels=3,
                latent_channels=ae["latent_channels"],
                down_block_types=("DownEncoderBlock2D",) * n,
                up_block_types=("UpDecoderBlock2D",) * n,
                block_out_channels=tuple(ae["block_out_channels"]),
                layers_per_block=ae["layers_per_block"],
                norm_num_groups=ae["norm_num_groups"],
                scaling_factor=float(ae["scaling_factor"]),
            )
        au = config.audio_encoder
        if au["kind"] == "wav2vec2":
            if not au.get("path"):
                raise ConfigError("audio_encoder.kind is wav2vec2 but audio_encoder.path is not set")
            audio_encoder = Wav2Vec2AudioEncoder(au["path"], tuple(au["layers"]))
        else:
            audio_encoder = MelAudioEncoder(
                n_mels=au["n_mels"],
                sub_frames=au["sub_frames"],
                hidden=au["hidden"],
                num_layers=au["num_layers"],
            )
        m = int(config.window["audio_context"])
        return {
            "reference_net": ReferenceNet(**config.unet_kwargs()),
            "backbone": EmoBackbone(**config.backbone_kwargs()),
            "autoencoder": autoencoder,
            "audio_encoder": audio_encoder,
            "audio_projection": AudioProjection(
                feature_layers=audio_encoder.feature_layers,
                feature_dim=audio_encoder.feature_dim,
                context=m,
                token_dim=int(config.audio_projection["token_dim"]),
            ),
            "face_locator": FaceLocator(
                latent_channels=config.latent_channels,
                channels=tuple(config.face_locator["channels"]),
                downsample_levels=int(config.face_locator["downsample_levels"]),
            ),
            "speed_encoder": SpeedEncoder(
                centers=tuple(config.speed_encoder["centers"]),
                radii=tuple(config.speed_encoder["radii"]),
                context=m,
                dim=int(config.speed_encoder["dim"]),
            ),
        }

    @classmethod
    def from_config(cls, config: EmoConfig, seed: int = 0) -> EmoPipeline:
        return cls(config, cls.build_components(config, seed)).eval()

    def modules(self) -> dict[str, torch.nn.Module]:
        return {
            "reference_net": self.reference_net,
            "backbone": self.backbone,
            "autoencoder": self.autoencoder,
            "audio_encoder": self.audio_encoder,
            "audio_projection": self.audio_projection,
            "face_locator": self.face_locator,
            "speed_encoder": self.speed_encoder,
        }

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        """Modules saved in a checkpoint (a Wav2Vec2 encoder stays in its own folder)."""
        return {k: v for k, v in self.modules().items() if not isinstance(v, Wav2Vec2AudioEncoder)}

    def eval(self) -> EmoPipeline:
        for module in self.modules().values():
            module.eval()
        return self

    def save_pretrained(
        self, directory: str | Path, training_steps: int | None = None, half: bool = False
    ) -> None:
        """One diffusers folder per model (config.json + safetensors) and ``emo.json`` (config, steps).

        ``half``: store float16 tensors (half the size; ``from_pretrained`` loads them into float32)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, module in self.trainable_modules().items():
            if half:
                copy.deepcopy(module).half().save_pretrained(directory / name)
            else:
                module.save_pretrained(directory / name)
        steps = self.training_steps if training_steps is None else training_steps
        meta = {
            "config_name": self.config.name,
            "training_steps": int(steps),
            "config": {s: getattr(self.config, s) for s in MODEL_SECTIONS + ("face",)},
        }
        (directory / CHECKPOINT_META).write_text(json.dumps(meta, indent=2, default=list))

    @classmethod
    def from_pretrained(cls, directory: str | Path, config: EmoConfig) -> EmoPipeline:
        """Load a checkpoint saved by ``save_pretrained``; ``ConfigError`` (one line) when it does not fit."""
        directory = Path(directory)
        meta_path = directory / CHECKPOINT_META
        if not meta_path.is_file():
            raise ConfigError(f"{directory} is not an EMO checkpoint (no {CHECKPOINT_META})")
        meta = json.loads(meta_path.read_text())
        _check_fit(meta.get("config", {}), config, directory)
        pipe = cls.from_config(config)
        for name, module in pipe.trainable_modules().items():
            path = directory / name / WEIGHTS
            if not path.is_file():
                raise ConfigError(f"checkpoint {directory} lacks {name}/{WEIGHTS}")
            state = load_file(str(path))
            own = module.state_dict()
            missing = sorted(set(own) - set(state))
            extra = sorted(set(state) - set(own))
            wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
            if missing or extra or wrong:
                first = (missing or extra or wrong)[0]
                raise ConfigError(
                    f"checkpoint {directory.name}/{name} does not fit config {config.name}: "
                    f"{len(missing)} missing,"
                    f" {len(extra)} unexpected, {len(wrong)} mis-shaped tensors (first: {first})"
                )
            module.load_state_dict(state, strict=True)
        pipe.training_steps = int(meta.get("training_steps", 0))
        return pipe.eval()

    # --- per-avatar and per-window encoders --------------------------------------------------------
    @torch.no_grad()
    def encode_reference(self, crop: np.ndarray, face_mask: np.ndarray) -> ReferenceState:
        """crop: uint8 (S, S, 3) face region; face_mask: float (S, S) in [0, 1] (face box) → cached state."""
        image = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        latent = self.codec.encode(image)
        feats = self.reference_net(latent)
        size = latent.shape[-1] * self.face_locator.mask_scale
        mask = torch.nn.functional.interpolate(
            torch.from_numpy(face_mask)[None, None].float(), size=(size, size), mode="area"
        )
        return ReferenceState(latent=latent, bank=feats.bank, face_features=self.face_locator(mask))

    @torch.no_grad()
    def audio_tokens(
        self,
        samples: np.ndarray | torch.Tensor,
        start_sample: int,
        first_frame: int,
        num_frames: int,
        fps: float,
    ) -> torch.Tensor:
        """Tokens (num_frames, 2m+1, token_dim) for frames [first_frame, first_frame + num_frames)."""
        m = int(self.config.window["audio_context"])
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
        feats = self.audio_encoder.encode(x, start_sample, first_frame - m, num_frames + 2 * m, fps)
        return self.audio_projection(feats.to(self.backbone.dtype))

    @torch.no_grad()
    def encode_motion(self, motion_latents: torch.Tensor) -> list[torch.Tensor]:
        """(n, C, h, w) → per slot (1, n, c, h', w') ReferenceNet features."""
        return [s[None] for s in self.reference_net(motion_latents).slots]

    @torch.no_grad()
    def speed_tokens(self, velocity: torch.Tensor) -> torch.Tensor:
        """velocity (frames + 2m,) degrees/frame → (1, frames, 2m+1, dim)."""
        return self.speed_encoder(velocity.float()[None])

    def training_target(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The regression target for the Backbone output (v for v-prediction, else ε)."""
        if self.config.sampler["prediction_type"] == "v_prediction":
            return self.scheduler.get_velocity(latents, noise, timesteps)
        return noise

    # --- sampling ------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        reference: ReferenceState,
        audio_tokens: torch.Tensor,
        frame_indices: Sequence[int],
        motion_latents: torch.Tensor | None = None,
        velocity: torch.Tensor | None = None,
        seed: int = 0,
        num_inference_steps: int | None = None,
        pinned_latents: torch.Tensor | None = None,
        output_type: str = "np",
        timings: dict[str, float] | None = None,
    ) -> EmoPipelineOutput:
        """Sample one window.

        audio_tokens: (F, 2m+1, D) for the F frames ``frame_indices``;
        motion_latents: (n, C, h, w) clean latents
        of the frames just before (None/empty: none); velocity: (F + 2m,) degrees/frame (None: config speed);
        pinned_latents: (k, C, h, w) latents of the first k frames, already shown, blended in at every step
        (latent cross-fade); output_type 'np' also decodes the frames, 'latent' skips the decoder.
        """
        import time

        clock = time.perf_counter
        tick = clock()

        def lap(name: str) -> None:
            nonlocal tick
            if timings is not None:
                timings[name] = timings.get(name, 0.0) + (clock() - tick) * 1000.0
            tick = clock()

        # 1. check inputs
        f = len(frame_indices)
        m = int(self.config.window["audio_context"])
        if audio_tokens.shape[0] != f:
            raise ValueError(f"audio_tokens has {audio_tokens.shape[0]} frames, expected {f}")
        c, hl, wl = reference.latent.shape[1:]
        dtype = self.backbone.dtype
        steps = int(num_inference_steps or self.config.sampler["steps"])

        # 2. encode motion frames (ReferenceNet, once per window), noise-augmented
        motion = None
        if motion_latents is not None and motion_latents.shape[0] > 0:
            std = float(self.config.window["motion_noise_std"])
            if std > 0:
                motion_latents = motion_latents + std * torch.stack(
                    [
                        frame_noise(seed, int(frame_indices[0]) - 1 - i, 7, (c, hl, wl))
                        for i in range(motion_latents.shape[0])
                    ][::-1]
                )
            motion = self.encode_motion(motion_latents.to(dtype))
        lap("motion_frames")

        # 3. speed tokens (constant speed from the config when none is given)
        if velocity is None:
            velocity = torch.full((f + 2 * m,), float(self.config.speed["velocity"]))
        speed = self.speed_tokens(velocity).to(dtype)

        # 4. timesteps
        self.scheduler.set_timesteps(steps)
        timesteps = self.scheduler.timesteps

        # 5. initial latents: per-frame seeded noise
        noise = torch.stack([frame_noise(seed, int(i), 0, (c, hl, wl)) for i in frame_indices]).to(dtype)
        x = noise * float(self.scheduler.init_noise_sigma)
        k = 0 if pinned_latents is None else int(pinned_latents.shape[0])
        ramp = torch.linspace(1.0, 0.0, k + 2)[1:-1].view(-1, 1, 1, 1) if k else None
        lap("prepare")

        # 6. denoising loop (audio classifier-free guidance: a second, silent pass per step when > 1)
        tokens = audio_tokens[None].to(dtype)
        guidance = float(self.config.sampler.get("audio_guidance", 1.0))
        for n, t in enumerate(timesteps):
            if k:  # same per-frame noise as the trajectory at this step (see _step)
                step_noise = (
                    noise[:k]
                    if n == 0
                    else torch.stack(
                        [frame_noise(seed, int(i), n, (c, hl, wl)) for i in frame_indices[:k]]
                    ).to(dtype)
                )
                renoised = self.scheduler.add_noise(pinned_latents.to(dtype), step_noise, t.reshape(1))
                x[:k] = ramp * renoised + (1 - ramp) * x[:k]
            model_in = self.scheduler.scale_model_input(x, t)
            pred = self._predict(model_in, t, tokens, reference, motion, speed, guidance)
            x = self._step(pred, t, x, n, timesteps, seed, frame_indices)
            lap("unet")

        # 7. decode
        images = None
        if output_type == "np":
            decoded = self.codec.decode(x[k:])  # pinned frames were shown already
            images = ((decoded.permute(0, 2, 3, 1) + 1.0) * 127.5).round().clamp(0, 255).byte().numpy()
            lap("decode")
        return EmoPipelineOutput(latents=x, images=images)

    def _predict(self, x, t, tokens, reference, motion, speed, guidance: float) -> torch.Tensor:
        """Backbone output (F, C, h, w) for latents x (F, C, h, w); with ``guidance`` w > 1 it is
        silent + w · (voiced − silent), the silent pass seeing all-zero audio tokens (audio drop)."""

        def run(audio: torch.Tensor) -> torch.Tensor:
            return self.backbone(
                x[None],
                t,
                audio,
                reference.bank,
                motion,
                speed,
                reference.face_features,
                reference.latent.to(x.dtype),
            )[0]

        voiced = run(tokens)
        if guidance == 1.0:
            return voiced
        silent = run(torch.zeros_like(tokens))
        return silent + guidance * (voiced - silent)

    def _step(self, pred, t, x, n, timesteps, seed, frame_indices) -> torch.Tensor:
        """One scheduler step; LCM's re-noising uses per-frame noise (window-independent)."""
        sched = self.scheduler
        if isinstance(sched, LCMScheduler):
            denoised = sched.step(pred, t, x).denoised
            if n + 1 >= len(timesteps):
                return denoised
            renoise = torch.stack([frame_noise(seed, int(i), n + 1, x.shape[1:]) for i in frame_indices])
            return sched.add_noise(denoised, renoise.to(x.dtype), timesteps[n + 1].reshape(1))
        if isinstance(sched, TCDScheduler):
            return sched.step(pred, t, x, eta=0.0).prev_sample
        return sched.step(pred, t, x, eta=0.0).prev_sample


def _check_fit(saved: dict, config: EmoConfig, directory: Path) -> None:
    """ConfigError naming the first model-shaping key where the checkpoint and the config disagree."""
    for section in MODEL_SECTIONS + ("face",):
        ours = getattr(config, section)
        theirs = saved.get(section, {})
        for key in sorted(set(ours) | set(theirs)):
            if key in ("path", "crop_scale", "feather", "composite"):
                continue
            a, b = ours.get(key), theirs.get(key)
            if (list(a) if isinstance(a, list | tuple) else a) != (
                list(b) if isinstance(b, list | tuple) else b
            ):
                raise ConfigError(
                    f"checkpoint {directory.name} does not fit config {config.name}: "
                    f"{section}.{key} is {b!r} in the"
                    f" checkpoint but {a!r} in the config"
                )
