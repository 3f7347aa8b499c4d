"""``python -m avatar eval``: measure engines (lip sync, identity, stability, life, speed) on cases."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="measure engines on portrait + audio cases (and real clips); write report.md and results.json",
    )
    p.add_argument(
        "--engine",
        default="parametric",
        help="engine name or name:motion (parametric:rules, parametric:learned), several separated by commas;"
        " each is reported as its own source (default parametric)",
    )
    p.add_argument(
        "--cases",
        default="shared",
        help="YAML/JSON cases file; 'shared' for the default cases from the shared media folder; 'val' or"
        " 'train' for one self-reenactment case per real clip of that split of --data-dir",
    )
    p.add_argument("--shared-dir", default=None, help="shared media folder (default: ../shared/media)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="real talking clips with manifest.tsv, for --cases val/train (default: ../shared/data/talking)",
    )
    p.add_argument("--out", required=True, help="output folder for report.md, results.json and plots/")
    p.add_argument("--compare", default=None, help="results.json of an earlier run: adds change tables")
    p.add_argument("--size", type=int, default=512, help="output width and height in pixels (default 512)")
    p.add_argument("--fps", type=float, default=25.0, help="output frame rate (default 25)")
    p.add_argument("--seed", type=int, default=0, help="seed for blinks and head motion (default 0)")
    p.add_argument("--max-seconds", type=float, default=None, help="cut every audio/video to this length")
    p.add_argument(
        "--identity-every",
        type=int,
        default=5,
        help="embed every n-th frame for the identity distance (default 5)",
    )
    p.add_argument("--reference-only", action="store_true", help="only measure the real clips (ground truth)")
    p.add_argument("--quiet", action="store_true", help="no per-case progress lines")
    p.set_defaults(func=run)


def _cases(args: argparse.Namespace):
    from avatar.errors import ConfigError
    from avatar.evaluation.cases import (
        SPLITS,
        find_data_dir,
        find_shared_dir,
        load_cases,
        shared_cases,
        split_cases,
    )

    if args.cases in SPLITS:
        data = Path(args.data_dir) if args.data_dir else find_data_dir()
        if data is None:
            raise ConfigError(
                "no talking-clip folder found (../shared/data/talking with manifest.tsv); pass --data-dir"
            )
        return split_cases(data, args.cases, Path(args.out) / "portraits")
    if args.cases != "shared":
        return load_cases(args.cases)
    shared = Path(args.shared_dir) if args.shared_dir else find_shared_dir()
    if shared is None:
        raise ConfigError("no shared media folder found (../shared/media); pass --shared-dir or --cases FILE")
    return shared_cases(shared)


def _progress_line(result) -> str:
    if result.error:
        return f"{result.source} {result.case}: FAILED: {result.error}"
    m = result.metrics
    parts = [f"{result.source} {result.case}: sync r {m['sync_r']:.2f} lag {m['sync_lag_ms']:+.0f} ms"]
    if m.get("gt_r") is not None:
        parts.append(f"GT r {m['gt_r']:.2f}")
    if m.get("gt_width_r") is not None:
        parts.append(f"width r {m['gt_width_r']:.2f}")
    if m.get("lmd") is not None:
        parts.append(f"LMD {m['lmd']:.3f}")
    if m.get("identity_distance") is not None:
        parts.append(f"identity {m['identity_distance']:.2f}")
    if m.get("real_time_factor") is not None:
        parts.append(f"RTF {m['real_time_factor']:.2f}")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    from avatar.engines import create_engine
    from avatar.errors import ConfigError
    from avatar.evaluation.harness import Settings, create_embedder, evaluate, parse_engine_specs
    from avatar.evaluation.report import load_results, write_report

    if not 1 <= args.fps <= 60:
        raise ConfigError(f"--fps must be between 1 and 60, got {args.fps}")
    if not 64 <= args.size <= 2048:
        raise ConfigError(f"--size must be between 64 and 2048, got {args.size}")
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise ConfigError(f"--max-seconds must be positive, got {args.max_seconds}")
    if args.identity_every < 1:
        raise ConfigError(f"--identity-every must be at least 1, got {args.identity_every}")
    if args.compare:
        load_results(args.compare)  # fail early, before minutes of rendering
    specs = {} if args.reference_only else parse_engine_specs(args.engine)  # fail before reading cases
    cases = _cases(args)
    if args.reference_only and not any(case.video for case in cases):
        raise ConfigError("--reference-only needs cases with a real video; none of the cases has one")
    engines = {}
    try:
        for source, (name, options) in specs.items():
            engines[source] = create_engine(name, fps=args.fps, size=args.size, seed=args.seed, **options)
    except BaseException:
        for engine in engines.values():
            engine.close()
        raise
    embedder = create_embedder()
    if embedder is None:
        print("warning: dlib or face_recognition_models missing; identity distance skipped", file=sys.stderr)
    settings = Settings(
        fps=args.fps,
        size=args.size,
        seed=args.seed,
        max_seconds=args.max_seconds,
        identity_every=args.identity_every,
    )
    report = (
        None if args.quiet else (lambda result: print(_progress_line(result), file=sys.stderr, flush=True))
    )
    try:
        results = evaluate(engines, cases, settings, args.reference_only, embedder, report)
    finally:
        for engine in engines.values():
            engine.close()
    write_report(results, settings, args.out, args.compare)
    failed = sum(1 for r in results if r.error)
    print(f"wrote {Path(args.out) / 'report.md'} ({len(results)} results, {failed} failed)", file=sys.stderr)
    return 1 if failed else 0
