"""EmoPipeline: the components of one config and the windowed sampler (checkpoints: ``checkpoint.py``).

A call renders one window of frames given the cached reference state, that window's audio tokens, the
previous window's last latents (motion frames) and a head speed. Noise is seeded per (seed, frame index),
so the same frame gets the same noise however the timeline is cut into windows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, LCMScheduler, TCDScheduler

from avatar.emo.attention import ReferenceKeyValues, SpatialTransformer
from avatar.emo.audio_encoder import AudioProjection, Wav2Vec2AudioEncoder
from avatar.emo.autoencoder import LatentCodec
from avatar.emo.backbone import EmoBackbone
from avatar.emo.config import EmoConfig, PredictionType, SamplerSection, SchedulerKind
from avatar.emo.face_locator import FaceLocator
from avatar.emo.reference_net import ReferenceNet
from avatar.emo.speed_encoder import SpeedEncoder
from avatar.stopwatch import Stopwatch


@dataclass
class ReferenceState:
    """Per-avatar cache. latent: (1, C, h, w); bank: per attention layer (1, h·w, c) tokens, or their
    keys and values (``EmoPipeline.project_reference``); face_features: (1, C, h, w) face-locator output
    added to every noisy latent."""

    latent: torch.Tensor
    bank: list[torch.Tensor] | list[ReferenceKeyValues]
    face_features: torch.Tensor


@dataclass
class EmoPipelineOutput:
    latents: torch.Tensor
    """(frames, C, h, w) clean latents of the window."""
    images: np.ndarray | None
    """uint8 (frames − pinned, S, S, 3) RGB face crops of the non-pinned frames, or None for 'latent'."""


def noise_schedule(sampler: SamplerSection) -> dict:
    """The forward process shared by training and every sampler: scaled-linear betas rescaled to zero
    terminal SNR, the config's prediction type (diffusers scheduler keyword arguments)."""
    return dict(
        num_train_timesteps=sampler.num_train_timesteps,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=str(sampler.prediction_type),
        rescale_betas_zero_snr=True,
        clip_sample=False,
    )


