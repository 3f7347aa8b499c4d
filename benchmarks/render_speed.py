"""Offline speed: real-time factor of the whole ``python -m avatar render`` command beside the engine's.

    .venv/bin/python benchmarks/render_speed.py [--audio FILE] [--portrait IMG] [--size 512] [--json OUT]
    .venv/bin/python benchmarks/render_speed.py --engine emo --size 256 --no-stages

Three real-time factors (seconds taken per second of audio; below 1 is faster than real time):

* ``command_rtf``: wall time of the whole ``python -m avatar render`` command, run as a subprocess:
  interpreter and import start-up, engine creation, portrait preparation (face mesh), audio decoding,
  rendering, watermarking, H.264 + AAC encoding and C2PA signing (the local self-signed identity);
* ``render_encode_rtf``: what that command prints (render + watermark + encoding, after preparation);
* ``engine_rtf``: the engine alone, in process: ``render_frames`` (windows, engine frames, watermark),
  no preparation, decoding or encoding.

Each comes twice: wall time (``*_rtf``) and CPU time (``*_cpu_rtf``: user + system seconds of the
process and its threads per second of audio). On a core the benchmark has to itself the two agree; when
other jobs share the core, wall time grows with their load and CPU time does not.

With ``--stages`` (parametric, the default) also the ms per frame of each stage with the hand-written
motion rules: audio features + motion (rules MotionGenerator.process), mesh warp + mouth + compositing
(PortraitRenderer.render), watermark embedding, H.264 encoding (libx264 veryfast, crf 23). Default audio:
8 s of english speech from ../shared/media/speech when present, else a generated vowel-burst signal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
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
from avatar.render import frame_count, render_file, render_frames  # noqa: E402
from avatar.stopwatch import Stopwatch  # noqa: E402

SHARED = ROOT.parent / "shared" / "media"


def command_rtf(args: argparse.Namespace, audio_seconds: float, out_dir: Path) -> dict:
    """Run ``python -m avatar render`` as a subprocess; its wall time and the RTF it prints."""
    cmd = [sys.executable, "-m", "avatar", "render", "--portrait", args.portrait, "--audio", args.audio,
           "--out", str(out_dir / "command.mp4"), "--engine", args.engine, "--size", str(args.size),
           "--quiet"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"render command failed: {done.stderr.strip()[-500:]}")
    printed = re.search(r"real-time factor ([0-9.]+)", done.stderr)
    return {
        "command_seconds": round(wall, 2),
        "command_rtf": round(wall / audio_seconds, 3),
        "command_cpu_seconds": round(cpu, 2),
        "command_cpu_rtf": round(cpu / audio_seconds, 3),
        "render_encode_rtf": float(printed.group(1)) if printed else None,
        "command_signed": "signed C2PA manifest" in done.stderr,
    }


def engine_rtf(engine_name: str, size: int, portrait: str, audio: np.ndarray) -> dict:
    """The engine alone: frames (watermarked) for ``audio`` in process, after portrait preparation."""
    engine = create_engine(engine_name, fps=25, size=size)
    wall, cpu = Stopwatch(), Stopwatch(time.process_time)
    with wall.stage("prepare"):
        avatar = engine.prepare(portrait)
    cpu.restart()
    with wall.stage("render"):
        frames = sum(1 for _ in render_frames(engine, avatar, audio, seed=0))
    cpu.lap("render")
    elapsed, used = wall.totals()["render"] / 1000, cpu.totals()["render"] / 1000
    return {"engine_prepare_ms": round(wall.totals()["prepare"], 1),
            "engine_ms_per_frame": round(elapsed * 1000 / frames, 2),
            "engine_rtf": round(elapsed / (len(audio) / 16000), 3),
            "engine_cpu_ms_per_frame": round(used * 1000 / frames, 2),
            "engine_cpu_rtf": round(used / (len(audio) / 16000), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--audio", default=str(SHARED / "speech" / "english_radio.wav"))
    parser.add_argument("--portrait", default=str(ROOT / "avatar" / "assets" / "astronaut.png"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--engine", default="parametric", help="parametric (default) or emo")
    parser.add_argument("--stages", action=argparse.BooleanOptionalAction, default=True,
                        help="also time each stage of the parametric engine (rules motion)")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args()

    if Path(args.audio).is_file():
        audio = load_audio(args.audio)
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from media import vowel_bursts

        audio = vowel_bursts(8.0)
    seconds = len(audio) / 16000
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {len(os.sched_getaffinity(0))} usable, "
                   f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "engine": args.engine,
        "size": args.size,
        "audio": Path(args.audio).name if Path(args.audio).is_file() else "vowel bursts",
        "audio_seconds": round(seconds, 2),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if Path(args.audio).is_file():
            results.update(command_rtf(args, seconds, Path(tmp)))
        results.update(engine_rtf(args.engine, args.size, args.portrait, audio))
    if args.stages and args.engine == "parametric":
        results.update(stages(args, audio))
    print("| measure | value |\n|---|---|")
    for key, value in results.items():
        print(f"| {key} | {value} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def stages(args: argparse.Namespace, audio: np.ndarray) -> dict:
    """Per-stage ms per frame of the parametric engine with the rules motion, and render_file's RTF."""
    seconds = len(audio) / 16000
    engine = create_engine("parametric", fps=25, size=args.size, motion="rules")
    watch = Stopwatch()  # ms per stage, for all frames
    with watch.stage("prepare"):
        avatar = engine.prepare(args.portrait)

    config = WindowConfig(fps=25)
    ring, vad = AudioRing(seconds + 2), VoiceActivity()
    ring.write(audio)
    vad.feed(audio)
    windower = Windower(config)
    total = frame_count(len(audio), 25)
    windows = list(windower.ready(ring, vad.speech_fraction)) + list(windower.flush(ring, total))

    motion = MotionGenerator(fps=25, seed=0)
    with watch.stage("motion"):
        motions = [m for w in windows for m in motion.process(w)][:total]

    renderer = PortraitRenderer(avatar.data)
    with watch.stage("render"):
        images = [renderer.render(m) for m in motions]

    marker, payload = Watermarker(), Payload.create()
    marker.prepare(payload, args.size, args.size)
    with watch.stage("watermark"):
        marked = [marker.embed(img, payload) for img in images]

    with tempfile.TemporaryDirectory() as tmp:
        with av.open(str(Path(tmp) / "v.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width = stream.height = args.size
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "23", "preset": "veryfast"}
            with watch.stage("encode"):
                for i, img in enumerate(marked):
                    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                    frame.pts = i
                    container.mux(stream.encode(frame))
                container.mux(stream.encode(None))
        wav = Path(tmp) / "a.wav"
        import wave

        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
        stats = render_file(engine, args.portrait, wav, Path(tmp) / "out.mp4")

    ms = watch.totals()
    motion_ms, render_ms, mark_ms, encode_ms = (
        ms[k] / total for k in ("motion", "render", "watermark", "encode")
    )
    per_frame = motion_ms + render_ms + mark_ms
    return {
        "frames": total,
        "prepare_ms": round(ms["prepare"], 1),
        "motion_ms_per_frame": round(motion_ms, 3),
        "render_ms_per_frame": round(render_ms, 2),
        "watermark_ms_per_frame": round(mark_ms, 3),
        "encode_ms_per_frame": round(encode_ms, 2),
        "live_ms_per_frame": round(per_frame, 2),
        "live_core_share_at_25fps": round(per_frame * 25 / 1000, 3),
        "rules_render_encode_rtf": round(stats.real_time_factor, 3),
    }


if __name__ == "__main__":
    sys.exit(main())
