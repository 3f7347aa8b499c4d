"""Benchmark the audio -> motion generator against real footage and speech envelopes.

Usage (from the project root)::

    .venv/bin/python benchmarks/tune_motion.py [--media ../shared/media] [--render] [--set key=value ...]

Uses the evaluation's measures (``avatar.evaluation``: best Pearson r within +-200 ms, positive lag =
mouth after the reference) and reports:

* GT r on ``talking/{tys,ten}``: the generated mouth against the real speaker's inner-lip gap over face
  height (MediaPipe, cached in ``--cache`` after the first run), the generator driven by ``audio.mp3``;
* sync r on every ``speech/*.wav``: the generated mouth against the speech envelope (100 ms RMS);
* the generator's cost per frame (one core, 2-frame windows).

The generated mouth is a quick proxy by default: the renderer's inner-lip gap in face heights for a
typical portrait, ``(0.02 + 0.12 jaw_open) * (1 - lip_press)``. ``--render`` instead renders the real
clips' portraits with the parametric engine and tracks them like ``python -m avatar eval`` does (a few
seconds per clip; MediaPipe's tracking noise moves GT r by about +-0.02 between runs).

``--set`` overrides ``MotionTuning`` fields for tuning experiments (e.g. ``--set loud_power=2``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.audio.io import load_audio  # noqa: E402
from avatar.audio.windowing import AudioRing, WindowConfig, Windower  # noqa: E402
from avatar.engine import SAMPLE_RATE  # noqa: E402
from avatar.evaluation.sync import best_lag_correlation, frame_times, speech_envelope  # noqa: E402
from avatar.face.motion_types import FaceMotion  # noqa: E402
from avatar.motion.rules import MotionGenerator, MotionTuning  # noqa: E402

FPS = 25.0
CLIPS = ("ten", "tys")


def drive(audio: np.ndarray, tuning: MotionTuning, frames_per_window: int = 2, seed: int = 0):
    """Run the generator over ``audio`` like the server does; return (motions, seconds spent in it)."""
    config = WindowConfig(fps=FPS, frames_per_window=frames_per_window, hop=frames_per_window)
    ring, windower = AudioRing(capacity_seconds=len(audio) / SAMPLE_RATE + 2), Windower(config)
    ring.write(audio)
    generator = MotionGenerator(fps=FPS, seed=seed, tuning=tuning)
    total = num_frames(audio)
    motions, spent = [], 0.0
    for window in windower.flush(ring, total):
        start = time.perf_counter()
        motions.extend(generator.process(window))
        spent += time.perf_counter() - start
    return motions[:total], spent


def num_frames(audio: np.ndarray) -> int:
    """Frames the evaluation renders for ``audio`` (the last partial frame included)."""
    return max(1, math.ceil(len(audio) * FPS / SAMPLE_RATE - 1e-9))


def proxy_mouth(motions: list[FaceMotion]) -> np.ndarray:
    """Approximate rendered inner-lip gap (face heights) of a typical portrait, per frame."""
    jaw = np.array([m.jaw_open for m in motions])
    press = np.array([m.lip_press for m in motions])
    return (0.02 + 0.12 * jaw) * (1.0 - press)


def rendered_mouth(portrait: Path, audio: np.ndarray, tuning: MotionTuning) -> np.ndarray:
    """Mouth track of the parametric engine's frames for ``portrait`` and ``audio`` (eval measure)."""
    from avatar.evaluation.mouth_track import FaceMeshTracker, mouth_openness
    from avatar.parametric.engine import ParametricEngine
    from avatar.render import render_frames

    class TunedEngine(ParametricEngine):
        def new_session(self, avatar, seed=0):
            session = super().new_session(avatar, seed)
            session._motion = MotionGenerator(fps=self.fps, seed=seed, tuning=tuning)  # the tuning under test
            return session

    engine = TunedEngine(fps=FPS)
    frames = list(render_frames(engine, engine.prepare(portrait), audio, seed=0))
    with FaceMeshTracker(video=True) as tracker:
        return mouth_openness(tracker.track([f.image for f in frames]))


def real_mouth(clip: Path, frames: int, cache: Path) -> np.ndarray:
    """The real speaker's mouth track on the engine's frame grid (as the eval resamples it), cached."""
    path = cache / f"{clip.name}_mouth_{frames}.npy"
    if path.is_file():
        return np.load(path)
    from avatar.evaluation.harness import resample_track
    from avatar.evaluation.media import read_video, video_fps
    from avatar.evaluation.mouth_track import FaceMeshTracker, mouth_openness

    fps = video_fps(clip / "video.mp4")
    indices, images = [], []
    for seconds, image in read_video(clip / "video.mp4"):
        indices.append(int(round(seconds * fps)))
        images.append(image)
    with FaceMeshTracker(video=True) as tracker:
        measured = mouth_openness(tracker.track(images))
    track = np.full(indices[-1] + 1, np.nan)
    track[indices] = measured
    track = resample_track(track, fps, FPS, frames)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, track)
    return track


def spread(track: np.ndarray) -> float:
    """5-95 % range of a track (the eval's "mouth range"), NaN ignored."""
    return float(np.nanpercentile(track, 95) - np.nanpercentile(track, 5))


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
    parser.add_argument("--cache", type=Path, default=Path("/tmp/tune_motion"), help="real mouth tracks")
    parser.add_argument("--render", action="store_true", help="render and track the real clips' portraits")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--quiet", action="store_true", help="only print the summary line")
    args = parser.parse_args()
    tuning = parse_tuning(args.set)
    frames_done, seconds = 0, 0.0

    clip_scores = []
    for name in CLIPS:
        folder = args.media / "talking" / name
        audio = load_audio(folder / "audio.mp3")
        motions, spent = drive(audio, tuning)
        frames_done, seconds = frames_done + len(motions), seconds + spent
        if args.render:
            mouth = rendered_mouth(folder / "portrait.jpg", audio, tuning)
        else:
            mouth = proxy_mouth(motions)
        truth = best_lag_correlation(mouth, real_mouth(folder, num_frames(audio), args.cache), FPS)
        sync = best_lag_correlation(mouth, speech_envelope(audio, frame_times(len(mouth), FPS)), FPS)
        clip_scores.append(truth.r)
        if not args.quiet:
            print(
                f"video {name}: GT r = {truth.r:.3f} at {truth.lag_ms:+.0f} ms, "
                f"sync r = {sync.r:.3f} at {sync.lag_ms:+.0f} ms, mouth range {spread(mouth):.3f}"
            )

    speech_scores = []
    for wav in sorted((args.media / "speech").glob("*.wav")):
        audio = load_audio(wav)
        motions, spent = drive(audio, tuning)
        frames_done, seconds = frames_done + len(motions), seconds + spent
        mouth = proxy_mouth(motions)
        sync = best_lag_correlation(mouth, speech_envelope(audio, frame_times(len(mouth), FPS)), FPS)
        speech_scores.append(sync.r)
        if not args.quiet:
            jaw = np.array([m.jaw_open for m in motions])
            print(
                f"speech {wav.stem:15s}: sync r = {sync.r:.3f} at {sync.lag_ms:+.0f} ms, "
                f"jaw median {np.median(jaw):.2f}, p95 {np.percentile(jaw, 95):.2f}"
            )

    print(
        f"summary: GT mean r = {np.mean(clip_scores):.3f}, speech sync mean r = {np.mean(speech_scores):.3f} "
        f"(min {np.min(speech_scores):.3f}), cost {1e6 * seconds / frames_done:.0f} us/frame"
    )


if __name__ == "__main__":
    main()
