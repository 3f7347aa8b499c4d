"""Stage trainer: EMA, checkpoint/resume, bf16 autocast, gradient checkpointing, CPU/CUDA, DDP (torchrun).

Output folder of one stage::

    checkpoint/   EMA weights as an EMO checkpoint (``avatar.emo.checkpoint``; loads in EmoEngine)
    state.pt      raw trainable weights, EMA, optimiser, step, RNG (resume)
    loss.csv      step,loss          loss.png     curve          samples_<step>.png   sample grid

Several processes (``torchrun --nproc_per_node N -m avatar train ...``, or any launcher that sets
RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT, or a process group initialised by the caller): DDP, backend
nccl on CUDA and gloo on the CPU. Each rank draws its own ``batch`` examples (its own seeded data and noise
streams), gradients are averaged over the ranks, so one step sees ``world × batch`` examples; every rank
keeps identical weights, rank 0 writes the files and ``loss.csv`` logs the loss averaged over the ranks.
"""

from __future__ import annotations

import copy
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from avatar.emo.checkpoint import build_pipeline, load_checkpoint, save_checkpoint
from avatar.emo.config import SchedulerKind
from avatar.emo.pipeline import EmoPipeline, make_scheduler
from avatar.errors import ConfigError
from avatar.training.dataset import ClipDataset
from avatar.training.losses import StageLoss, fetch_batch, mark_trainable
from avatar.training.plots import plot_loss, save_grid, to_uint8
from avatar.training.settings import STAGE_NAMES, TrainSettings

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.pt"


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process: the initialised process group's, else RANK / WORLD_SIZE."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    local = int(os.environ.get("LOCAL_RANK", 0))
    return torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")


def load_pipeline(settings: TrainSettings, init: str | Path | None) -> EmoPipeline:
    """From a checkpoint folder (or a stage folder containing ``checkpoint/``), else random (seeded)."""
    if init is None:
        return build_pipeline(settings.model, seed=settings.seed)
    init = Path(init)
    if (init / CHECKPOINT_DIR).is_dir():
        init = init / CHECKPOINT_DIR
    if not init.is_dir():
        raise ConfigError(f"initial checkpoint not found: {init}")
    return load_checkpoint(init, settings.model)


def run_summary(checkpoint: Path, steps: int, seconds: float, losses: list[float]) -> dict:
    """What ``run`` returns (and the commands print as JSON): checkpoint, steps, seconds, first/last loss."""
    return {
        "checkpoint": str(checkpoint),
        "steps": steps,
        "seconds": seconds,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }


class EMA:
    """Exponential moving average of the trainable parameters (decay warms up: min(d, (1+s)/(10+s)))."""

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float) -> None:
        self.decay = decay
        self.shadow = {k: p.detach().float().clone() for k, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, torch.nn.Parameter], step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, p in params.items():
            self.shadow[k].mul_(d).add_(p.detach().float(), alpha=1 - d)

    @torch.no_grad()
    def swap(self, params: dict[str, torch.nn.Parameter]) -> None:
        """Exchange the live weights and the averages (call twice to restore)."""
        for k, p in params.items():
            live = p.detach().clone()
            p.copy_(self.shadow[k].to(p.dtype))
            self.shadow[k] = live.float()


