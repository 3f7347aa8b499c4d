"""``python -m avatar train``: one EMO training stage (0 autoencoder, 1 image, 2 video, 3 speed)."""

from __future__ import annotations

import argparse
import json
import sys


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``distill``: config, model, data, steps, device, threads, quiet."""
    p.add_argument("--config", default="configs/emo/train_tiny.yaml", help="training config yaml")
    p.add_argument("--model", help="override the training config's EMO model config (name or yaml)")
    p.add_argument("--data", required=True, help="folder written by prepare-data")
    p.add_argument("--steps", type=int, help="total steps (default: from the config)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one option of this stage (or of distill), e.g. audio_drop=0.15; repeatable",
    )


def load_settings(args: argparse.Namespace, section: int | str):
    """Apply ``--threads``, read the training config (``--model`` overrides its model) and apply the
    ``--set`` overrides to ``section`` (a stage number or "distill")."""
    import torch

    from avatar.training.settings import load_train_settings, override_options

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = load_train_settings(args.config, model=args.model)
    override_options(settings, section, args.set)
    return settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train one stage of the EMO model on prepared data")
    add_common_args(p)
    p.add_argument(
        "--stage",
        type=int,
        required=True,
        choices=(0, 1, 2, 3),
        help="0 autoencoder, 1 image, 2 video, 3 speed",
    )
    p.add_argument("--out", required=True, help="stage output folder (checkpoint/, state.pt, PNGs)")
    p.add_argument("--init", help="checkpoint (or previous stage folder) to start from; stage 0 may omit it")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from avatar.errors import ConfigError
    from avatar.training.trainer import StageTrainer

    if args.stage > 0 and not args.init and not args.resume:
        raise ConfigError(f"stage {args.stage} needs --init (the previous stage's output) or --resume")
    settings = load_settings(args, args.stage)
    trainer = StageTrainer(
        settings, args.stage, args.data, args.out, init=args.init, resume=args.resume, device=args.device
    )
    summary = trainer.run(args.steps, progress=not args.quiet)
    if trainer.rank == 0:  # under torchrun every rank holds the same summary
        print(json.dumps(summary), file=sys.stderr)
    return 0