def make_scheduler(sampler: SamplerSection, kind: SchedulerKind | None = None):
    """Diffusers scheduler for ``sampler`` (zero-terminal-SNR betas, trailing timesteps for all kinds);
    ``kind`` overrides ``sampler.scheduler``."""
    kw = dict(noise_schedule(sampler), timestep_spacing="trailing", set_alpha_to_one=False)
    kind = sampler.scheduler if kind is None else SchedulerKind(kind)
    if kind == SchedulerKind.DDIM:
        return DDIMScheduler(**kw)
    if kind == SchedulerKind.LCM:
        return LCMScheduler(**kw)
    return TCDScheduler(**kw)


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

    def configure_sampler(self, **changes) -> None:
        """Change ``sampler`` keys (e.g. ``scheduler="ddim", steps=25``) and rebuild the scheduler; a bad
        value is the config's one-line ConfigError and leaves the pipeline as it was."""
        self.config = self.config.with_overrides(sampler=changes)
        self.scheduler = make_scheduler(self.config.sampler)

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

    def to(self, device: torch.device | str) -> EmoPipeline:
        """Move every component to ``device`` (the audio features' STFT and the per-frame noise are
        drawn on the CPU and moved, so a window's frames do not depend on the device's generator)."""
        for module in self.modules().values():
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    # --- per-avatar and per-window encoders --------------------------------------------------------
    @torch.no_grad()
    def encode_reference(self, crop: np.ndarray, face_mask: np.ndarray) -> ReferenceState:
        """crop: uint8 (S, S, 3) face region; face_mask: float (S, S) in [0, 1] (face box) → cached state."""
        device = self.device
        image = torch.from_numpy(crop).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        latent = self.codec.encode(image)
        feats = self.reference_net(latent)
        size = latent.shape[-1] * self.face_locator.mask_scale
        mask = torch.nn.functional.interpolate(
            torch.from_numpy(face_mask)[None, None].float().to(device), size=(size, size), mode="area"
        )
        return ReferenceState(latent=latent, bank=feats.bank, face_features=self.face_locator(mask))

    @torch.no_grad()
    def project_reference(self, reference: ReferenceState) -> ReferenceState:
        """``reference`` with every bank entry projected once by its Backbone layer's keys and values
        (the same numbers the sampler would compute at every step; twice the bank's memory)."""
        layers = [m for m in self.backbone.modules() if isinstance(m, SpatialTransformer)]
        if len(layers) != len(reference.bank):
            raise ValueError(f"reference bank has {len(reference.bank)} entries for {len(layers)} layers")
        bank = []
        for layer, tokens in zip(layers, reference.bank, strict=True):
            if not isinstance(tokens, ReferenceKeyValues):  # already projected entries are kept
                attn = layer.transformer_blocks[0].attn1
                tokens = ReferenceKeyValues(attn.to_k(tokens), attn.to_v(tokens))
            bank.append(tokens)
        return dataclasses.replace(reference, bank=bank)

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
        m = self.config.window.audio_context
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32))
        feats = self.audio_encoder.encode(x, start_sample, first_frame - m, num_frames + 2 * m, fps)
        return self.audio_projection(feats.to(self.device, self.backbone.dtype))

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
        if self.config.sampler.prediction_type == PredictionType.V_PREDICTION:
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
        stopwatch: Stopwatch | None = None,
    ) -> EmoPipelineOutput:
        """Sample one window.

        audio_tokens: (F, 2m+1, D) for the F frames ``frame_indices``;
        motion_latents: (n, C, h, w) clean latents
        of the frames just before (None/empty: none); velocity: (F + 2m,) degrees/frame (None: config speed);
        pinned_latents: (k, C, h, w) latents of the first k frames, already shown, blended in at every step
        (latent cross-fade); output_type 'np' also decodes the frames, 'latent' skips the decoder;
        ``stopwatch``: charged with the stages motion_frames, prepare, unet (per step) and decode.
        """
        watch = stopwatch if stopwatch is not None else Stopwatch()
        watch.restart()
        lap = watch.lap

        # 1. check inputs
        f = len(frame_indices)
        m = self.config.window.audio_context
        if audio_tokens.shape[0] != f:
            raise ValueError(f"audio_tokens has {audio_tokens.shape[0]} frames, expected {f}")
        c, hl, wl = reference.latent.shape[1:]
        dtype, device = self.backbone.dtype, self.device
        steps = int(num_inference_steps or self.config.sampler.steps)

        # 2. encode motion frames (ReferenceNet, once per window), noise-augmented
        motion = None
        if motion_latents is not None and motion_latents.shape[0] > 0:
            motion_latents = motion_latents.to(device)
            std = self.config.window.motion_noise_std
            if std > 0:
                motion_latents = motion_latents + std * torch.stack(
                    [
                        frame_noise(seed, int(frame_indices[0]) - 1 - i, 7, (c, hl, wl))
                        for i in range(motion_latents.shape[0])
                    ][::-1]
                ).to(device)
            motion = self.encode_motion(motion_latents.to(dtype))
        lap("motion_frames")

        # 3. speed tokens (constant speed from the config when none is given)
        if velocity is None:
            velocity = torch.full((f + 2 * m,), self.config.speed.velocity)
        speed = self.speed_tokens(velocity.to(device)).to(dtype)

        # 4. timesteps
        self.scheduler.set_timesteps(steps)
        timesteps = self.scheduler.timesteps

        # 5. initial latents: per-frame seeded noise
        noise = torch.stack([frame_noise(seed, int(i), 0, (c, hl, wl)) for i in frame_indices])
        noise = noise.to(device, dtype)
        x = noise * float(self.scheduler.init_noise_sigma)
        k = 0 if pinned_latents is None else int(pinned_latents.shape[0])
        ramp = torch.linspace(1.0, 0.0, k + 2)[1:-1].view(-1, 1, 1, 1).to(device) if k else None
        pinned = pinned_latents.to(device, dtype) if k else None
        lap("prepare")

        # 6. denoising loop (audio classifier-free guidance: a second, silent pass per step when > 1)
        tokens = audio_tokens[None].to(dtype)
        guidance = self.config.sampler.audio_guidance
        for n, t in enumerate(timesteps):
            if k:  # same per-frame noise as the trajectory at this step (see _step)
                step_noise = (
                    noise[:k]
                    if n == 0
                    else torch.stack(
                        [frame_noise(seed, int(i), n, (c, hl, wl)) for i in frame_indices[:k]]
                    ).to(device, dtype)
                )
                renoised = self.scheduler.add_noise(pinned, step_noise, t.reshape(1).to(device))
                x[:k] = ramp * renoised + (1 - ramp) * x[:k]
            model_in = self.scheduler.scale_model_input(x, t)
            pred = self._predict(model_in, t, tokens, reference, motion, speed, guidance)
            x = self._step(pred, t, x, n, timesteps, seed, frame_indices)
            lap("unet")

        # 7. decode
        images = None
        if output_type == "np":
            decoded = self.codec.decode(x[k:])  # pinned frames were shown already
            pixels = ((decoded.float().permute(0, 2, 3, 1) + 1.0) * 127.5).round().clamp(0, 255)
            images = pixels.byte().cpu().numpy()
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
            renoise = renoise.to(x.device, x.dtype)
            return sched.add_noise(denoised, renoise, timesteps[n + 1].reshape(1).to(x.device))
        return sched.step(pred, t, x, eta=0.0).prev_sample  # TCD and DDIM, deterministic (eta 0)

