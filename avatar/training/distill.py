"""Latent consistency distillation (LCM): a few-step student Backbone from a trained teacher checkpoint.

Per step: a clean window latent z0 is noised to x_t at a teacher-grid timestep t (grid step k = T /
teacher_steps; half the draws use the student's own 1/2/4-step trailing timesteps); one teacher DDIM step
gives x_{t−k}; the consistency function f(x, t) = c_skip(t)·x + c_out(t)·x̂0(x, t) (LCMScheduler's
boundary scalings, x̂0 from the v-prediction) of the student at (x_t, t) is pulled (pseudo-Huber) towards
that of the EMA target network at (x_{t−k}, t−k). With ``audio_guidance`` w > 1 the teacher step follows
the audio-guided ODE (x̂0 = silent + w·(voiced − silent)), so the student samples it in one pass.
Conditioning (reference bank, motion frames, audio, speed, face locator) comes from the frozen teacher.
The student is sampled with ``LCMScheduler``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from avatar.emo.checkpoint import save_checkpoint
from avatar.emo.config import PredictionType, SchedulerKind
from avatar.emo.pipeline import EmoPipeline, make_scheduler
from avatar.errors import ConfigError
from avatar.training.dataset import ClipDataset
from avatar.training.losses import fetch_batch, mel_audio_features, training_scheduler
from avatar.training.plots import plot_loss, save_grid
from avatar.training.settings import TrainSettings
from avatar.training.trainer import load_pipeline, pick_device, run_summary, sample_rows


class Distiller:
    """Distils ``teacher`` (checkpoint folder or pipeline) into a student Backbone written to ``out``."""

    def __init__(
        self,
        settings: TrainSettings,
        teacher: str | Path | EmoPipeline,
        data: str | Path | ClipDataset,
        out: str | Path,
        steps_student: int = 2,
        device: str | None = None,
        student: str | Path | None = None,
    ) -> None:
        if steps_student not in (1, 2, 4):
            raise ConfigError(f"--steps-student must be 1, 2 or 4 (got {steps_student})")
        self.settings = settings
        self.options = settings.distill_options()
        self.out = Path(out)
        self.steps_student = steps_student
        self.device = pick_device(device)
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormal floats are slow on CPUs (this thread only)
        cfg = settings.model
        self.data = data if isinstance(data, ClipDataset) else ClipDataset(data, cfg.face.crop_size)
        self.teacher = teacher if isinstance(teacher, EmoPipeline) else load_pipeline(settings, teacher)
        guided = {"audio_guidance": float(self.options["audio_guidance"])}
        self.teacher.config = self.teacher.config.with_overrides(sampler=guided)  # its sample rows too
        for module in self.teacher.trainable_modules().values():
            module.to(self.device).eval().requires_grad_(False)
        self.step = 0
        start = self.teacher.backbone
        if student is not None:  # continue an earlier distillation: its student (and step count)
            earlier = load_pipeline(settings, student)
            start, self.step = earlier.backbone, earlier.training_steps - self.teacher.training_steps
            if self.step < 0:
                raise ConfigError(f"{student} has fewer training steps than the teacher: not its student")
        self.student = copy.deepcopy(start).to(self.device).train().requires_grad_(True)
        self.target = copy.deepcopy(start).to(self.device).eval()
        self.scheduler = training_scheduler(cfg.sampler)
        self.lcm = make_scheduler(cfg.sampler, SchedulerKind.LCM)
        total = cfg.sampler.num_train_timesteps
        self.k = total // int(self.options["teacher_steps"])
        self.grid = torch.arange(self.k - 1 + self.k, total, self.k)
        self.lcm.set_timesteps(steps_student)
        self.student_timesteps = self.lcm.timesteps.clone()
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=float(self.options["lr"]))
        self.rng = np.random.default_rng(settings.seed + 77 + self.step)
        self.generator = torch.Generator().manual_seed(settings.seed + 77 + self.step)

    # --- helpers ---
    def _alpha_sigma(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        acp = self.scheduler.alphas_cumprod.to(like.device)[t].view(-1, 1, 1, 1, 1).to(like.dtype)
        return acp.sqrt(), (1 - acp).sqrt()

    def _x0(self, model, x, t, cond) -> torch.Tensor:
        """Predicted clean latents from a v- (or ε-) prediction Backbone."""
        pred = model(x, t, *cond)
        a, s = self._alpha_sigma(t, x)
        if self.teacher.config.sampler.prediction_type == PredictionType.V_PREDICTION:
            return a * x - s * pred
        return (x - s * pred) / a.clamp(min=1e-4)

    def _consistency(self, model, x, t, cond) -> torch.Tensor:
        c_skip, c_out = self.lcm.get_scalings_for_boundary_condition_discrete(t.float())
        c_skip, c_out = (c.view(-1, 1, 1, 1, 1).to(x) for c in (c_skip, c_out))
        return c_skip * x + c_out * self._x0(model, x, t, cond)

    @torch.no_grad()
    def _conditioning(self, examples) -> tuple[torch.Tensor, tuple]:
        """Clean window latents (b, f, C, h, w) and the Backbone's conditioning arguments."""
        pipe, dev = self.teacher, self.device
        m = pipe.config.window.audio_context
        refs = torch.stack([e.reference for e in examples]).to(dev)
        targets = torch.stack([e.target for e in examples]).to(dev)
        b, f = targets.shape[:2]
        zr = pipe.codec.encode(refs)
        z0 = pipe.codec.encode(targets.flatten(0, 1)).unflatten(0, (b, f))
        bank = pipe.reference_net(zr).bank
        n = examples[0].motion.shape[0]
        motion = None
        if n:
            zm = pipe.codec.encode(torch.stack([e.motion for e in examples]).to(dev).flatten(0, 1))
            motion = [s.unflatten(0, (b, n)) for s in pipe.reference_net(zm).slots]
        size = zr.shape[-1] * pipe.face_locator.mask_scale
        masks = torch.nn.functional.interpolate(
            torch.stack([e.mask for e in examples]).to(dev), size=(size, size), mode="area"
        )
        tokens = torch.stack(
            [
                pipe.audio_projection(
                    mel_audio_features(pipe.audio_encoder, e.audio, e.first - m, f + 2 * m, self.data.fps)
                )
                for e in examples
            ]
        )
        speed = pipe.speed_encoder(torch.stack([e.velocity for e in examples]).to(dev).float())
        return z0, (tokens, bank, motion, speed, pipe.face_locator(masks), zr)

    def _timesteps(self, b: int) -> torch.Tensor:
        own = self.student_timesteps[self.student_timesteps >= self.k]
        pick = []
        for _ in range(b):
            if len(own) and self.rng.random() < 0.5:
                pick.append(int(own[self.rng.integers(len(own))]))
            else:
                pick.append(int(self.grid[self.rng.integers(len(self.grid))]))
        return torch.tensor(pick, device=self.device)

    def loss(self, examples) -> torch.Tensor:
        z0, cond = self._conditioning(examples)
        b = z0.shape[0]
        t = self._timesteps(b)
        noise = torch.randn(z0.shape, generator=self.generator).to(z0)
        a, s = self._alpha_sigma(t, z0)
        x_t = a * z0 + s * noise
        with torch.no_grad():
            x0_teacher = self._x0(self.teacher.backbone, x_t, t, cond)
            w = float(self.options["audio_guidance"])
            if w != 1.0:  # x̂0 is linear in the prediction: guide it directly
                silent = (torch.zeros_like(cond[0]),) + cond[1:]
                x0_silent = self._x0(self.teacher.backbone, x_t, t, silent)
                x0_teacher = x0_silent + w * (x0_teacher - x0_silent)
            eps = (x_t - a * x0_teacher) / s.clamp(min=1e-4)
            t_prev = t - self.k
            a_p, s_p = self._alpha_sigma(t_prev, z0)
            x_prev = a_p * x0_teacher + s_p * eps
            goal = self._consistency(self.target, x_prev, t_prev, cond)
        pred = self._consistency(self.student, x_t, t, cond)
        c = float(self.options["huber_c"])
        return (((pred.float() - goal.float()) ** 2 + c * c).sqrt() - c).mean()

    def train_step(self, examples=None) -> float:
        examples = examples or fetch_batch(
            self.data, 2, int(self.options["batch"]), self.rng, self.teacher.config.window
        )
        loss = self.loss(examples)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        self.optimizer.step()
        self.step += 1
        with torch.no_grad():
            d = float(self.options["ema_decay"])
            for pt, ps in zip(self.target.parameters(), self.student.parameters(), strict=True):
                pt.mul_(d).add_(ps.detach(), alpha=1 - d)
        return float(loss.detach())

    def student_pipeline(self) -> EmoPipeline:
        """The teacher's components with the student Backbone (shares the frozen modules)."""
        parts = dict(self.teacher.modules(), backbone=self.student)
        unguided = self.teacher.config.with_overrides(sampler={"audio_guidance": 1.0})  # distilled in
        pipe = EmoPipeline(unguided, parts)
        pipe.training_steps = self.teacher.training_steps + self.step
        return pipe

    def save(self) -> Path:
        ckpt = self.out / "checkpoint"
        save_checkpoint(self.student_pipeline(), ckpt)
        info = {
            "steps_student": self.steps_student,
            "distill_steps": self.step,
            "scheduler": "lcm",
            "teacher_audio_guidance": float(self.options["audio_guidance"]),
        }
        (self.out / "distill.json").write_text(json.dumps(info, indent=1))
        return ckpt

    def run(self, steps: int | None = None, progress: bool = True) -> dict:
        from tqdm import tqdm

        total = int(steps if steps is not None else self.options["steps"])
        self.out.mkdir(parents=True, exist_ok=True)
        log = self.out / "loss.csv"
        log.write_text("step,loss\n")
        start = time.perf_counter()
        losses = []
        for _ in tqdm(range(total), desc="distill", disable=not progress):
            losses.append(self.train_step())
            with log.open("a") as fh:
                fh.write(f"{self.step},{losses[-1]:.6f}\n")
        seconds = time.perf_counter() - start
        ckpt = self.save()
        plot_loss(log, self.out / "loss.png", f"LCM distillation ({self.steps_student}-step student)")
        self.sample_grid()
        return run_summary(ckpt, self.step, seconds, losses)

    @torch.no_grad()
    def sample_grid(self) -> Path:
        """Truth row, teacher DDIM row, student LCM rows at 1, 2 and 4 steps (CPU)."""
        pipe = self.student_pipeline()
        for module in pipe.modules().values():
            module.to("cpu").eval()
        rows, labels = sample_rows(self.teacher, self.data, 2, self.settings)
        for steps in (1, 2, 4):
            r, lab = sample_rows(pipe, self.data, 2, self.settings, steps=steps, scheduler=SchedulerKind.LCM)
            rows.append(r[1])
            labels.append(lab[1])
        path = self.out / "samples.png"
        save_grid(rows, path, labels)
        for module in pipe.modules().values():
            module.to(self.device)
        self.student.train()
        return path
