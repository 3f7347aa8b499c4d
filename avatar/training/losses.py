"""What trains in each stage, and the per-stage losses (v-prediction, zero-terminal-SNR DDPM noise).

Stage 0 autoencoder: L1 + image-gradient L1 + a latent-scale regulariser.
Stage 1 image: ReferenceNet, Backbone spatial layers, face locator; one target frame per reference.
Stage 2 video: temporal modules (not their speed layers), audio attention, audio encoder + projection;
n motion frames (noise-augmented, sometimes replaced by the reference) + f target frames; the audio tokens
of a window are sometimes zeroed (``audio_drop``) so the sampler can use audio classifier-free guidance.
Stage 3 speed: temporal modules incl. speed attention, speed encoder.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDPMScheduler
from torch import nn

from avatar.emo.audio_encoder import MelAudioEncoder, frame_segments
from avatar.emo.config import PredictionType, SamplerSection, WindowSection
from avatar.emo.pipeline import EmoPipeline, noise_schedule


def training_scheduler(sampler: SamplerSection) -> DDPMScheduler:
    """The forward process the samplers assume: scaled-linear betas rescaled to zero terminal SNR."""
    return DDPMScheduler(**noise_schedule(sampler))


def is_trainable(module: str, name: str, stage: int) -> bool:
    """Whether parameter ``name`` of pipeline module ``module`` trains in ``stage``."""
    temporal = ".motion_modules." in f".{name}"
    speed = "attn_speed" in name or "norm_speed" in name
    audio_attn = ".attentions." in f".{name}" and (".attn2." in name or ".norm2." in name)
    if stage == 0:
        return module == "autoencoder"
    if stage == 1:
        return module in ("reference_net", "face_locator") or (
            module == "backbone" and not temporal and not audio_attn
        )
    if stage == 2:
        return module in ("audio_encoder", "audio_projection") or (
            module == "backbone" and (audio_attn or (temporal and not speed))
        )
    return module == "speed_encoder" or (module == "backbone" and temporal)


def mark_trainable(pipe: EmoPipeline, stage: int) -> dict[str, nn.Parameter]:
    """Set requires_grad per stage; returns the trainable parameters as ``module.param`` → Parameter."""
    params = {}
    for module_name, module in pipe.trainable_modules().items():
        for name, p in module.named_parameters():
            flag = is_trainable(module_name, name, stage)
            p.requires_grad_(flag)
            if flag:
                params[f"{module_name}.{name}"] = p
    return params


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def mel_audio_features(encoder, audio: torch.Tensor, first: int, count: int, fps: float) -> torch.Tensor:
    """(count, layers, dim) features of frames first … first+count−1; the STFT runs on the CPU."""
    device = next(encoder.parameters()).device
    if isinstance(encoder, MelAudioEncoder):
        mel = encoder.log_mel(frame_segments(audio.float().cpu(), 0, first, count, fps))
        return encoder(mel.to(device))
    return encoder.encode(audio, 0, first, count, fps).to(device)


class StageLoss(nn.Module):
    """Holds the pipeline's modules (so DDP can wrap one module) and computes one stage's loss."""

    def __init__(self, pipe: EmoPipeline, stage: int, options: dict, fps: float) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(pipe.trainable_modules())
        self.pipe = pipe
        self.stage = stage
        self.options = options
        self.fps = fps
        self.scheduler = training_scheduler(pipe.config.sampler)
        self.generator = torch.Generator().manual_seed(0)

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def forward(self, batch) -> torch.Tensor:
        if self.stage == 0:
            return self.autoencoder_loss(batch)
        if self.stage == 1:
            return self.image_loss(*batch)
        return self.video_loss(batch)

    # --- stage 0 ---
    def autoencoder_loss(self, images: torch.Tensor) -> torch.Tensor:
        ae = self.parts["autoencoder"]
        z = ae.encode(images)
        rec = ae.decode(z)
        gx, gy = image_gradients(rec)
        tx, ty = image_gradients(images)
        edge = (gx - tx).abs().mean() + (gy - ty).abs().mean()
        reg = (z.float().square().mean() - 1.0).square()
        o = self.options
        return (rec - images).abs().mean() + o["edge_weight"] * edge + o["latent_reg"] * reg

    # --- shared diffusion pieces ---
    def _noise(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy, target, timesteps) for clean latents (b, f, C, h, w); one timestep per batch item."""
        b = latents.shape[0]
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=self.generator)
        noise = torch.randn(latents.shape, generator=self.generator).to(latents)
        t = t.to(latents.device)
        flat_t = t.repeat_interleave(latents.shape[1])
        lat, eps = latents.flatten(0, 1), noise.flatten(0, 1)
        noisy = self.scheduler.add_noise(lat, eps, flat_t)
        if self.pipe.config.sampler.prediction_type == PredictionType.V_PREDICTION:
            target = self.scheduler.get_velocity(lat, eps, flat_t)
        else:
            target = eps
        return noisy.view_as(latents), target.view_as(latents), t

    def _face(self, masks: torch.Tensor, latent_size: int) -> torch.Tensor:
        locator = self.parts["face_locator"]
        size = latent_size * locator.mask_scale
        return locator(nn.functional.interpolate(masks, size=(size, size), mode="area"))

    @torch.no_grad()
    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.pipe.codec.encode(images)

    # --- stage 1 ---
    def image_loss(self, refs: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        zr, zt = self._encode(refs), self._encode(targets)
        bank = self.parts["reference_net"](zr).bank
        face = self._face(masks, zt.shape[-1])
        noisy, target, t = self._noise(zt[:, None])
        m = self.pipe.config.window.audio_context
        tokens = torch.zeros(zt.shape[0], 1, 2 * m + 1, self.pipe.config.audio_projection.token_dim)
        pred = self.parts["backbone"](noisy, t, tokens.to(zt), bank, None, None, face, zr)
        return nn.functional.mse_loss(pred.float(), target.float())

    # --- stage 2 / 3 ---
    def video_loss(self, examples: list) -> torch.Tensor:
        o, cfg = self.options, self.pipe.config
        m = cfg.window.audio_context
        device = next(self.parts["backbone"].parameters()).device
        refs = torch.stack([e.reference for e in examples]).to(device)
        motion_img = torch.stack([e.motion for e in examples]).to(device)  # (b, n, 3, S, S)
        targets = torch.stack([e.target for e in examples]).to(device)
        masks = torch.stack([e.mask for e in examples]).to(device)
        b, n = motion_img.shape[:2]
        zr = self._encode(refs)
        zt = self._encode(targets.flatten(0, 1)).unflatten(0, (b, -1))
        with torch.no_grad():
            bank = self.parts["reference_net"](zr).bank
            motion = None
            if n:
                zm = self._encode(motion_img.flatten(0, 1)).unflatten(0, (b, n))
                drop = torch.rand(b, generator=self.generator) < float(o["motion_drop"])
                zm[drop.to(device)] = zr[drop.to(device)][:, None].expand(-1, n, -1, -1, -1)
                zm = zm + float(o["motion_noise_std"]) * torch.randn(zm.shape, generator=self.generator).to(
                    zm
                )
                motion = [s.unflatten(0, (b, n)) for s in self.parts["reference_net"](zm.flatten(0, 1)).slots]
        face = self._face(masks, zt.shape[-1])
        f = zt.shape[1]
        tokens = torch.stack(
            [
                self.parts["audio_projection"](
                    mel_audio_features(self.parts["audio_encoder"], e.audio, e.first - m, f + 2 * m, self.fps)
                )
                for e in examples
            ]
        )
        if float(o["audio_drop"]) > 0:
            silent = torch.rand(b, generator=self.generator) < float(o["audio_drop"])
            tokens = torch.where(silent.to(device)[:, None, None, None], torch.zeros_like(tokens), tokens)
        speed = self.parts["speed_encoder"](torch.stack([e.velocity for e in examples]).to(device).float())
        noisy, target, t = self._noise(zt)
        pred = self.parts["backbone"](noisy, t, tokens, bank, motion, speed, face, zr)
        return nn.functional.mse_loss(pred.float(), target.float())


def fetch_batch(dataset, stage: int, batch: int, rng: np.random.Generator, window: WindowSection):
    """Sample a stage's batch from a ``ClipDataset`` (``window``: the model config's window section)."""
    if stage == 0:
        return dataset.sample_frames(rng, batch)
    if stage == 1:
        return dataset.sample_pairs(rng, batch)
    return [
        dataset.sample_window(rng, window.motion_frames, window.frames, window.audio_context)
        for _ in range(batch)
    ]
