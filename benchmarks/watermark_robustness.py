"""Provenance mark: speed, quality (PSNR), robustness on the real delivery paths, false positives.

Delivery paths measured on every source sequence (512x512 frames at 25 fps):

* ``vp8-500k`` / ``vp8-250k`` / ``vp8-1500k``: aiortc's own ``Vp8Encoder`` (PyAV ``libvpx``; realtime,
  CBR, cpu-used -6, noise-sensitivity 4; 500 kbps is aiortc's default, 250k/1.5M its min/max),
  packetized to RTP payloads, depacketized and decoded with PyAV as a browser-side receiver would;
  ``vp8r-500k`` / ``vp8r-250k``: the server's default ``video.encoding: rendered`` (the same encoder
  without the denoiser, cpu-used -12: server/video_encoders.py).
* ``h264-crf23``: PyAV ``libx264`` at its defaults (crf 23, preset medium, yuv420p) into an MP4 file.
* ``resize256-area`` / ``resize256-linear``: downscaled to 256 px; ``png``: lossless screenshot;
  ``jpeg75``: a JPEG screenshot at quality 75 (extra).

Sources: the two real talking clips in ``../shared/media/talking`` (every frame), and each portrait in
``../shared/media/portraits`` (plus the shipped astronaut) cropped square to 512 px and animated with a
synthetic mouth/jaw warp. Metrics per path: raw channel accuracy (fraction of the 256 channel signs
right, before error correction), payload bit accuracy after Viterbi decoding (64 bits), the share of
single frames whose mark is found with the right payload, wrong payloads (must be 0), and the
soft-voted result over the whole sequence.

False positives: every frame of the talking clips (as stored and after an H.264 re-encode), every
portrait with crops / rescales / flips / JPEG, and synthetic images; reports how many were flagged and
the spread of the sync score z (should be ~N(0, 1)).

Run:  .venv/bin/python benchmarks/watermark_robustness.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import fractions
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.provenance import DEFAULT_STRENGTH, Payload, Watermarker, ecc  # noqa: E402
from avatar.provenance.detect import channel_statistics, decide  # noqa: E402
from avatar.provenance.files import judge_video  # noqa: E402
from avatar.provenance.layout import CODED, DEFAULT_KEY, layout_for  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
SIZE = 512
FPS = 25

Frames = list[np.ndarray]


# ----------------------------------------------------------------------------------------- sources
def read_video(path: Path, limit: int | None = None) -> Frames:
    frames: Frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if limit and len(frames) >= limit:
                break
    return frames


def square(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` (the engines' output framing)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top : top + side, left : left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def talking(image: np.ndarray, count: int) -> Frames:
    """Synthetic talking: the lower-middle of the frame stretches like an opening jaw, the head sways."""
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    frames: Frames = []
    for i in range(count):
        opening = 0.5 - 0.5 * np.cos(2 * np.pi * i / 9.0)
        bump = np.exp(-(((ys - 0.62 * h) / (0.08 * h)) ** 2) - (((xs - 0.5 * w) / (0.12 * w)) ** 2))
        sway = 2.0 * np.sin(2 * np.pi * i / 50.0)
        face = np.exp(-(((ys - 0.45 * h) / (0.3 * h)) ** 2) - (((xs - 0.5 * w) / (0.25 * w)) ** 2))
        map_y = ys - 8.0 * opening * bump
        map_x = xs - sway * face
        map_x, map_y = map_x.astype(np.float32), map_y.astype(np.float32)
        frames.append(cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return frames


def load_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def sources(quick: bool) -> dict[str, Frames]:
    out: dict[str, Frames] = {}
    for clip in sorted((MEDIA / "talking").glob("*/video.mp4")):
        out[f"clip:{clip.parent.name}"] = [square(f) for f in read_video(clip, 50 if quick else None)]
    portraits = sorted((MEDIA / "portraits").glob("*.*")) or [ROOT / "avatar/assets/astronaut.png"]
    if quick:
        portraits = portraits[:3]
    for path in portraits:
        out[f"portrait:{path.stem}"] = talking(square(load_rgb(path)), 30 if quick else 50)
    return out


# ------------------------------------------------------------------------------------------- paths
def vp8_aiortc(frames: Frames, bitrate: int, rendered: bool = False) -> Frames:
    """aiortc's VP8 sender at ``bitrate`` -> RTP payloads -> depacketize -> libvpx decode. ``rendered``:
    the server's default encoder (``video.encoding: rendered``: no denoiser, cpu-used -12)."""
    from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, vp8_depayload
    from aiortc.jitterbuffer import JitterFrame

    from server.video_encoders import RenderedVp8Encoder

    encoder, decoder = (RenderedVp8Encoder() if rendered else Vp8Encoder()), Vp8Decoder()
    encoder.target_bitrate = bitrate
    out: Frames = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = i * 90000 // FPS, fractions.Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame)
        data = b"".join(vp8_depayload(p) for p in payloads)
        out.extend(f.to_ndarray(format="rgb24") for f in decoder.decode(JitterFrame(data, timestamp)))
    return out


