"""Benchmark the audio -> motion generator against real footage and speech envelopes.

Usage (from the project root)::

    .venv/bin/python benchmarks/tune_motion.py [--media ../shared/media] [--set key=value ...]

Reports, with the best lag in +-200 ms (positive lag: the jaw trails the reference):

* r(jaw, mouth) on ``talking/{tys,ten}``: the real speaker's inner-lip gap (MediaPipe landmarks 13/14)
  over face height (10 to 152) per video frame, the generator driven by ``audio.mp3``;
* r(jaw, envelope) on every ``speech/*.wav``: RMS with a 100 ms moving average, per frame;
* the cost per frame (one core, 2-frame windows).

``--set`` overrides ``MotionTuning`` fields for tuning experiments (e.g. ``--set lookahead_ms=60``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.audio.io import load_audio  # noqa: E402
from avatar.audio.windowing import AudioRing, WindowConfig, Windower  # noqa: E402
from avatar.engine import SAMPLE_RATE  # noqa: E402
from avatar.parametric.motion import MotionGenerator, MotionTuning  # noqa: E402

FPS = 25.0
MAX_LAG = 5  # frames = 200 ms


def drive(audio: np.ndarray, tuning: MotionTuning, frames_per_window: int = 2, seed: int = 0):
    """Run the generator over ``audio`` like the server does; return (frames, seconds spent in it)."""
    config = WindowConfig(fps=FPS, frames_per_window=frames_per_window, hop=frames_per_window)
    ring, windower = AudioRing(capacity_seconds=len(audio) / SAMPLE_RATE + 2), Windower(config)
    ring.write(audio)
    generator = MotionGenerator(fps=FPS, seed=seed, tuning=tuning)
    total = int(len(audio) / config.samples_per_frame)
    motions, spent = [], 0.0
    for window in windower.flush(ring, total):
        start = time.perf_counter()
        motions.extend(generator.process(window))
        spent += time.perf_counter() - start
    return motions[:total], spent


def envelope(audio: np.ndarray, frames: int, smooth_s: float = 0.1) -> np.ndarray:
    """RMS per frame centre after a ``smooth_s`` moving average of the squared signal."""
    kernel = np.ones(int(smooth_s * SAMPLE_RATE)) / int(smooth_s * SAMPLE_RATE)
    power = np.convolve(audio.astype(np.float64) ** 2, kernel, mode="same")
    centres = ((np.arange(frames) + 0.5) * SAMPLE_RATE / FPS).astype(int)
    return np.sqrt(power[np.minimum(centres, len(power) - 1)])


def best_lag(track: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """Max Pearson r over lags in +-MAX_LAG frames; lag > 0 means ``track`` trails ``reference``."""
    best = (-2.0, 0)
    for lag in range(-MAX_LAG, MAX_LAG + 1):
        a = track[lag:] if lag >= 0 else track[:lag]
        b = reference[: len(reference) - lag] if lag >= 0 else reference[-lag:]
        n = min(len(a), len(b))
        if n > 10 and np.std(a[:n]) > 0 and np.std(b[:n]) > 0:
            best = max(best, (float(np.corrcoef(a[:n], b[:n])[0, 1]), lag))
    return best


def mouth_track(video: Path) -> np.ndarray:
    """Inner-lip gap / face height per video frame (NaN where no face was found)."""
    import av
    import mediapipe as mp

    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
    values = []
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            result = mesh.process(image)
            if not result.multi_face_landmarks:
                values.append(np.nan)
                continue
            lm = result.multi_face_landmarks[0].landmark
            h, w = image.shape[:2]
            point = {i: np.array([lm[i].x * w, lm[i].y * h]) for i in (10, 13, 14, 152)}
            gap = np.linalg.norm(point[13] - point[14])
            values.append(gap / max(np.linalg.norm(point[10] - point[152]), 1e-6))
    return np.array(values)


def parse_tuning(items: list[str]) -> MotionTuning:
    known = {f.name: f.type for f in fields(MotionTuning)}
    values = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in known:
            raise SystemExit(f"unknown tuning key {key!r}; known: {', '.join(known)}")
        values[key] = float(value)
    return MotionTuning(**values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--media", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "media"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--quiet", action="store_true", help="only print the summary line")
    args = parser.parse_args()
    tuning = parse_tuning(args.set)
    frames_done, seconds = 0, 0.0

    clip_scores = []
    for clip in ("tys", "ten"):
        folder = args.media / "talking" / clip
        audio = load_audio(folder / "audio.mp3")
        mouth = mouth_track(folder / "video.mp4")
        motions, spent = drive(audio, tuning)
        frames_done, seconds = frames_done + len(motions), seconds + spent
        jaw = np.array([m.jaw_open for m in motions])
        n = min(len(jaw), len(mouth))
        valid = ~np.isnan(mouth[:n])
        r, lag = best_lag(jaw[:n][valid], mouth[:n][valid])
        r_env, lag_env = best_lag(envelope(audio, n)[valid], mouth[:n][valid])
        clip_scores.append(r)
        if not args.quiet:
            print(
                f"video {clip}: r(jaw, mouth) = {r:.3f} at lag {lag * 40:+d} ms "
                f"(envelope vs mouth: {r_env:.3f} at {lag_env * 40:+d} ms)"
            )

    speech_scores = []
    for wav in sorted((args.media / "speech").glob("*.wav")):
        audio = load_audio(wav)
        motions, spent = drive(audio, tuning)
        frames_done, seconds = frames_done + len(motions), seconds + spent
        jaw = np.array([m.jaw_open for m in motions])
        r, lag = best_lag(jaw, envelope(audio, len(jaw)))
        speech_scores.append(r)
        if not args.quiet:
            print(
                f"speech {wav.stem:15s}: r(jaw, envelope) = {r:.3f} at lag {lag * 40:+d} ms, "
                f"mean jaw {jaw.mean():.2f}, max {jaw.max():.2f}"
            )

    print(
        f"summary: video mean r = {np.mean(clip_scores):.3f}, speech mean r = {np.mean(speech_scores):.3f} "
        f"(min {np.min(speech_scores):.3f}), cost {1e6 * seconds / frames_done:.0f} us/frame"
    )


if __name__ == "__main__":
    main()
