"""``python -m avatar prepare-motion``: real talking clips -> head pose, expression and speech features."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare-motion",
        help="face mesh, head pose, expression and mel features of real talking clips, with quality filters",
    )
    p.add_argument("--videos", nargs="+", required=True, metavar="DIR_OR_FILE",
                   help="video files or folders of videos (a folder's manifest.tsv labels its clips)")
    p.add_argument("--out", required=True,
                   help="output folder: captures/ (cached), motion/, report.json and report.md")
    p.add_argument("--manifest", help="manifest.tsv for every input (default: each folder's own)")
    p.add_argument("--split", default="train,val",
                   help="comma-separated manifest splits to prepare (default train,val; not eval-only)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="use only the first S seconds of each clip")
    p.add_argument("--force", action="store_true", help="capture again even where a cached capture exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from avatar.errors import ConfigError
    from avatar.motion.prepare import prepare_motion, summary_line

    splits = tuple(s.strip() for s in args.split.split(",") if s.strip())
    if not splits:
        raise ConfigError("--split needs at least one split name, e.g. train,val")
    report = prepare_motion(args.videos, args.out, manifest=args.manifest, splits=splits,
                            max_seconds=args.max_seconds, force=args.force, progress=not args.quiet)
    print(summary_line(report, Path(args.out)), file=sys.stderr)
    return 0
