"""Offline speed of the parametric engine: real-time factor and per-stage ms per frame.

    .venv/bin/python benchmarks/render_speed.py [--audio FILE] [--portrait IMG] [--size 512] [--json OUT]

Stages, each timed over the whole file: audio features + motion (MotionGenerator.process), mesh warp +
mouth + compositing (PortraitRenderer.render), watermark embedding, H.264 encoding (libx264 veryfast,
crf 23), and the end-to-end ``python -m avatar render`` path. Default audio: 8 s of english speech from
../shared/media/speech when present, else a generated vowel-burst signal.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.audio.io import load_audio  # noqa: E402
from avatar.audio.vad import VoiceActivity  # noqa: E402
from avatar.audio.windowing import AudioRing, WindowConfig, Windower  # noqa: E402
from avatar.engines import create_engine  # noqa: E402
from avatar.face.renderer import PortraitRenderer  # noqa: E402
from avatar.motion.rules import MotionGenerator  # noqa: E402
from avatar.provenance import Payload, Watermarker  # noqa: E402
from avatar.render import frame_count, render_file  # noqa: E402

SHARED = ROOT.parent / "shared" / "media"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--audio", default=str(SHARED / "speech" / "english_radio.wav"))
    parser.add_argument("--portrait", default=str(ROOT / "avatar" / "assets" / "astronaut.png"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args()

    if Path(args.audio).is_file():
        audio = load_audio(args.audio)
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from media import vowel_bursts

        audio = vowel_bursts(8.0)
    seconds = len(audio) / 16000
    engine = create_engine("parametric", fps=25, size=args.size)
    t0 = time.perf_counter()
    avatar = engine.prepare(args.portrait)
    prepare_ms = (time.perf_counter() - t0) * 1000

    config = WindowConfig(fps=25)
    ring, vad = AudioRing(seconds + 2), VoiceActivity()
    ring.write(audio)
    vad.feed(audio)
    windower = Windower(config)
    total = frame_count(len(audio), 25)
    windows = list(windower.ready(ring, vad.speech_fraction)) + list(windower.flush(ring, total))

    motion = MotionGenerator(fps=25, seed=0)
    t0 = time.perf_counter()
    motions = [m for w in windows for m in motion.process(w)][:total]
    motion_ms = (time.perf_counter() - t0) * 1000 / total

    renderer = PortraitRenderer(avatar.data)
    t0 = time.perf_counter()
    images = [renderer.render(m) for m in motions]
    render_ms = (time.perf_counter() - t0) * 1000 / total

    marker, payload = Watermarker(), Payload.create()
    marker.prepare(payload, args.size, args.size)
    t0 = time.perf_counter()
    marked = [marker.embed(img, payload) for img in images]
    mark_ms = (time.perf_counter() - t0) * 1000 / total

    with tempfile.TemporaryDirectory() as tmp:
        with av.open(str(Path(tmp) / "v.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width = stream.height = args.size
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "23", "preset": "veryfast"}
            t0 = time.perf_counter()
            for i, img in enumerate(marked):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
            encode_ms = (time.perf_counter() - t0) * 1000 / total
        wav = Path(tmp) / "a.wav"
        import wave

        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
        stats = render_file(engine, args.portrait, wav, Path(tmp) / "out.mp4")

    per_frame = motion_ms + render_ms + mark_ms
    results = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "size": args.size,
        "audio_seconds": round(seconds, 2),
        "frames": total,
        "prepare_ms": round(prepare_ms, 1),
        "motion_ms_per_frame": round(motion_ms, 3),
        "render_ms_per_frame": round(render_ms, 2),
        "watermark_ms_per_frame": round(mark_ms, 3),
        "encode_ms_per_frame": round(encode_ms, 2),
        "live_ms_per_frame": round(per_frame, 2),
        "live_core_share_at_25fps": round(per_frame * 25 / 1000, 3),
        "offline_real_time_factor": round(stats.real_time_factor, 3),
    }
    print("| measure | value |\n|---|---|")
    for key, value in results.items():
        print(f"| {key} | {value} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
