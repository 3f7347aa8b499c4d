"""Audio guidance sweep: held-out lip sync of one EMO checkpoint per guidance value (or of several
checkpoints at one sampler), on the cases of ``emo_demo_report.py``.

.venv/bin/python benchmarks/emo_guidance_sweep.py runs/demo/guided --scheduler ddim --steps 12 \
    --guidance 1 2 3 5 --max-seconds 4
.venv/bin/python benchmarks/emo_guidance_sweep.py runs/demo/distill runs/demo/distill_w3 --max-seconds 4

Prints a markdown table (mean over the cases; per-case sync r in brackets).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.emo.engine import EmoEngine  # noqa: E402
from avatar.evaluation.cases import find_shared_dir  # noqa: E402
from avatar.evaluation.harness import Settings, evaluate  # noqa: E402
from benchmarks.emo_demo_report import held_out_cases  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders (or run folders with checkpoint/)")
    parser.add_argument("--scheduler", default="lcm", choices=("lcm", "tcd", "ddim"))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0])
    parser.add_argument("--max-seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    media = find_shared_dir()
    if media is None:
        print("error: no shared media folder (../shared/media)", file=sys.stderr)
        return 2
    pool = {}
    for path in map(Path, args.checkpoints):
        ckpt = path / "checkpoint" if (path / "checkpoint").is_dir() else path
        for w in args.guidance:
            label = f"{path.name} {args.scheduler} {args.steps} w{w:g}"
            pool[label] = EmoEngine(
                25.0, 512, 0, checkpoint=ckpt, scheduler=args.scheduler, steps=args.steps, audio_guidance=w
            )
    settings = Settings(fps=25.0, size=512, seed=0, max_seconds=args.max_seconds)
    results = [r for r in evaluate(pool, held_out_cases(media), settings) if r.error is None]
    print("| checkpoint, sampler | sync r (cases) | mouth range |\n|---|---|---|")
    for label in pool:
        rows = [r.metrics for r in results if r.source == label]
        r = [m["sync_r"] for m in rows if m.get("sync_r") is not None]
        span = [m["mouth_range"] for m in rows if m.get("mouth_range") is not None]
        cases = " / ".join(f"{v:.2f}" for v in r)
        print(f"| {label} | {sum(r) / max(len(r), 1):.2f} ({cases}) | {sum(span) / max(len(span), 1):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
