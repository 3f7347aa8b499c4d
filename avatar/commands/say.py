"""``python -m avatar say``: portrait + typed text -> talking MP4 (speech by espeak-ng)."""

from __future__ import annotations

import argparse
import sys

from avatar.commands import signing


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("say", help="make a portrait say a text (offline text to speech) into an MP4")
    p.add_argument("--portrait", required=True, help="portrait image")
    p.add_argument("--text", required=True, help="what to say")
    p.add_argument("--voice", default="en", help="voice language code: en, es, de, fr, zh... (default en)")
    p.add_argument("--out", required=True, help="output .mp4 path")
    p.add_argument("--engine", default="parametric", help="parametric (default) or emo")
    p.add_argument("--size", type=int, default=512, help="output width and height (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seed for blinks and head motion")
    p.add_argument("--motion", default=None, help="learned (the motion sampler) or rules (hand-written)")
    p.add_argument("--motion-model", default=None, help="motion model folder for --motion learned")
    signing.add_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scipy.signal import resample_poly

    from avatar.engines import create_engine, motion_options
    from avatar.render import render_audio
    from avatar.tts import create_tts

    identity = signing.resolve(args)
    audio = create_tts("espeak").synthesize(args.text, args.voice)
    engine = create_engine(args.engine, fps=25, size=args.size, seed=args.seed, **motion_options(args))
    stats = render_audio(engine, args.portrait, audio, resample_poly(audio, 3, 1), args.out, seed=args.seed,
                         badge=args.badge)
    signed = signing.sign_output(args, identity, args.out, args.portrait, args.engine, stats.session_id)
    note = ", signed C2PA manifest" if signed else ""
    print(f"wrote {args.out}: {stats.frames} frames, {stats.audio_seconds:.2f} s{note}", file=sys.stderr)
    return 0
