"""``python -m avatar prepare-data``: talking-head videos (and/or synthetic clips) → EMO training data."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prepare-data", help="face crops, audio, masks and head speed for EMO training")
    p.add_argument("--out", required=True, help="output folder (resumable: finished clips are kept)")
    p.add_argument("--videos", help="folder of talking-head videos with audio (searched recursively)")
    p.add_argument("--config", default="tiny", help="EMO model config (name or yaml) giving the crop size")
    p.add_argument("--synthetic", action="store_true", help="render clips with the parametric engine")
    p.add_argument("--portraits", help="--synthetic: folder of portrait images")
    p.add_argument("--speech", help="--synthetic: folder of speech audio (espeak-ng voices are added)")
    p.add_argument("--clips", type=int, default=16, help="--synthetic: number of clips (default 16)")
    p.add_argument("--max-seconds", type=float, default=4.0, help="--synthetic: longest clip, seconds")
    p.add_argument("--render-size", type=int, default=384, help="--synthetic: engine output size, pixels")
    p.add_argument("--augment", type=float, default=1.0, help="--synthetic: augmentation strength 0..1")
    p.add_argument(
        "--voices",
        help="--synthetic: comma-separated espeak-ng voices (default: every built-in line; '' for none)",
    )
    p.add_argument("--seed", type=int, default=0, help="--synthetic: seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from avatar.emo.config import load_emo_config
    from avatar.errors import ConfigError

    if not args.videos and not args.synthetic:
        raise ConfigError("prepare-data needs --videos DIR and/or --synthetic --portraits DIR")
    cfg = load_emo_config(args.config)
    crop, scale, shift = cfg.face.crop_size, cfg.face.crop_scale, cfg.face.crop_shift
    manifest = None
    if args.synthetic:
        if not args.portraits:
            raise ConfigError("--synthetic needs --portraits DIR")
        from avatar.training.synthetic import prepare_synthetic

        manifest = prepare_synthetic(
            Path(args.portraits),
            Path(args.speech) if args.speech else None,
            Path(args.out),
            crop,
            scale,
            clips=args.clips,
            seed=args.seed,
            render_size=args.render_size,
            max_seconds=args.max_seconds,
            augment=args.augment,
            progress=not args.quiet,
            crop_shift=shift,
            **({} if args.voices is None else {"voices": tuple(v for v in args.voices.split(",") if v)}),
        )
    if args.videos:
        from avatar.training.data import prepare_videos

        manifest = prepare_videos(
            Path(args.videos), Path(args.out), crop, scale, progress=not args.quiet, crop_shift=shift
        )
    frames = sum(c["frames"] for c in manifest["clips"])
    print(
        f"{args.out}: {len(manifest['clips'])} clips, {frames} frames at {crop}px; "
        f"{len(manifest['skipped'])} skipped",
        file=sys.stderr,
    )
    for s in manifest["skipped"]:
        print(f"  skipped {s['source']}: {s['reason']}", file=sys.stderr)
    return 0
