"""EMO GPU path: fps of the ``base512`` config at 512² with ≤ 4 sampling steps, and first-frame latency.

    .venv/bin/python benchmarks/emo_gpu.py                           # CUDA if present, else toy size on CPU
    .venv/bin/python benchmarks/emo_gpu.py --steps 2 --compile       # torch.compile (inductor) the Backbone
    .venv/bin/python benchmarks/emo_gpu.py --compile --cuda-graphs   # + CUDA graphs (mode reduce-overhead)
    .venv/bin/python benchmarks/emo_gpu.py --device cpu --json out.json

What runs: the EMO sampler (``EmoPipeline``) on random weights (speed only; the weights do not change the
work), one portrait's reference state encoded once and cached (ReferenceNet bank, projected once into each
Backbone layer's keys and values: ``EmoPipeline.project_reference``), then windows of ``window.frames``
frames in a row, each with the previous window's last latents as motion frames: audio features → motion
frames through ReferenceNet → ``--steps`` LCM steps of the Backbone → decoder → uint8 frames on the host.
On CUDA: bf16 autocast (``--dtype``), PyTorch SDPA attention (the attention processors call
``F.scaled_dot_product_attention``; flash / memory-efficient kernels where the GPU has them), stages timed
with ``torch.cuda.synchronize`` (``avatar.stopwatch.Stopwatch``).

Reported: ``fps`` = frames per second of steady-state windows (after ``--warmup`` windows); first-frame
latency = compute time of a new session's first window (its frames come out together), cold (the very first
window in the process: kernel selection, compilation, graph capture) and warm (a new session later); the
streaming first frame also waits for the window's audio (frames + look-ahead), printed beside it.

Without CUDA (or with ``--device cpu``) the config's ``toy:`` overrides are applied (64² region, tiny
channels, same layout) and the output says so: those numbers are not GPU numbers and not 512².
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.emo.checkpoint import build_pipeline  # noqa: E402
from avatar.emo.config import EmoConfig, SchedulerKind, load_emo_config  # noqa: E402
from avatar.emo.pipeline import EmoPipeline, ReferenceState  # noqa: E402
from avatar.emo.testing import drawn_face, speech_like  # noqa: E402
from avatar.stopwatch import Stopwatch  # noqa: E402

MAX_STEPS = 4
FPS = 25.0
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="base512", help="EMO model config (name in configs/emo or yaml)")
    ap.add_argument("--device", default="auto", help="auto (cuda when present, else cpu), cuda, cuda:N, cpu")
    ap.add_argument("--toy", action=argparse.BooleanOptionalAction, default=None,
                    help="apply the config's toy: overrides (default: on the CPU only)")
    ap.add_argument("--steps", type=int, default=MAX_STEPS, help=f"LCM steps per window, 1..{MAX_STEPS}")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                    help="autocast dtype (default: bf16 on CUDA, fp32 on the CPU)")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile (inductor, mode default) the Backbone and ReferenceNet")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="with --compile: mode reduce-overhead (CUDA graphs of the compiled graphs)")
    ap.add_argument("--windows", type=int, default=6, help="timed steady-state windows")
    ap.add_argument("--warmup", type=int, default=2, help="untimed windows after the cold one")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all usable)")
    ap.add_argument("--json", help="write the results here as JSON")
    args = ap.parse_args(argv)
    if not 1 <= args.steps <= MAX_STEPS:
        ap.error(f"--steps must be 1..{MAX_STEPS} (the few-step student's range)")
    if args.cuda_graphs and not args.compile:
        ap.error("--cuda-graphs needs --compile (CUDA graphs come from torch.compile's reduce-overhead mode)")
    return args


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    return device


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cores = len(os.sched_getaffinity(0))
    return (f"CPU {platform.machine()} {platform.processor() or ''}".strip()
            + f", {os.cpu_count()} cores ({cores} usable), torch {torch.__version__}, "
            + f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")


class WindowRunner:
    """Runs windows of one session: motion frames carried over, noise seeded per frame (as EmoSession)."""

    def __init__(self, pipe: EmoPipeline, reference: ReferenceState, audio: np.ndarray, steps: int,
                 autocast, watch: Stopwatch) -> None:
        self.pipe, self.reference, self.audio, self.steps = pipe, reference, audio, steps
        self.autocast, self.watch = autocast, watch
        self.frames = pipe.config.window.frames
        self.n_motion = pipe.config.window.motion_frames
        self.next_frame = 0
        self.last: torch.Tensor | None = None

    def window(self) -> np.ndarray:
        """One window's uint8 frames (frames, S, S, 3); stages charged to ``watch``."""
        first, f = self.next_frame, self.frames
        self.watch.restart()
        with self.autocast():
            tokens = self.pipe.audio_tokens(self.audio, 0, first, f, FPS)
            self.watch.lap("audio")
            motion = self.last
            if motion is None and self.n_motion:
                motion = self.reference.latent.expand(self.n_motion, -1, -1, -1)
            out = self.pipe(self.reference, tokens, list(range(first, first + f)), motion, seed=0,
                            num_inference_steps=self.steps, stopwatch=self.watch)
        self.last = out.latents[-self.n_motion:] if self.n_motion else None
        self.next_frame += f
        return out.images


