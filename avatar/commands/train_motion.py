"""``python -m avatar train-motion`` / ``distill-motion``: the learned motion sampler (docs/motion.md).

train-motion trains the v-prediction teacher on the ``train`` split of a ``prepare-motion`` folder and
reports on ``val``; distill-motion distils its audio-guided sampler into a 1-4 step consistency student.
Both are seeded and continue a run folder from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="folder written by prepare-motion (holds motion/)")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.jsonl, model/ (continued)")
    p.add_argument("--steps", type=int, default=None, help="total optimiser steps (default 6000 / 3000)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training option (e.g. lr=5e-4, guidance=2, audio_drop=0.15)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train-motion", help="train the motion sampler's teacher on prepared clips")
    _common(p)
    p.set_defaults(func=run_train)
    d = subparsers.add_parser("distill-motion", help="distil the motion teacher into a few-step student")
    _common(d)
    d.add_argument("--teacher", required=True, help="the teacher's run folder (from train-motion)")
    d.add_argument("--student-steps", type=int, default=2, choices=(1, 2, 3, 4), help="sampling steps")
    d.set_defaults(func=run_distill)


def _settings(args: argparse.Namespace, default_steps: int):
    from avatar.training.motion_train import MotionTrainSettings

    settings = MotionTrainSettings(steps=args.steps or default_steps, seed=args.seed)
    settings.override(args.set)
    if settings.steps <= 0:
        from avatar.errors import ConfigError

        raise ConfigError(f"--steps must be positive, got {settings.steps}")
    return settings


def run_train(args: argparse.Namespace) -> int:
    from avatar.training.motion_train import train_teacher

    print(json.dumps(train_teacher(args.data, args.out, _settings(args, 6000))), file=sys.stderr)
    return 0


def run_distill(args: argparse.Namespace) -> int:
    from avatar.training.motion_train import distill

    settings = _settings(args, 3000)
    settings.student_steps = args.student_steps
    print(json.dumps(distill(args.data, args.teacher, args.out, settings)), file=sys.stderr)
    return 0
