"""Teacher (DDIM, 25 steps) vs distilled student (LCM, 1/2/4 steps) of an EMO checkpoint on held-out cases,
measured by the evaluation harness (lip sync, identity, stability, ms per frame); the parametric engine
runs on the same cases for reference.

.venv/bin/python benchmarks/emo_demo_report.py --teacher runs/demo/guided --student runs/demo/distill \
    --out docs/emo_demo --max-seconds 8 --teacher-guidance 5

Held-out cases (``scripts/train_demo.sh`` keeps these portraits and Italian out of training):
italian1 @ pearl_earring and @ photo_woman_outdoor (portrait and language unseen), english_radio @
pearl_earring (portrait unseen). Writes ``OUT/report.md``, ``OUT/results.json``, ``OUT/plots/`` and prints
a summary table (markdown) with the targets of the training issue.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.emo.engine import EmoEngine  # noqa: E402
from avatar.engines import create_engine  # noqa: E402
from avatar.evaluation.cases import Case, find_shared_dir  # noqa: E402
from avatar.evaluation.harness import CaseResult, Settings, create_embedder, evaluate  # noqa: E402
from avatar.evaluation.report import write_report  # noqa: E402

HELD_OUT = (
    ("italian1", "pearl_earring.jpg"),
    ("italian1", "photo_woman_outdoor.jpg"),
    ("english_radio", "pearl_earring.jpg"),
)
SUMMARY = (
    "sync_r",
    "mouth_range",
    "identity_distance",
    "face_detection_rate",
    "background_flicker",
    "silent_landmark_jerk",
    "ms_per_frame",
)


def held_out_cases(media: Path) -> list[Case]:
    return [
        Case(
            f"{speech}@{Path(portrait).stem}",
            media / "portraits" / portrait,
            media / "speech" / f"{speech}.wav",
        )
        for speech, portrait in HELD_OUT
    ]


def engines(teacher: Path, student: Path, fps: float, size: int, seed: int, guidance: float = 1.0) -> dict:
    label = "teacher ddim 25" + (f" w{guidance:g}" if guidance != 1.0 else "")
    out = {
        label: EmoEngine(
            fps, size, seed, checkpoint=teacher, scheduler="ddim", steps=25, audio_guidance=guidance
        )
    }
    for steps in (1, 2, 4):
        out[f"student lcm {steps}"] = EmoEngine(
            fps, size, seed, checkpoint=student, scheduler="lcm", steps=steps
        )
    out["parametric"] = create_engine("parametric", fps=fps, size=size, seed=seed)
    return out


def summary_table(results: list[CaseResult]) -> str:
    """Mean of each summary metric per source (markdown)."""
    by_source: dict[str, list[dict]] = {}
    for r in results:
        if r.error is None and r.source != "reference":
            by_source.setdefault(r.source, []).append(r.metrics)
    lines = ["| engine | " + " | ".join(SUMMARY) + " |", "|---" * (len(SUMMARY) + 1) + "|"]
    for source, metrics in by_source.items():
        cells = []
        for key in SUMMARY:
            values = [m[key] for m in metrics if m.get(key) is not None]
            cells.append(f"{sum(values) / len(values):.3f}" if values else "–")
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="teacher checkpoint (stage folder or checkpoint/)")
    parser.add_argument("--student", required=True, help="distilled student (distill folder or checkpoint/)")
    parser.add_argument("--out", default="docs/emo_demo")
    parser.add_argument("--media", help="shared media folder (default ../shared/media)")
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--teacher-guidance",
        type=float,
        default=1.0,
        help="the teacher's audio classifier-free guidance (the distillation's audio_guidance)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    media = Path(args.media) if args.media else find_shared_dir()
    if media is None:
        print("error: no shared media folder (../shared/media); pass --media", file=sys.stderr)
        return 2

    def checkpoint(path: str) -> Path:
        p = Path(path)
        return p / "checkpoint" if (p / "checkpoint").is_dir() else p

    settings = Settings(fps=25.0, size=512, seed=args.seed, max_seconds=args.max_seconds)
    pool = engines(
        checkpoint(args.teacher), checkpoint(args.student), 25.0, 512, args.seed, args.teacher_guidance
    )

    def progress(result: CaseResult) -> None:
        m = result.metrics
        if result.error:
            print(f"{result.source} {result.case}: FAILED {result.error}", file=sys.stderr, flush=True)
            return
        print(
            f"{result.source} {result.case}: sync r {m.get('sync_r') or float('nan'):.2f} "
            f"identity {m.get('identity_distance') or float('nan'):.2f} "
            f"ms/frame {m.get('ms_per_frame') or 0:.1f}",
            file=sys.stderr,
            flush=True,
        )

    results = evaluate(pool, held_out_cases(media), settings, embedder=create_embedder(), progress=progress)
    write_report(results, settings, args.out)
    print(summary_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
