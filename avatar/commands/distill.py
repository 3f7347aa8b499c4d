"""``python -m avatar distill``: latent consistency distillation of a trained EMO checkpoint (LCM student)."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("distill", help="distil a trained EMO teacher into a 1/2/4-step LCM student")
    p.add_argument("--teacher", required=True, help="teacher checkpoint (or stage folder with checkpoint/)")
    p.add_argument("--data", required=True, help="folder written by prepare-data")
    p.add_argument("--out", required=True, help="output folder (checkpoint/, distill.json, PNGs)")
    p.add_argument("--steps-student", type=int, default=2, choices=(1, 2, 4), help="student sampling steps")
    p.add_argument("--config", default="configs/emo/train_tiny.yaml", help="training config yaml")
    p.add_argument("--model", help="override the training config's EMO model config (name or yaml)")
    p.add_argument("--steps", type=int, help="distillation steps (default: from the config)")
    p.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from avatar.training.distill import Distiller
    from avatar.training.settings import load_train_settings

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = load_train_settings(args.config, model=args.model)
    distiller = Distiller(settings, args.teacher, args.data, args.out, args.steps_student, device=args.device)
    print(json.dumps(distiller.run(args.steps, progress=not args.quiet)), file=sys.stderr)
    return 0
