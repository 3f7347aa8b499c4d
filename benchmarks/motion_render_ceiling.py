"""How much of a real speaker's motion the face rig carries: the render path's ceiling.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/motion_render_ceiling.py \
        [--data runs/motion] [--split val] [--cases NAME ...] [--json OUT]

Each clip of ``--split`` prepared by ``python -m avatar prepare-motion`` (``--data``) is re-enacted by the
parametric engine driven not by a motion generator but by the clip's own measured motion (the 27-value
vectors ``prepare-motion`` derived from the real video, on the 25 fps grid; frames it dropped hold the last
kept one), from the clip's first frame with a face, and measured exactly as ``python -m avatar eval --cases
val`` measures an engine (``avatar.evaluation.harness.evaluate``). The scores say how well the rig, the
retargeting and the measurement reproduce a motion that is right by construction: the most any motion
generator can reach through this renderer. Needs ``../shared/data/talking`` and the prepared clips.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.engine import AudioWindow  # noqa: E402
from avatar.evaluation.cases import find_data_dir, split_cases  # noqa: E402
from avatar.evaluation.harness import Settings, evaluate  # noqa: E402
from avatar.face.motion_types import FaceMotion  # noqa: E402
from avatar.motion.learned import load_motion_model  # noqa: E402
from avatar.parametric.engine import ParametricEngine, ParametricSession  # noqa: E402
from avatar.training.motion_data import build_clips, read_prepared  # noqa: E402

KEYS = ("gt_r", "gt_width_r", "lmd", "lip_closure_recall", "gt_frames", "gt_frames_unreliable")


class ReplayedMotion:
    """A motion stream that plays back raw motion vectors (frames, 27), one per video frame."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.basis = load_motion_model().basis
        self.vectors = vectors

    def process(self, window: AudioWindow) -> list[FaceMotion]:
        last = len(self.vectors) - 1
        return [
            self.basis.face_motion(self.vectors[min(frame, last)])
            for frame in range(window.emit_from, window.first_frame + window.num_frames)
        ]

    def interrupt(self) -> None:
        pass


class ReplayEngine(ParametricEngine):
    """The parametric engine whose sessions replay ``vectors`` instead of generating motion."""

    def __init__(self, vectors: np.ndarray) -> None:
        super().__init__(fps=25.0, size=512, seed=0, motion="learned")
        self.vectors = vectors

    def new_session(self, avatar, seed: int = 0) -> ParametricSession:  # noqa: ANN001
        session = super().new_session(avatar, seed)
        session._motion = ReplayedMotion(self.vectors)
        return session


def held_vectors(vectors: np.ndarray, valid: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """``vectors`` with each invalid frame replaced by the last valid one (``rest`` before the first)."""
    out = vectors.copy()
    last = rest
    for i in range(len(out)):
        if valid[i]:
            last = out[i]
        else:
            out[i] = last
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="runs/motion", help="prepare-motion output folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--cases", nargs="*", default=None, help="only these clip names")
    parser.add_argument("--portraits", default="runs/ceiling_portraits")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    basis = load_motion_model().basis
    clips = {c.name: c for c in build_clips(read_prepared(args.data, (args.split,)), basis)}
    data_dir = find_data_dir()
    if data_dir is None:
        sys.exit("motion_render_ceiling: ../shared/data/talking not found")
    rest = basis.rest_vector()
    rows = []
    for case in split_cases(data_dir, args.split, Path(args.portraits)):
        clip = clips.get(case.name)
        if clip is None or (args.cases and case.name not in args.cases):
            continue
        engine = ReplayEngine(held_vectors(clip.vectors, clip.valid, rest))
        results = [r for r in evaluate({"replay": engine}, [case], Settings()) if r.source == "replay"]
        if not results or results[0].error:
            print(f"{case.name}: {results[0].error if results else 'no result'}", flush=True)
            continue
        row = {"case": case.name, **{k: results[0].metrics.get(k) for k in KEYS}}
        rows.append(row)
        text = (f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
        print(" ".join(text), flush=True)
    if not rows:
        sys.exit("motion_render_ceiling: no prepared clip matched a case")
    mean = {k: float(np.mean([r[k] for r in rows if r[k] is not None])) for k in KEYS[:4]}
    print(f"mean over {len(rows)} clips: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "split": args.split, "mean": mean, "clips": rows,
        }, indent=1))


if __name__ == "__main__":
    main()