def prepare(args: argparse.Namespace) -> tuple[EmoConfig, EmoPipeline, torch.device, torch.dtype | None]:
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    toy = device.type == "cpu" if args.toy is None else args.toy
    cfg = load_emo_config(args.config, toy=toy)
    cfg = cfg.with_overrides(sampler={"scheduler": str(SchedulerKind.LCM), "steps": args.steps})
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    pipe = build_pipeline(cfg, seed=0).to(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if args.compile:
        mode = "reduce-overhead" if args.cuda_graphs else "default"
        pipe.backbone = torch.compile(pipe.backbone, mode=mode, dynamic=False)
        pipe.reference_net = torch.compile(pipe.reference_net, mode=mode, dynamic=False)
    return cfg, pipe, device, dtype


def run(args: argparse.Namespace) -> dict:
    cfg, pipe, device, dtype = prepare(args)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    watch = Stopwatch(sync=sync)

    def autocast():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    crop = cfg.face.crop_size
    image, mask = drawn_face(crop)
    frames, m = cfg.window.frames, cfg.window.audio_context
    total_windows = 2 + args.warmup + args.windows
    audio = speech_like(total_windows * frames / FPS + 1.0)

    watch.restart()
    with autocast():
        reference = pipe.project_reference(pipe.encode_reference(image, mask))
    reference_ms = watch.lap("reference (once per portrait)")

    total = Stopwatch(sync=sync)  # whole windows; the runners' stopwatches hold their stages
    cold = WindowRunner(pipe, reference, audio, args.steps, autocast, Stopwatch(sync=sync))
    total.restart()
    first = cold.window()
    cold_ms = total.lap("first window, cold")
    assert first.shape == (frames, crop, crop, 3), first.shape
    for _ in range(args.warmup):
        cold.window()

    warm = WindowRunner(pipe, reference, audio, args.steps, autocast, Stopwatch(sync=sync))
    total.restart()
    warm.window()
    warm_first_ms = total.lap("first window, warm")

    stages = Stopwatch(sync=sync)
    per_window = []
    cpu_start = time.process_time()
    for _ in range(args.windows):
        cold.watch = Stopwatch(sync=sync)
        total.restart()
        cold.window()
        per_window.append(total.lap("window"))
        stages.merge(cold.watch)
    cpu_ms = (time.process_time() - cpu_start) * 1000.0 / args.windows
    median = statistics.median(per_window)
    stage_ms = {k: round(v / args.windows, 2) for k, v in stages.totals().items()}
    buffering_ms = 1000.0 * (frames + m) / FPS
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": str(device),
        "machine": machine(device),
        "gpu_numbers": device.type == "cuda",
        "config": cfg.name,
        "toy": cfg.name.endswith("-toy"),
        "region": f"{crop}x{crop}",
        "latent": f"{cfg.latent_size}x{cfg.latent_size}x{cfg.latent_channels}",
        "unet": list(cfg.unet.block_out_channels),
        "window_frames": frames,
        "motion_frames": cfg.window.motion_frames,
        "steps": args.steps,
        "scheduler": "lcm",
        "dtype": args.dtype or ("bf16" if device.type == "cuda" else "fp32"),
        "compile": args.compile,
        "cuda_graphs": args.cuda_graphs,
        "reference_ms": round(reference_ms, 1),
        "window_ms_median": round(median, 1),
        "window_ms_min": round(min(per_window), 1),
        "window_cpu_ms_mean": round(cpu_ms, 1),
        "fps": round(frames * 1000.0 / median, 2),
        "first_window_cold_ms": round(cold_ms, 1),
        "first_window_warm_ms": round(warm_first_ms, 1),
        "audio_buffering_ms": round(buffering_ms, 1),
        "first_frame_latency_warm_ms": round(buffering_ms + warm_first_ms, 1),
        "stage_ms_per_window": stage_ms,
        "unet_ms_per_step": round(stages.totals().get("unet", 0.0) / (args.windows * args.steps), 2),
        "peak_gpu_memory_gib": None if peak is None else round(peak, 2),
        "windows_timed": args.windows,
    }


def report(r: dict) -> str:
    where = (f"on {r['machine']}" if r["gpu_numbers"] else
             f"on the CPU ({r['machine']}); NO CUDA DEVICE: toy-size shapes, not GPU numbers, not 512²")
    lines = [
        f"EMO GPU path, config {r['config']} {'(toy overrides) ' if r['toy'] else ''}{where}",
        f"region {r['region']}, latent {r['latent']}, UNet {r['unet']}, window {r['window_frames']} frames "
        f"+ {r['motion_frames']} motion frames, {r['steps']} LCM steps, {r['dtype']}, "
        f"compile {r['compile']}, CUDA graphs {r['cuda_graphs']}, {r['windows_timed']} timed windows",
        f"reference (encode + project, once per portrait): {r['reference_ms']} ms",
        f"window: median {r['window_ms_median']} ms, min {r['window_ms_min']} ms → {r['fps']} fps "
        f"(process CPU time {r['window_cpu_ms_mean']} ms per window)",
    ]
    lines += [f"  {k:16s} {v:9.2f} ms/window" for k, v in r["stage_ms_per_window"].items()]
    lines += [
        f"  unet per step    {r['unet_ms_per_step']:9.2f} ms",
        f"first window: cold {r['first_window_cold_ms']} ms (first in the process), "
        f"warm {r['first_window_warm_ms']} ms (new session)",
        f"first-frame latency (warm) ≈ audio buffering {r['audio_buffering_ms']} ms + compute "
        f"{r['first_window_warm_ms']} ms = {r['first_frame_latency_warm_ms']} ms",
    ]
    if r["peak_gpu_memory_gib"] is not None:
        lines.append(f"peak GPU memory {r['peak_gpu_memory_gib']} GiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