class StageTrainer:
    """Trains one stage of ``settings`` on ``data`` (folder or ClipDataset) into ``out``."""

    def __init__(
        self,
        settings: TrainSettings,
        stage: int,
        data: str | Path | ClipDataset,
        out: str | Path,
        init: str | Path | None = None,
        resume: bool = False,
        device: str | None = None,
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.options = settings.stage(stage)
        self.out = Path(out)
        self.rank, self.world = rank_and_world()
        if self.world > 1 and not torch.distributed.is_initialized():
            wants_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
            torch.distributed.init_process_group("nccl" if wants_cuda else "gloo")
        self.device = pick_device(device)
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormal floats are slow on CPUs (this thread only)
        cfg = settings.model
        self.data = data if isinstance(data, ClipDataset) else ClipDataset(data, cfg.face.crop_size)
        state_path = self.out / STATE_FILE
        if resume and not state_path.is_file():
            raise ConfigError(f"--resume: no {STATE_FILE} in {self.out}")
        self.pipe = load_pipeline(settings, self.out if resume else init)
        self.base_steps = self.pipe.training_steps
        for module in self.pipe.trainable_modules().values():
            module.to(self.device).train()
        if settings.gradient_checkpointing:
            for name in ("backbone", "reference_net"):
                self.pipe.modules()[name].enable_gradient_checkpointing()
        self.params = mark_trainable(self.pipe, stage)
        self.loss_fn = StageLoss(self.pipe, stage, self.options, self.data.fps)
        self.model: torch.nn.Module = self.loss_fn
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # stage 0 uses every autoencoder weight in each step; later stages may leave some out
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.loss_fn, device_ids=ids, find_unused_parameters=stage != 0
            )
        self.optimizer = torch.optim.AdamW(
            list(self.params.values()),
            lr=float(self.options["lr"]),
            weight_decay=float(self.options["weight_decay"]),
        )
        self.ema = EMA(self.params, float(settings.ema_decay))
        self.step = 0
        self.rng = np.random.default_rng(settings.seed * 1000 + stage * 10 + self.rank)
        self.loss_fn.seed(settings.seed * 1000 + stage * 10 + self.rank)
        if resume:
            self._load_state(state_path)

    # --- state ---
    def _load_state(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["stage"] != self.stage:
            raise ConfigError(f"--resume: {self.out} holds stage {state['stage']}, not stage {self.stage}")
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(state["trainable"][k])
        self.ema.shadow = {k: v.float() for k, v in state["ema"].items()}
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.base_steps = int(state["base_steps"])
        self.rng.bit_generator.state = state["rng"]
        self.loss_fn.generator.set_state(state["torch_rng"])

    def save(self) -> Path:
        """Write ``checkpoint/`` (EMA weights) and ``state.pt``; rank 0 only. Returns the checkpoint path."""
        ckpt = self.out / CHECKPOINT_DIR
        if self.rank != 0:
            return ckpt
        self.out.mkdir(parents=True, exist_ok=True)
        state = {
            "stage": self.stage,
            "step": self.step,
            "base_steps": self.base_steps,
            "trainable": {k: p.detach().cpu() for k, p in self.params.items()},
            "ema": self.ema.shadow,
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "torch_rng": self.loss_fn.generator.get_state(),
        }
        torch.save(state, self.out / STATE_FILE)
        self.ema.swap(self.params)
        try:
            save_checkpoint(self.pipe, ckpt, training_steps=self.base_steps + self.step)
        finally:
            self.ema.swap(self.params)
        return ckpt

    # --- loop ---
    def _batch(self):
        batch = fetch_batch(
            self.data, self.stage, int(self.options["batch"]), self.rng, self.settings.model.window
        )
        if self.stage == 0:
            return batch.to(self.device)
        if self.stage == 1:
            return tuple(x.to(self.device) for x in batch)
        return batch

    def train_step(self, batch=None) -> float:
        """One optimiser step (``batch``: a fixed batch, else a fresh sample). Returns the loss."""
        batch = self._batch() if batch is None else batch
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if self.settings.mixed_precision == "bf16"
            else nullcontext()
        )
        with autocast:
            loss = self.model(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.settings.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.ema.update(self.params, self.step)
        loss = loss.detach()
        if self.world > 1:  # the logged loss: the mean over every rank's examples
            loss = loss.clone()
            torch.distributed.all_reduce(loss)
            loss /= self.world
        return float(loss)

    def run(self, steps: int | None = None, progress: bool = True) -> dict:
        """Train until ``steps`` total stage steps (default: the stage's ``steps``); saves at the end."""
        total = int(steps if steps is not None else self.options["steps"])
        s = self.settings
        log = self.out / "loss.csv"
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            if not log.is_file() or self.step == 0:
                log.write_text("step,loss\n")
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            initial=self.step,
            desc=f"stage {self.stage} {STAGE_NAMES[self.stage]}",
            disable=not progress or self.rank != 0,
        )
        start = time.perf_counter()
        losses = []
        while self.step < total:
            loss = self.train_step()
            losses.append(loss)
            bar.update(1)
            if self.rank == 0:
                with log.open("a") as fh:
                    fh.write(f"{self.step},{loss:.6f}\n")
                if self.step % s.log_every == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-s.log_every :]):.4f}")
                if self.step % s.save_every == 0 and self.step < total:
                    self.save()
                if self.step % s.sample_every == 0:
                    self.sample_grid()
        bar.close()
        seconds = time.perf_counter() - start
        ckpt = self.save()
        if self.rank == 0:
            plot_loss(log, self.out / "loss.png", f"stage {self.stage} ({STAGE_NAMES[self.stage]})")
            self.sample_grid()
        return run_summary(ckpt, self.step, seconds, losses)

    # --- samples ---
    @torch.no_grad()
    def sample_grid(self) -> Path:
        """PNG: stage 0 originals vs reconstructions; later stages reference | truth row / sampled row."""
        self.ema.swap(self.params)
        for module in self.pipe.trainable_modules().values():
            module.to("cpu").eval()
        try:
            path = self.out / f"samples_{self.step:06d}.png"
            rows, labels = sample_rows(self.pipe, self.data, self.stage, self.settings)
            save_grid(rows, path, labels)
            return path
        finally:
            for module in self.pipe.trainable_modules().values():
                module.to(self.device).train()
            self.ema.swap(self.params)