def h264_mp4(frames: Frames) -> Frames:
    """PyAV libx264 at its defaults (crf 23, yuv420p) into an MP4 file, decoded back."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
            for rgb in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            container.mux(stream.encode())
        return read_video(path)


def per_frame(transform: Callable[[np.ndarray], np.ndarray]) -> Callable[[Frames], Frames]:
    return lambda frames: [transform(f) for f in frames]


def png(rgb: np.ndarray) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".png", rgb)[1], cv2.IMREAD_COLOR)


def jpeg(rgb: np.ndarray, quality: int = 75) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR)


PATHS: dict[str, Callable[[Frames], Frames]] = {
    "png": per_frame(png),
    "resize256-area": per_frame(lambda f: cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA)),
    "resize256-linear": per_frame(lambda f: cv2.resize(f, (256, 256), interpolation=cv2.INTER_LINEAR)),
    "jpeg75": per_frame(jpeg),
    "h264-crf23": h264_mp4,
    "vp8-1500k": lambda frames: vp8_aiortc(frames, 1_500_000),
    "vp8-500k": lambda frames: vp8_aiortc(frames, 500_000),
    "vp8-250k": lambda frames: vp8_aiortc(frames, 250_000),
    "vp8r-500k": lambda frames: vp8_aiortc(frames, 500_000, rendered=True),
    "vp8r-250k": lambda frames: vp8_aiortc(frames, 250_000, rendered=True),
}


# ----------------------------------------------------------------------------------------- metrics
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def score(frames: Frames, payload: Payload) -> dict[str, float]:
    """Robustness metrics of received ``frames`` that were marked with ``payload``."""
    layout = layout_for(DEFAULT_KEY)
    truth_bits = payload.to_bits()
    truth = layout.channel_signs(truth_bits)
    stats = np.stack([channel_statistics(f) for f in frames])
    raw = np.mean(np.sign(stats) == truth, axis=1)
    bits = [float(np.mean(ecc.decode(row[:CODED]) == truth_bits)) for row in stats]
    detections = [decide(row) for row in stats]
    found = sum(d.found and d.payload == payload for d in detections)
    wrong = sum(d.found and d.payload not in (None, payload) for d in detections)
    vote = judge_video(stats)
    return {
        "raw_acc": float(raw.mean()),
        "raw_acc_min": float(raw.min()),
        "raw_acc_after_1s": float(raw[FPS:].mean()) if len(raw) > FPS else float("nan"),
        "payload_acc": float(np.mean(bits)),
        "found": found / len(frames),
        "wrong_payload": int(wrong),
        "vote_ok": float(vote.found and vote.payload == payload),
        "z": float(np.mean([d.sync_score for d in detections])),
    }


def robustness(
    all_sources: dict[str, Frames], paths: list[str], strength: float
) -> dict[str, dict[str, float]]:
    """Mark every source with its own payload, send it down each path, score; averaged per path."""
    marker = Watermarker(strength=strength)
    per_path: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    quality: list[float] = []
    for index, (name, frames) in enumerate(all_sources.items()):
        payload = Payload(session_id=(0x5A0000 + index * 7919) % (1 << 24), minutes=1000 + index)
        marked = [marker.embed(f, payload) for f in frames]
        quality.extend(psnr(a, b) for a, b in zip(frames, marked, strict=True))
        for path in paths:
            result = score(PATHS[path](marked), payload)
            per_path[path].append(result)
            print(
                f"  {name:28s} {path:17s} raw {result['raw_acc']:.3f} (min {result['raw_acc_min']:.3f}) "
                f"payload {result['payload_acc']:.3f} frames found {result['found']:.2f} "
                f"vote {'ok' if result['vote_ok'] else 'MISSED'} z {result['z']:.1f}",
                flush=True,
            )
    summary = {
        path: {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
        for path, rows in per_path.items()
    }
    for path, rows in per_path.items():
        summary[path]["raw_acc_worst_source"] = float(min(r["raw_acc"] for r in rows))
        summary[path]["vote_ok"] = float(sum(r["vote_ok"] for r in rows))
        summary[path]["sources"] = float(len(rows))
        summary[path]["wrong_payload"] = float(sum(r["wrong_payload"] for r in rows))
    summary["psnr"] = {"mean": float(np.mean(quality)), "min": float(np.min(quality)), "frames": len(quality)}
    return summary


# ----------------------------------------------------------------------------------- false alarms
def variations(image: np.ndarray, extra_crops: int = 0) -> Frames:
    """Crops, rescales, flips and re-encodes of an unmarked image (more no-mark samples), plus
    ``extra_crops`` random crops resized to random squares."""
    h, w = image.shape[:2]
    out = [
        image,
        image[:, ::-1].copy(),
        cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB),
    ]
    for frac in (0.9, 0.75, 0.6):
        ch, cw = int(h * frac), int(w * frac)
        for top, left in ((0, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)):
            out.append(image[top : top + ch, left : left + cw].copy())
    for scale in (0.5, 0.75, 1.3):
        out.append(
            cv2.resize(
                image, (max(16, int(w * scale)), max(16, int(h * scale))), interpolation=cv2.INTER_AREA
            )
        )
    out.append(square(image))
    out.append(jpeg(image, 50))
    rng = np.random.default_rng(h * 7919 + w)
    for _ in range(extra_crops):
        frac = rng.uniform(0.4, 0.95)
        ch, cw = max(16, int(h * frac)), max(16, int(w * frac * rng.uniform(0.8, 1.25)))
        cw = min(cw, w)
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        side = int(rng.integers(128, 768))
        out.append(
            cv2.resize(image[top : top + ch, left : left + cw], (side, side), interpolation=cv2.INTER_AREA)
        )
    return out


def synthetic(count: int, rng: np.random.Generator) -> Frames:
    """Noise, flat, gradient, checkerboard and blob images."""
    out: Frames = []
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    for i in range(count):
        kind = i % 5
        if kind == 0:
            img = rng.integers(0, 256, (SIZE, SIZE, 3))
        elif kind == 1:
            img = np.full((SIZE, SIZE, 3), rng.integers(0, 256, 3))
        elif kind == 2:
            angle = rng.uniform(0, np.pi)
            ramp = np.cos(angle) * xs + np.sin(angle) * ys
            img = np.repeat((ramp - ramp.min()) / np.ptp(ramp) * 255, 3).reshape(SIZE, SIZE, 3)
        elif kind == 3:
            cell = int(rng.integers(2, 40))
            img = np.repeat(((((ys * SIZE) // cell + (xs * SIZE) // cell) % 2) * 255)[..., None], 3, axis=2)
        else:
            img = cv2.GaussianBlur(rng.normal(128, 60, (SIZE, SIZE, 3)), (0, 0), float(rng.uniform(1, 12)))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def false_alarms(quick: bool) -> dict[str, float]:
    """Count detections on unmarked material; report the spread of z."""
    samples: dict[str, Frames] = {}
    for clip in sorted((MEDIA / "talking").glob("*/video.mp4")):
        frames = read_video(clip, 40 if quick else None)
        samples[f"clip:{clip.parent.name}"] = frames
        samples[f"clip:{clip.parent.name}+h264"] = h264_mp4(frames)
        samples[f"clip:{clip.parent.name}+vp8"] = vp8_aiortc([square(f) for f in frames], 500_000)
        samples[f"clip:{clip.parent.name}+crops"] = [variations(f, 1)[-1] for f in frames[::2]]
    for path in sorted((MEDIA / "portraits").glob("*.*")) or [ROOT / "avatar/assets/astronaut.png"]:
        samples[f"portrait:{path.stem}"] = variations(load_rgb(path), 10 if quick else 40)
    samples["synthetic"] = synthetic(20 if quick else 100, np.random.default_rng(7))
    zs, flagged, crc_ok, total = [], 0, 0, 0
    for name, frames in samples.items():
        detections = [decide(channel_statistics(f)) for f in frames]
        zs.extend(d.sync_score for d in detections)
        hits = sum(d.found for d in detections)
        flagged += hits
        crc_ok += sum(d.payload is not None for d in detections)
        total += len(frames)
        if hits:
            print(f"  FALSE POSITIVE in {name}: {hits}/{len(frames)}")
    videos = [
        judge_video(np.stack([channel_statistics(f) for f in frames]))
        for name, frames in samples.items()
        if name.startswith("clip:")
    ]
    z = np.array(zs)
    return {
        "samples": total,
        "flagged": flagged,
        "rate": flagged / total,
        "marker_and_crc_pass": crc_ok,
        "z_mean": float(z.mean()),
        "z_std": float(z.std()),
        "z_max": float(z.max()),
        "videos": len(videos),
        "videos_flagged": sum(v.found for v in videos),
    }


# ------------------------------------------------------------------------------------------- speed
def speed() -> dict[str, float]:
    """Single-thread timings at 512x512 (ms)."""
    cv2.setNumThreads(1)
    image = load_rgb(ROOT / "avatar/assets/astronaut.png")
    marker = Watermarker()
    payload = Payload(0x123456, 42)
    start = time.perf_counter()
    marker.prepare(payload, SIZE, SIZE)
    prepare_ms = (time.perf_counter() - start) * 1e3
    timings = []
    for _ in range(500):
        start = time.perf_counter()
        marker.embed(image, payload)
        timings.append(time.perf_counter() - start)
    marked = marker.embed(image, payload)
    detect_timings = []
    for _ in range(30):
        start = time.perf_counter()
        decide(channel_statistics(marked))
        detect_timings.append(time.perf_counter() - start)
    cv2.setNumThreads(-1)
    return {
        "prepare_ms": prepare_ms,
        "embed_ms_median": float(np.median(timings) * 1e3),
        "embed_ms_p99": float(np.percentile(timings, 99) * 1e3),
        "detect_ms_median": float(np.median(detect_timings) * 1e3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and portraits")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated delivery paths")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--strength", type=float, default=DEFAULT_STRENGTH, help="RMS luma change (levels)")
    parser.add_argument("--no-false-alarms", action="store_true", help="skip the false-alarm survey")
    args = parser.parse_args()
    results: dict[str, object] = {"speed": speed()}
    print("speed (ms, one thread, 512x512):", json.dumps(results["speed"]), flush=True)
    print("robustness:", flush=True)
    paths = [p for p in args.paths.split(",") if p]
    results["robustness"] = robustness(sources(args.quick), paths, args.strength)
    if not args.no_false_alarms:
        print("false alarms:", flush=True)
        results["false_alarms"] = false_alarms(args.quick)
    print("\nsummary")
    print(f"  PSNR: {json.dumps(results['robustness']['psnr'])}")
    for path, row in results["robustness"].items():
        if path == "psnr":
            continue
        print(
            f"  {path:17s} raw bit acc {row['raw_acc']:.3f} (after 1 s {row['raw_acc_after_1s']:.3f}, "
            f"worst source {row['raw_acc_worst_source']:.3f})  payload bit acc {row['payload_acc']:.3f}  "
            f"single frames found "
            f"{row['found']:.2f}  soft vote {row['vote_ok']:.0f}/{row['sources']:.0f}  wrong payloads "
            f"{row['wrong_payload']:.0f}"
        )
    if "false_alarms" in results:
        print(f"  false alarms: {json.dumps(results['false_alarms'])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
