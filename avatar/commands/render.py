"""``python -m avatar render``: portrait + audio file -> talking MP4 (H.264 + AAC)."""

from __future__ import annotations

import argparse
import sys

from avatar.commands import signing


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("render", help="render a talking-portrait MP4 from a portrait and audio")
    p.add_argument("--portrait", required=True, help="portrait image (png, jpg, ...)")
    p.add_argument("--audio", required=True, help="driving audio (wav, mp3, m4a, ... any rate, stereo ok)")
    p.add_argument("--out", required=True, help="output .mp4 path")
    p.add_argument("--engine", default="parametric", help="parametric (default) or emo")
    p.add_argument("--fps", type=float, default=25.0, help="output frame rate (default 25)")
    p.add_argument("--size", type=int, default=512, help="output width and height in pixels (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seed for blinks and head motion (default 0)")
    p.add_argument("--checkpoint", help="trained EMO checkpoint folder (for --engine emo)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--motion", default=None, help="learned (the motion sampler) or rules (hand-written)")
    p.add_argument("--motion-model", default=None, help="motion model folder for --motion learned")
    p.add_argument("--framing", default="full",
                   help="full (default: the whole picture) or head_and_shoulders (crop around the face, "
                        "as the server streams video calls)")
    signing.add_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from avatar.engines import create_engine, motion_options
    from avatar.errors import ConfigError
    from avatar.face.framing import parse_framing
    from avatar.render import render_file

    if not 1 <= args.fps <= 60:
        raise ConfigError(f"--fps must be between 1 and 60, got {args.fps}")
    if not 64 <= args.size <= 2048:
        raise ConfigError(f"--size must be between 64 and 2048, got {args.size}")
    options = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    options["framing"] = parse_framing(args.framing, "--framing")
    options.update(motion_options(args))
    identity = signing.resolve(args)
    engine = create_engine(args.engine, fps=args.fps, size=args.size, seed=args.seed, **options)
    stats = render_file(engine, args.portrait, args.audio, args.out, seed=args.seed, progress=not args.quiet,
                        badge=args.badge)
    signed = signing.sign_output(args, identity, args.out, args.portrait, args.engine, stats.session_id)
    print(
        f"wrote {args.out}: {stats.frames} frames, {stats.video_seconds:.2f} s video for "
        f"{stats.audio_seconds:.2f} s audio, real-time factor {stats.real_time_factor:.2f}"
        f"{', signed C2PA manifest' if signed else ''}",
        file=sys.stderr,
    )
    return 0
