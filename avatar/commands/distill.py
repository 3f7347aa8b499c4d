"""``python -m avatar distill``: latent consistency distillation of a trained EMO checkpoint (LCM student)."""

from __future__ import annotations

import argparse
import json
import sys

from avatar.commands.train import add_common_args, load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("distill", help="distil a trained EMO teacher into a 1/2/4-step LCM student")
    add_common_args(p)
    p.add_argument("--teacher", required=True, help="teacher checkpoint (or stage folder with checkpoint/)")
    p.add_argument(
        "--student", help="continue this earlier student of the same teacher (distill folder or checkpoint)"
    )
    p.add_argument("--out", required=True, help="output folder (checkpoint/, distill.json, PNGs)")
    p.add_argument("--steps-student", type=int, default=2, choices=(1, 2, 4), help="student sampling steps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from avatar.training.distill import Distiller

    settings = load_settings(args, "distill")
    distiller = Distiller(
        settings, args.teacher, args.data, args.out, args.steps_student, args.device, student=args.student
    )
    print(json.dumps(distiller.run(args.steps, progress=not args.quiet)), file=sys.stderr)
    return 0
