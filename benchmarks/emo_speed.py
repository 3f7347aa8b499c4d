"""EMO engine speed on this machine: ms per component and per window (random weights; speed only).

.venv/bin/python benchmarks/emo_speed.py                         # tiny config, 2 threads
.venv/bin/python benchmarks/emo_speed.py --threads 1 --windows 8
.venv/bin/python benchmarks/emo_speed.py --config base512 --toy  # SD1.5 layout, toy channels
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.emo.engine import EmoEngine  # noqa: E402
from avatar.emo.testing import speech_like  # noqa: E402
from avatar.engine import AudioWindow  # noqa: E402
from avatar.stopwatch import Stopwatch  # noqa: E402

ASTRONAUT = ROOT / "avatar" / "assets" / "astronaut.png"
COMPONENTS = ("audio", "motion_frames", "prepare", "unet", "decode", "composite")
"""Stages of ``EmoSession.stage_timings()`` (plus head_motion with face.composite: parametric)."""


def window_at(audio: np.ndarray, first: int, frames: int, fps: float, context: int) -> AudioWindow:
    spf = 16000 / fps
    start = round((first - context) * spf)
    stop = round((first + frames + context) * spf)
    samples = np.zeros(stop - start, np.float32)
    lo, hi = max(start, 0), min(stop, len(audio))
    if hi > lo:
        samples[lo - start : hi - start] = audio[lo:hi]
    return AudioWindow(samples, start, first, frames, fps, first, speech=1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--toy", action="store_true", help="apply the config's toy: overrides (small channels)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows", type=int, default=6, help="timed windows (after one warm-up window)")
    ap.add_argument("--size", type=int, default=512, help="output portrait size")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    engine = EmoEngine(size=args.size, config=args.config, toy=args.toy, allow_untrained=True, seed=0)
    cfg = engine.config
    frames, fps = cfg.window.frames, engine.fps
    m = cfg.window.audio_context
    watch = Stopwatch()
    avatar = engine.prepare(ASTRONAUT)
    prepare_ms = watch.lap("prepare portrait")
    session = engine.new_session(avatar, seed=0)
    audio = speech_like((args.windows + 2) * frames / fps + 1.0)

    per_window, parts = [], {k: [] for k in COMPONENTS}
    first_window_ms = None
    for w in range(args.windows + 1):
        window = window_at(audio, w * frames, frames, fps, m)
        watch.restart()
        out = session.process(window)
        ms = watch.lap("window")
        assert len(out) == frames
        if w == 0:
            first_window_ms = ms
            continue
        per_window.append(ms)
        timings = session.stage_timings()
        for k in COMPONENTS:
            parts[k].append(timings.get(k, 0.0))

    lat = cfg.latent_size
    print(
        f"config {cfg.name}: face {cfg.face.crop_size}², latent {lat}×{lat}×{cfg.latent_channels}, "
        f"unet {list(cfg.unet.block_out_channels)}, window {frames} frames, {cfg.sampler.steps} steps "
        f"({cfg.sampler.scheduler}), {args.threads} threads, {args.windows} windows"
    )
    print(f"portrait prepare (face mesh + reference bank): {prepare_ms:.0f} ms")
    for k in COMPONENTS:
        print(f"  {k:14s} median {statistics.median(parts[k]):7.1f} ms   min {min(parts[k]):7.1f} ms")
    steps = cfg.sampler.steps
    print(f"  unet per step  median {statistics.median(parts['unet']) / steps:7.1f} ms")
    med = statistics.median(per_window)
    print(
        f"window total     median {med:7.1f} ms   min {min(per_window):7.1f} ms   "
        f"({med / frames:.1f} ms/frame; real time needs ≤ {1000 * frames / fps:.0f} ms)"
    )
    buffer_ms = 1000 * (frames + m) / fps
    print(
        f"first window (cold) {first_window_ms:.0f} ms; first-frame latency ≈ audio buffering "
        f"{buffer_ms:.0f} ms "
        f"+ window compute {med:.0f} ms = {buffer_ms + med:.0f} ms"
    )


if __name__ == "__main__":
    main()
