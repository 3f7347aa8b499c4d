"""Learned vs rule-based motion: speed per frame on one core, and a long session's head drift and blinks.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/motion_benchmark.py [--minutes 10]
        [--model avatar/assets/motion] [--json OUT]

1. Speed: each generator streams 60 s of speech in one-frame windows (the server's default: 40 ms of
   audio plus 200 ms left and 80 ms right context per call); ms per frame = wall time / frames, motion
   only (no rendering).
2. Long session: ``--minutes`` of the shared speech files (all languages and singing, in turn) with a
   pause of 2-8 s after each, streamed the same way; per minute the mean and spread of each head angle
   (as rendered, degrees), the largest angle, and blinks per minute. A slow drift to one side shows as a
   per-minute mean moving away from 0.
3. Silence: 60 s of digital silence; the head's spread (degrees, as rendered) and blinks per minute.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.audio.io import load_audio  # noqa: E402
from avatar.engine import SAMPLE_RATE, AudioWindow  # noqa: E402
from avatar.motion import MotionSource, create_motion  # noqa: E402

SPEECH = ROOT.parent / "shared" / "media" / "speech"
FPS = 25
SPF = SAMPLE_RATE // FPS


def speech_files() -> list[np.ndarray]:
    files = sorted(SPEECH.glob("*.wav"))
    if files:
        return [load_audio(f) for f in files]
    rng = np.random.default_rng(0)  # no shared media: vowel bursts
    t = np.arange(8 * SAMPLE_RATE) / SAMPLE_RATE
    env = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, 1)
    return [(0.3 * env * np.sin(2 * np.pi * 150 * t) + 0.003 * rng.normal(size=t.size)).astype(np.float32)]


def session_audio(minutes: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clips, parts, total, i = speech_files(), [], 0, 0
    while total < minutes * 60 * SAMPLE_RATE:
        clip = clips[i % len(clips)]
        pause = np.zeros(int(rng.uniform(2, 8) * SAMPLE_RATE), np.float32)
        parts += [clip, pause]
        total += clip.size + pause.size
        i += 1
    return np.concatenate(parts)[: int(minutes * 60 * SAMPLE_RATE)]


def stream(generator, audio: np.ndarray) -> list:
    out = []
    frames = audio.size // SPF
    for f in range(frames):
        start = max(0, f * SPF - 3200)
        stop = (f + 1) * SPF + 1280
        samples = np.zeros(stop - start, np.float32)
        chunk = audio[start:stop]
        samples[: chunk.size] = chunk
        out.extend(generator.process(AudioWindow(samples, start, f, 1, float(FPS), f)))
    return out


def speed(source: MotionSource, model: str | None, audio: np.ndarray) -> float:
    generator = create_motion(source, FPS, 0, model)
    stream(generator, audio[: 2 * SAMPLE_RATE])  # warm up
    generator = create_motion(source, FPS, 0, model)
    started = time.perf_counter()
    motions = stream(generator, audio)
    return 1000.0 * (time.perf_counter() - started) / len(motions)


def long_session(source: MotionSource, model: str | None, audio: np.ndarray) -> dict:
    motions = stream(create_motion(source, FPS, 1, model), audio)
    angles = np.degrees(np.array([[m.head_pitch, m.head_yaw, m.head_roll] for m in motions]))
    blink = np.array([m.blink for m in motions])
    per_min = []
    for k in range(0, len(motions), 60 * FPS):
        part, lids = angles[k : k + 60 * FPS], blink[k : k + 60 * FPS]
        rises = int(((lids[1:] > 0.5) & (lids[:-1] <= 0.5)).sum())
        per_min.append(
            {
                "mean_deg": np.round(part.mean(axis=0), 2).tolist(),
                "std_deg": np.round(part.std(axis=0), 2).tolist(),
                "blinks": rises * 60 * FPS / max(len(part), 1),
            }
        )
    return {
        "minutes": len(motions) / FPS / 60,
        "max_abs_deg": np.round(np.abs(angles).max(axis=0), 2).tolist(),
        "mean_deg": np.round(angles.mean(axis=0), 2).tolist(),
        "std_deg": np.round(angles.std(axis=0), 2).tolist(),
        "worst_minute_mean_deg": np.round(np.abs([m["mean_deg"] for m in per_min]).max(axis=0), 2).tolist(),
        "blinks_per_min": float(np.mean([m["blinks"] for m in per_min])),
        "per_minute": per_min,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default=None, help="motion model folder (default: the shipped one)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    minute = session_audio(1.0)
    results = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "date": time.strftime("%Y-%m-%d"),
        "speed_ms_per_frame": {},
        "long_session": {},
    }
    audio = session_audio(args.minutes, seed=1)
    for source in (MotionSource.LEARNED, MotionSource.RULES):
        results["speed_ms_per_frame"][source.value] = round(speed(source, args.model, minute), 3)
        session = long_session(source, args.model, audio)
        results["long_session"][source.value] = session
        print(
            f"{source.value}: {results['speed_ms_per_frame'][source.value]:.2f} ms/frame; "
            f"{session['minutes']:.1f} min: head mean {session['mean_deg']} deg, std {session['std_deg']}, "
            f"max |angle| {session['max_abs_deg']}, worst minute mean {session['worst_minute_mean_deg']}, "
            f"{session['blinks_per_min']:.1f} blinks/min",
            flush=True,
        )
    silence = np.zeros(60 * SAMPLE_RATE, np.float32)
    results["silence_60s"] = {}
    for source in (MotionSource.LEARNED, MotionSource.RULES):
        motions = stream(create_motion(source, FPS, 3, args.model), silence)
        angles = np.degrees(np.array([[m.head_pitch, m.head_yaw, m.head_roll] for m in motions]))
        lids = np.array([m.blink for m in motions])
        blinks = int(((lids[1:] > 0.5) & (lids[:-1] <= 0.5)).sum())
        results["silence_60s"][source.value] = {
            "std_deg": np.round(angles.std(axis=0), 2).tolist(),
            "blinks_per_min": blinks,
        }
        print(
            f"{source.value}, 60 s of silence: head std {np.round(angles.std(axis=0), 2).tolist()} deg, "
            f"{blinks} blinks/min",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
