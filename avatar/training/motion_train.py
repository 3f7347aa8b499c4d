"""Training the motion sampler: the v-prediction teacher (``train-motion``) and its few-step consistency
student (``distill-motion``), seeded and resumable, on the clips ``prepare-motion`` wrote.

A run folder holds ``checkpoint.pt`` (model, EMA, optimiser, step, RNG state: a stopped run continues
from it), ``log.jsonl`` (loss and validation every ``eval_every`` steps) and ``model/`` (the numpy
weights ``MotionDenoiser.from_pretrained`` reads, float16, with the motion basis).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from avatar.errors import ConfigError
from avatar.motion.network import MotionDenoiser, MotionNetConfig, MotionNets
from avatar.motion.representation import SLICES, MotionBasis, MotionPart
from avatar.motion.sampler import SamplerKind, SamplerSettings, sample_clips
from avatar.motion.voice_normaliser import VoiceNormalisation
from avatar.training.motion_data import (
    Augment,
    MotionClip,
    MotionSamples,
    build_clips,
    fit_basis,
    loss_weights,
    read_prepared,
    voice_prior,
)
from avatar.training.motion_model import MotionDenoiserModule, schedule

CHECKPOINT = "checkpoint.pt"


@dataclass
class MotionTrainSettings:
    """Options of a teacher or distillation run (``--set KEY=VALUE`` overrides them)."""

    steps: int = 6000
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    ema: float = 0.995
    seed: int = 0
    eval_every: int = 1000
    eval_seconds: float = 12.0
    # distillation
    teacher_steps: int = 16
    guidance: float = 2.0
    mouth_temperature: float = 0.3
    head_temperature: float = 1.0
    noise_draws: int = 2
    time_power: float = 1.0
    """Diffusion times are drawn as u ** (1 / time_power): above 1 more of them are noisy ones, where
    the audio decides the motion."""
    """Diffusion times and noises drawn per training example (the audio encoder runs once for all)."""
    target_ema: float = 0.95
    student_steps: int = 2
    distill_parts: str = "head"
    """Parts distilled (comma-separated); the others ship the teacher's weights. The mouth samples near its
    mean (``mouth_temperature``), which the teacher's own one-step prediction gives best: distilled from the
    guided sampler it followed held-out voices less (mouth r 0.41-0.44 against 0.47)."""
    voice_normalise: bool = False
    """Take each voice's running mean spectrum out of the audio input (``voice_normaliser``). Off for the
    shipped model: on the validation speakers it did not follow the mouth better (docs/motion.md)."""
    voice_prior_hops: float = 100.0
    voice_memory_s: float = 15.0
    augment: Augment = field(default_factory=Augment)

    def sampler(self, kind: SamplerKind, steps: int) -> SamplerSettings:
        """The sampler validation uses and the exported model names (guidance only for ``ddim``)."""
        guidance = self.guidance if kind == SamplerKind.DDIM else 1.0
        return SamplerSettings(
            kind=kind,
            steps=steps,
            guidance=guidance,
            mouth_temperature=self.mouth_temperature,
            head_temperature=self.head_temperature,
        )

    def override(self, pairs: list[str]) -> None:
        for pair in pairs:
            key, _, value = pair.partition("=")
            target = self.augment if hasattr(self.augment, key) else self
            if not key or not hasattr(target, key) or key == "augment":
                raise ConfigError(f"unknown training option {key!r}")
            current = getattr(target, key)
            if isinstance(current, str):
                setattr(target, key, value)
                continue
            try:
                setattr(
                    target, key, type(current)(float(value)) if not isinstance(current, tuple) else current
                )
            except ValueError:
                raise ConfigError(f"training option {key} needs a number, got {value!r}") from None


@dataclass
class MotionData:
    basis: MotionBasis
    train: MotionSamples
    val: list[MotionClip]
    voice: VoiceNormalisation | None = None


def load_data(
    prepared: str | Path,
    context_frames: int,
    basis: MotionBasis | None = None,
    voice: VoiceNormalisation | MotionTrainSettings | None = None,
) -> MotionData:
    """Fit the basis on ``train`` (unless given) and build the training samples and validation clips.

    ``voice``: the voice normalisation to train with (a teacher's), or settings to fit its prior on
    ``train`` (when ``voice_normalise`` is on), or None for plain log-mel."""
    train_items = read_prepared(prepared, ("train",))
    basis = fit_basis(train_items) if basis is None else basis
    train_clips = build_clips(train_items, basis)
    if basis.scale.max() == 1.0 and basis.center.max() == 0.0:
        basis.fit_normalisation(np.concatenate([c.vectors[c.valid] for c in train_clips]))
    if isinstance(voice, MotionTrainSettings):
        voice = (
            VoiceNormalisation(voice_prior(train_clips), voice.voice_prior_hops, voice.voice_memory_s)
            if voice.voice_normalise
            else None
        )
    try:
        val_clips = build_clips(read_prepared(prepared, ("val",)), basis)
    except ConfigError:
        val_clips = []
    return MotionData(basis, MotionSamples(train_clips, basis, context_frames, voice), val_clips, voice)


def _voice_state(voice: VoiceNormalisation | None) -> dict:
    """The voice normalisation as checkpoint entries (restored by ``_voice_from_state``)."""
    return {"voice": None if voice is None else {"prior": voice.prior, **voice.to_config()}}


def _voice_from_state(state: dict) -> VoiceNormalisation | None:
    entry = state.get("voice")
    return None if entry is None else VoiceNormalisation.from_config(entry, entry["prior"])


def _to_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


PARTS = (MotionPart.MOUTH, MotionPart.HEAD)


def new_models(configs: dict[str, MotionNetConfig]) -> torch.nn.ModuleDict:
    return torch.nn.ModuleDict({part: MotionDenoiserModule(c) for part, c in configs.items()})


def numpy_nets(
    models: torch.nn.ModuleDict, basis: MotionBasis, voice: VoiceNormalisation | None = None
) -> MotionNets:
    nets = [MotionDenoiser(m.config, m.numpy_params()) for m in models.values()]
    return MotionNets(nets, fill=basis.normalise(basis.rest_vector()[None])[0], voice=voice)


def export(
    folder: Path,
    models: torch.nn.ModuleDict,
    basis: MotionBasis,
    sampler: SamplerSettings,
    extra: dict | None = None,
    voice: VoiceNormalisation | None = None,
) -> None:
    """Write the numpy model folder (config.json + float16 weights + basis + voice prior)."""
    MotionNets.save_pretrained(
        folder,
        [m.config for m in models.values()],
        [m.numpy_params() for m in models.values()],
        {**basis.arrays(), **({"voice.prior": voice.prior} if voice else {})},
        {
            **({"voice": voice.to_config()} if voice else {}),
            "sampler": {
                "kind": sampler.kind.value,
                "steps": sampler.steps,
                "guidance": sampler.guidance,
                "mouth_temperature": sampler.mouth_temperature,
                "head_temperature": sampler.head_temperature,
            },
            "training": extra or {},
        },
    )


def _part_batch(b: dict[str, torch.Tensor], config: MotionNetConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(target (B, D), motion frames (B, n, D)) of one part."""
    dims = torch.from_numpy(config.dims)
    return b["target"][:, dims], b["context"][:, :, dims]


def validate(
    models: torch.nn.ModuleDict, data: MotionData, sampler: SamplerSettings, seconds: float, seed: int = 0
) -> dict[str, float]:
    """Autoregressive sampling of the validation clips (first ``seconds``), compared with the real
    motion: mouth-opening r at the best lag within +-3 frames (120 ms), head std ratio, blinks/min."""
    if not data.val:
        return {}
    net = numpy_nets(models, data.basis, data.voice)
    frames = [min(c.frames, int(seconds * 25)) for c in data.val]
    start = data.basis.normalise(data.basis.rest_vector()[None])[0]
    outs = sample_clips(net, [c.mel_power for c in data.val], frames, start, sampler, seed=seed)
    rs, ratios, blinks_gen, blinks_real, minutes = [], [], 0, 0, 0.0
    for clip, out, count in zip(data.val, outs, frames, strict=True):
        raw = data.basis.denormalise(out)
        valid = clip.valid[:count]
        real_open = data.basis.mouth_opening(clip.vectors[:count])
        gen_open = data.basis.mouth_opening(raw)
        rs.append(best_lag_r(gen_open, real_open, valid, 3))
        real_head = clip.vectors[:count][valid][:, SLICES.head][:, :3].std(axis=0)
        gen_head = raw[valid][:, SLICES.head][:, :3].std(axis=0)
        ratios.append(float(np.mean(gen_head / np.maximum(real_head, 1e-4))))
        blinks_gen += count_blinks(raw[:, SLICES.blink])
        blinks_real += count_blinks(clip.vectors[:count][:, SLICES.blink] * valid)
        minutes += count / 25 / 60
    return {
        "val_mouth_r": float(np.mean(rs)),
        "val_mouth_r_min": float(np.min(rs)),
        "val_head_ratio": float(np.mean(ratios)),
        "val_blinks_per_min": blinks_gen / minutes,
        "val_real_blinks_per_min": blinks_real / minutes,
    }


def best_lag_r(a: np.ndarray, b: np.ndarray, valid: np.ndarray, max_lag: int) -> float:
    """Pearson r of a[t + lag] with b[t] over valid frames, best over |lag| <= max_lag."""
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x = a[max(lag, 0) : len(a) + min(lag, 0)]
        y = b[max(-lag, 0) : len(b) + min(-lag, 0)]
        ok = valid[max(-lag, 0) : len(b) + min(-lag, 0)]
        if ok.sum() > 10 and x[ok].std() > 0 and y[ok].std() > 0:
            best = max(best, float(np.corrcoef(x[ok], y[ok])[0, 1]))
    return best


def count_blinks(blink: np.ndarray, threshold: float = 0.5) -> int:
    """Rising crossings of ``threshold``."""
    above = blink > threshold
    return int((above[1:] & ~above[:-1]).sum())


class _Run:
    """Checkpointing and logging of one run folder."""

    def __init__(self, folder: str | Path, settings: MotionTrainSettings) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.log_path = self.folder / "log.jsonl"

    def log(self, record: dict) -> None:
        with self.log_path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)

    def save(
        self,
        models: torch.nn.Module,
        ema: torch.nn.Module,
        opt: torch.optim.Optimizer,
        rng: np.random.Generator,
        step: int,
        configs: dict[str, MotionNetConfig],
        basis: MotionBasis,
        extra: dict,
    ) -> None:
        """Write ``checkpoint.pt`` atomically: everything a stopped run needs to continue."""
        state = {
            "model": models.state_dict(),
            "ema": ema.state_dict(),
            "opt": opt.state_dict(),
            "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "step": step,
            "configs": {p: asdict(c) for p, c in configs.items()},
            "basis": basis.arrays(),
            "settings": _settings_dict(self.settings),
            **extra,
        }
        tmp = self.folder / (CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.folder / CHECKPOINT)

    @staticmethod
    def restore(
        state: dict | None,
        models: torch.nn.Module,
        ema: torch.nn.Module,
        opt: torch.optim.Optimizer,
        rng: np.random.Generator,
    ) -> int:
        """Load a checkpoint's weights, optimiser and RNG states into a run; returns its step (0 if none)."""
        if not state:
            return 0
        models.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        return int(state["step"])

    def load(self) -> dict | None:
        path = self.folder / CHECKPOINT
        return torch.load(path, weights_only=False) if path.is_file() else None