def sample_rows(
    pipe: EmoPipeline,
    data: ClipDataset,
    stage: int,
    settings: TrainSettings,
    steps: int | None = None,
    scheduler: SchedulerKind = SchedulerKind.DDIM,
) -> tuple[list, list[str]]:
    """Rows of uint8 images for a sample grid (fixed example, seeded), and their labels."""
    rng = np.random.default_rng(1234)
    if stage == 0:
        images = data.sample_frames(rng, 6)
        rec = pipe.autoencoder(images)
        return [list(to_uint8(images)), list(to_uint8(rec))], ["input", "decoded"]
    w = pipe.config.window
    n, m = (w.motion_frames if stage >= 2 else 0), w.audio_context
    ex = data.sample_window(rng, w.motion_frames, w.frames, m)
    ref = to_uint8(ex.reference[None])[0]
    reference = pipe.encode_reference(ref, ex.mask[0].numpy())
    tokens = pipe.audio_tokens(ex.audio.numpy(), 0, ex.first, ex.target.shape[0], data.fps)
    motion = pipe.codec.encode(ex.motion) if n else None
    old = pipe.scheduler
    pipe.scheduler = make_scheduler(pipe.config.sampler, scheduler)
    try:
        out = pipe(
            reference,
            tokens,
            list(range(ex.first, ex.first + ex.target.shape[0])),
            motion,
            ex.velocity if stage >= 3 else None,
            seed=0,
            num_inference_steps=steps or settings.sample_steps,
        )
    finally:
        pipe.scheduler = old
    truth = to_uint8(ex.target)
    label = f"{scheduler} {steps or settings.sample_steps}"
    guidance = pipe.config.sampler.audio_guidance
    label += f" w{guidance:g}" if guidance != 1.0 else ""
    return [[ref, *truth], [ref, *out.images]], ["truth", label]


def copy_pipeline(pipe: EmoPipeline) -> EmoPipeline:
    """Deep copy (separate weights) of a pipeline."""
    return EmoPipeline(pipe.config, {k: copy.deepcopy(v) for k, v in pipe.modules().items()})
