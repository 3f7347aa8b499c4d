"""Render a sweep of motions for every portrait into PNG grids (one row per portrait) to look at.

    .venv/bin/python benchmarks/contact_sheet.py                      # ../shared/media/portraits/*
    .venv/bin/python benchmarks/contact_sheet.py --crop full --tile 384 avatar/assets/astronaut.png
    .venv/bin/python benchmarks/contact_sheet.py --measure            # + MediaPipe lip gap / eye table
    .venv/bin/python benchmarks/contact_sheet.py --time               # + per-stage render timings

Writes /tmp/contact_sheet/<name>.png per portrait and /tmp/contact_sheet/all.png.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.errors import PortraitError  # noqa: E402
from avatar.face.motion_types import FaceMotion  # noqa: E402
from avatar.face.portrait import face_mesh, prepare_portrait  # noqa: E402
from avatar.face.renderer import PortraitRenderer  # noqa: E402

SWEEP: list[tuple[str, FaceMotion]] = [
    ("rest", FaceMotion()),
    ("jaw .3", FaceMotion(jaw_open=0.3)),
    ("jaw .6", FaceMotion(jaw_open=0.6)),
    ("jaw 1", FaceMotion(jaw_open=1.0)),
    ("ee", FaceMotion(jaw_open=0.3, lip_width=1.0)),
    ("oo", FaceMotion(jaw_open=0.4, lip_width=-1.0)),
    ("press", FaceMotion(lip_press=1.0)),
    ("blink .5", FaceMotion(blink=0.5)),
    ("blink 1", FaceMotion(blink=1.0)),
    ("brow", FaceMotion(brow_raise=1.0)),
    ("yaw+", FaceMotion(head_yaw=0.25, jaw_open=0.3)),
    ("yaw-", FaceMotion(head_yaw=-0.25)),
    ("pitch+", FaceMotion(head_pitch=0.25)),
    ("roll+", FaceMotion(head_roll=0.25, jaw_open=0.5)),
    ("breath", FaceMotion(breath=1.0)),
]
DEFAULT_GLOB = str(Path(__file__).resolve().parents[2] / "shared" / "media" / "portraits" / "*")


def measure(image: np.ndarray) -> tuple[float, float] | None:
    """(inner-lip gap 13-14, mean eye opening 159-145/386-374), both over face height 10-152."""
    faces = face_mesh(image)
    if not faces:
        return None
    f = max(faces, key=lambda p: np.ptp(p[:, 1]))[:, :2]
    height = np.linalg.norm(f[10] - f[152])
    eyes = (np.linalg.norm(f[159] - f[145]) + np.linalg.norm(f[386] - f[374])) / 2
    return float(np.linalg.norm(f[13] - f[14]) / height), float(eyes / height)


def crop_face(frame: np.ndarray, box: tuple[int, int, int, int], tile: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = 1.5 * max(x1 - x0, y1 - y0)
    k = tile / side
    m = np.array([[k, 0, tile / 2 - cx * k], [0, k, tile / 2 - cy * k]])
    return cv2.warpAffine(frame, m, (tile, tile), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def time_renderer(renderer: PortraitRenderer, frames: int = 200) -> str:
    """Per-stage and total CPU ms per frame (this thread) over random talking motions.

    CPU time of the rendering thread, not wall time, so that other processes on a shared machine do
    not inflate the numbers; OpenCV is limited to one thread so all the work is on this thread.
    """
    renderer.clock = time.thread_time
    rng = np.random.default_rng(0)
    motions = [FaceMotion(jaw_open=rng.uniform(0, 1), lip_width=rng.uniform(-1, 1),
                          lip_press=rng.choice([0.0, rng.uniform(0, 1)]), blink=rng.choice([0.0, 0.0, 1.0]),
                          brow_raise=rng.uniform(0, 0.5), head_pitch=rng.uniform(-.1, .1),
                          head_yaw=rng.uniform(-.1, .1), head_roll=rng.uniform(-.1, .1),
                          breath=rng.uniform(-1, 1)) for _ in range(frames)]
    totals, stages = [], {}
    for motion in motions[:10]:
        renderer.render(motion)
    for motion in motions:
        start = time.thread_time()
        renderer.render(motion)
        totals.append((time.thread_time() - start) * 1000)
        for name, ms in renderer.stage_ms.items():
            stages.setdefault(name, []).append(ms)
    parts = "  ".join(f"{name} {np.median(v):.2f}" for name, v in stages.items())
    return f"render CPU median {np.median(totals):.2f} ms (min {np.min(totals):.2f}, p90 " \
           f"{np.percentile(totals, 90):.2f}) | median per stage: {parts}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("portraits", nargs="*", help=f"image files (default {DEFAULT_GLOB})")
    parser.add_argument("--out", default="/tmp/contact_sheet")
    parser.add_argument("--tile", type=int, default=192)
    parser.add_argument("--crop", choices=("face", "full"), default="face")
    parser.add_argument("--measure", action="store_true")
    parser.add_argument("--time", action="store_true", help="time render (OpenCV limited to 1 thread)")
    args = parser.parse_args()
    if args.time:
        cv2.setNumThreads(1)
    paths = args.portraits or sorted(glob.glob(DEFAULT_GLOB))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    names: set[str] = set()
    for path in paths:
        name = Path(path).stem
        if name in names:  # e.g. talking/ten/portrait.jpg and talking/tys/portrait.jpg
            name = f"{Path(path).parent.name}_{name}"
        names.add(name)
        try:
            rig = prepare_portrait(path)
        except PortraitError as exc:
            print(f"{name}: {exc}")
            continue
        renderer = PortraitRenderer(rig)
        tiles, table = [], []
        for label, motion in SWEEP:
            frame = renderer.render(motion)
            tile = crop_face(frame, rig.face_box, args.tile) if args.crop == "face" else cv2.resize(
                frame, (args.tile, args.tile), interpolation=cv2.INTER_AREA)
            tile = cv2.cvtColor(tile, cv2.COLOR_RGB2BGR)
            cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3)
            cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            tiles.append(tile)
            if args.measure:
                table.append((label, measure(frame)))
        row = np.hstack(tiles)
        cv2.imwrite(str(out / f"{name}.png"), row)
        rows.append(row)
        print(f"{name}: warnings={rig.warnings}")
        if args.measure:
            print("  gap/eyes: " + "  ".join(f"{lab}={'none' if r is None else f'{r[0]:.3f}/{r[1]:.3f}'}"
                                             for lab, r in table))
            results = dict(table)
            jaw_keys = ("rest", "jaw .3", "jaw .6", "jaw 1")
            gaps = [results[k][0] if results[k] else float("nan") for k in jaw_keys]
            rising = all(b > a for a, b in zip(gaps, gaps[1:], strict=False))
            found = sum(r is not None for r in results.values())
            eyes = [results[k][1] if results[k] else float("nan") for k in ("rest", "blink 1")]
            print(f"  jaw gap rises: {rising} ({gaps[0]:.3f} -> {gaps[-1]:.3f}); blink 1 / open eye: "
                  f"{eyes[1] / eyes[0]:.2f}; face found in {found}/{len(results)} frames")
        if args.time:
            print("  " + time_renderer(renderer))
    if rows:
        cv2.imwrite(str(out / "all.png"), np.vstack(rows))
        print(f"wrote {out}/all.png")


if __name__ == "__main__":
    main()