def _optimise(
    opt: torch.optim.Optimizer,
    loss: torch.Tensor,
    online: torch.nn.Module,
    average: torch.nn.Module,
    decay: float,
) -> None:
    """One clipped optimiser step on ``online``'s trainable weights, then ``average`` (EMA) follows it."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in online.parameters() if p.requires_grad], 1.0)
    opt.step()
    with torch.no_grad():
        for p_avg, p in zip(average.parameters(), online.parameters(), strict=True):
            p_avg.lerp_(p, 1.0 - decay)


def train_teacher(
    prepared: str | Path,
    out: str | Path,
    settings: MotionTrainSettings,
    configs: dict[str, MotionNetConfig] | None = None,
) -> dict:
    """Train (or continue) the v-prediction teachers of both parts, with audio dropout (for guidance);
    returns the last validation."""
    torch.set_num_threads(1)
    run = _Run(out, settings)
    state = run.load()
    if state:
        configs = {part: MotionNetConfig.from_dict(c) for part, c in state["configs"].items()}
    configs = configs or {part.value: MotionNetConfig(part=part.value) for part in PARTS}
    basis = MotionBasis.from_arrays(state["basis"]) if state else None
    voice = _voice_from_state(state) if state else settings
    data = load_data(prepared, max(c.context_frames for c in configs.values()), basis, voice)
    torch.manual_seed(settings.seed)
    models = new_models(configs)
    rng = np.random.default_rng(settings.seed)
    mel = data.train.batch(np.random.default_rng(settings.seed + 7), 4096, None)["mel"]
    for model in models.values():  # a fixed per-band standardisation of the input
        model.set_mel_statistics(mel.mean(axis=(0, 1)), mel.std(axis=(0, 1)))
    ema = copy.deepcopy(models)
    opt = torch.optim.AdamW(models.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    step = _Run.restore(state, models, ema, opt, rng)
    weights = torch.from_numpy(loss_weights())
    sampler = settings.sampler(SamplerKind.DDIM, settings.teacher_steps)
    metrics: dict = {}
    started = time.time()
    while step < settings.steps:
        lr = settings.lr * min(1.0, (step + 1) / 200) * 0.5 * (1 + np.cos(np.pi * step / settings.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        b = _to_torch(data.train.batch(rng, settings.batch, settings.augment))
        loss = torch.zeros(())
        k = settings.noise_draws
        for model in models.values():
            target, context = _part_batch(b, model.config)
            target = target.repeat(k, 1)
            t = torch.rand(len(target)) ** (1.0 / settings.time_power)
            noise = torch.randn_like(target)
            alpha, sigma = schedule(t)
            x_t = alpha[:, None] * target + sigma[:, None] * noise
            v_target = alpha[:, None] * noise - sigma[:, None] * target
            cond = model.condition(b["mel"], context, b["audio_keep"]).repeat(k, 1)
            part_weights = weights[torch.from_numpy(model.config.dims)]
            loss = loss + (((model.velocity(x_t, t, cond) - v_target) ** 2) * part_weights).mean()
        _optimise(opt, loss, models, ema, settings.ema)
        step += 1
        if step % settings.eval_every == 0 or step == settings.steps:
            metrics = {
                "step": step,
                "loss": float(loss.detach()),
                "lr": float(lr),
                "minutes": (time.time() - started) / 60,
            }
            metrics.update(validate(ema, data, sampler, settings.eval_seconds, settings.seed))
            run.log(metrics)
            kind = {"kind": "teacher", **_voice_state(data.voice)}
            run.save(models, ema, opt, rng, step, configs, data.basis, kind)
            export(
                run.folder / "model", ema, data.basis, sampler, {"stage": "teacher", "step": step}, data.voice
            )
    return metrics


def _settings_dict(settings: MotionTrainSettings) -> dict:
    out = asdict(settings)
    out["augment"] = asdict(settings.augment)
    return out


def distill(
    prepared: str | Path, teacher: str | Path, out: str | Path, settings: MotionTrainSettings
) -> dict:
    """Consistency distillation of the teacher (``teacher`` run folder) into few-step students, per part.

    Per batch and part: a teacher grid time ``t_{n+1}``, ``x`` noised from real motion, one DDIM teacher
    step to ``t_n`` (audio-guided with ``guidance`` for the mouth, plain for the head); the student's x0
    at ``t_{n+1}`` must match the target network's (EMA) x0 at ``t_n`` (at ``t_0 = 0``: the point itself).
    """
    torch.set_num_threads(1)
    teacher_state = _Run(teacher, settings).load()
    if teacher_state is None or teacher_state.get("kind") != "teacher":
        raise ConfigError(f"no teacher checkpoint in {teacher} (train one with train-motion)")
    configs = {part: MotionNetConfig.from_dict(c) for part, c in teacher_state["configs"].items()}
    basis = MotionBasis.from_arrays(teacher_state["basis"])
    run = _Run(out, settings)
    state = run.load()
    voice = _voice_from_state(teacher_state)
    data = load_data(prepared, max(c.context_frames for c in configs.values()), basis, voice)
    teachers = new_models(configs)
    teachers.load_state_dict(teacher_state["ema"])
    teachers.requires_grad_(False).eval()
    students = new_models(configs)
    students.load_state_dict(teacher_state["ema"])
    targets = copy.deepcopy(students).requires_grad_(False).eval()
    distilled = [p for p in settings.distill_parts.split(",") if p]
    unknown = set(distilled) - set(configs)
    if unknown or not distilled:
        raise ConfigError(
            f"distill_parts must name parts of {', '.join(configs)}, got {settings.distill_parts!r}"
        )
    for part, student in students.items():
        student.requires_grad_(part in distilled)
        if part not in distilled:
            student.eval()
    opt = torch.optim.AdamW(
        [p for p in students.parameters() if p.requires_grad], lr=settings.lr, weight_decay=0.0
    )
    rng = np.random.default_rng(settings.seed + 1)
    torch.manual_seed(settings.seed + 1)
    step = _Run.restore(state, students, targets, opt, rng)
    weights = torch.from_numpy(loss_weights())
    grid = torch.linspace(0.0, 1.0, settings.teacher_steps + 1)
    guidance = {MotionPart.MOUTH.value: settings.guidance, MotionPart.HEAD.value: 1.0}
    sampler = settings.sampler(SamplerKind.CONSISTENCY, settings.student_steps)
    metrics: dict = {}
    started = time.time()
    distill_aug = copy.deepcopy(settings.augment)
    distill_aug.audio_drop = 0.0
    while step < settings.steps:
        for group in opt.param_groups:
            group["lr"] = settings.lr * min(1.0, (step + 1) / 100)
        b = _to_torch(data.train.batch(rng, settings.batch, distill_aug))
        loss = torch.zeros(())
        for part in distilled:
            student, teacher_net, target = students[part], teachers[part], targets[part]
            clean, context = _part_batch(b, student.config)
            n = torch.randint(0, settings.teacher_steps, (settings.batch,))
            t_hi, t_lo = grid[n + 1], grid[n]
            alpha, sigma = schedule(t_hi)
            x = alpha[:, None] * clean + sigma[:, None] * torch.randn_like(clean)
            with torch.no_grad():
                v = teacher_net.velocity(x, t_hi, teacher_net.condition(b["mel"], context))
                if guidance[part] != 1.0:
                    zeros = torch.zeros(settings.batch)
                    v_null = teacher_net.velocity(x, t_hi, teacher_net.condition(b["mel"], context, zeros))
                    v = v_null + guidance[part] * (v - v_null)
                x0 = alpha[:, None] * x - sigma[:, None] * v
                eps = sigma[:, None] * x + alpha[:, None] * v
                a_lo, s_lo = schedule(t_lo)
                x_lo = a_lo[:, None] * x0 + s_lo[:, None] * eps
                goal = target.x0(x_lo, t_lo, target.condition(b["mel"], context))
            pred = student.x0(x, t_hi, student.condition(b["mel"], context))
            part_weights = weights[torch.from_numpy(student.config.dims)]
            loss = loss + (((pred - goal) ** 2) * part_weights).mean()
        _optimise(opt, loss, students, targets, settings.target_ema)
        step += 1
        if step % settings.eval_every == 0 or step == settings.steps:
            metrics = {"step": step, "loss": float(loss.detach()), "minutes": (time.time() - started) / 60}
            metrics.update(validate(students, data, sampler, settings.eval_seconds, settings.seed))
            run.log(metrics)
            run.save(
                students,
                targets,
                opt,
                rng,
                step,
                configs,
                basis,
                {"kind": "student", "guidance": settings.guidance, **_voice_state(voice)},
            )
            export(
                run.folder / "model",
                students,
                basis,
                sampler,
                {
                    "stage": "student",
                    "step": step,
                    "teacher_guidance": settings.guidance,
                    "distilled_parts": distilled,
                    "teacher_step": teacher_state["step"],
                },
                voice,
            )
    return metrics
