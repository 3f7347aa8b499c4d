"""Where a session's milliseconds go: CPU ms per video frame of each stage of one parametric session.

    taskset -c 1 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/session_cost.py \
        [--sizes 512,384,256] [--seconds 20] [--portrait IMG] [--encoders 10] [--stream] [--json OUT]

**Stages, offline** (one process, one thread, frame by frame in the server's order): 20 s of speech
(``../shared/media/speech``: english_radio, german1, italian1 joined, cut to ``--seconds``; a synthetic
vowel-burst voice when they are missing) is cut into the server's one-frame windows (``WindowConfig``
defaults) and goes through what a live session does to each frame:

* ``motion``: the learned motion sampler (the default) turning the window into a ``FaceMotion``;
* ``render``: ``PortraitRenderer.render``, split into the renderer's own ``stage_ms``;
* ``watermark``: the provenance mark (``Watermarker.embed``, as ``WatermarkedSession`` applies it);
* ``wrap``: ``server.video_track.video_frame``, the rgb24 ``av.VideoFrame`` ``PacedVideoTrack.recv``
  sends (before 2026-12-07 a copy, ``VideoFrame.from_ndarray``; now the picture's memory wrapped);
* ``rgb_to_yuv``: ``frame.reformat(format="yuv420p")``, what aiortc's encoders do first;
* ``vp8``: the VP8 encoder the server's senders use (``video.encoding: rendered``, the default:
  aiortc's ``Vp8Encoder`` without the denoiser at cpu-used -12, server/video_encoders.py; before
  2026-12-08 aiortc's own settings), 500 kbps, encoding and packetising that yuv420p frame;
* ``h264``: the same for ``H264Encoder`` (libx264 at ``preset superfast``, 1 Mbps) on the same frame (a
  session uses one of the two: VP8 with the pages and aiortc clients, which offer it first);
* ``vp8_repeat``: what a *repeated* tick costs the VP8 encoder (a second encoder is given every picture
  twice; the second encode is timed): the track sends the last picture again when the engine is late.

``wrap_ab`` compares the track's wrap + the encoder's conversion per picture with the copying wrap the
track used before (``VideoFrame.from_ndarray``), interleaved (6 rounds of 100 pictures each), medians.

Times are ``time.thread_time()`` (CPU time of the benchmark's thread): unlike wall time they do not
grow when other jobs share the core. ``other_threads`` is the process's CPU time minus the thread's
over the loop (work done in codec helper threads, which thread time would miss; ~0 means none).

**Streaming overhead** (``--stream``): starts ``run_server.py`` (its default avatar and
framing) inside a wrapper that samples each server thread's CPU time from ``/proc`` (utime + stime,
10 ms ticks) and streams ``--seconds`` of the same speech to it from an aiortc client
(``benchmarks/stream_benchmark.py``'s client, in this process). Over the steady part (from 3 s after
the offer to the end of the audio) it reports CPU ms per sent frame of the server's threads: the
engine thread (motion + render + watermark), the default executor (aiortc's colour conversion and
encoding), the event loop (pacing, the track, RTP/SRTP/RTCP, signalling, audio input) and the audio
decoder; the loop's and decoder's share is the session's Python/asyncio overhead. The server runs with
its defaults (512², ``engine.size``). The script is also that wrapper:
``session_cost.py --serve CPU_LOG -- <run_server.py arguments>``.

**Encoder settings** (``--encoders SECONDS``): the session's 512² frames encoded by PyAV encoders set up
as aiortc 1.16 sets up its VP8 and H.264 encoders, with one setting changed per row (VP8 cpu-used,
noise-sensitivity; x264 preset): CPU ms per frame, kbps and PSNR of the decoded frames.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.audio.io import load_audio  # noqa: E402
from avatar.audio.vad import VoiceActivity  # noqa: E402
from avatar.audio.windowing import AudioRing, WindowConfig, Windower  # noqa: E402
from avatar.face.renderer import PortraitRenderer  # noqa: E402
from avatar.motion import create_motion  # noqa: E402
from avatar.parametric.engine import ParametricEngine  # noqa: E402
from avatar.provenance import Payload  # noqa: E402
from avatar.provenance.marked_session import shared_watermarker  # noqa: E402
from avatar.render import frame_count, render_frames  # noqa: E402
from server.video_encoders import rendered_get_encoder  # noqa: E402
from server.video_track import video_frame  # noqa: E402

SHARED_SPEECH = ROOT.parent / "shared" / "media" / "speech"
SPEECH_FILES = ("english_radio.wav", "german1.wav", "italian1.wav")
DEFAULT_PORTRAIT = ROOT / "avatar" / "assets" / "astronaut.png"
FPS = 25
FRAME_BUDGET_MS = 1000.0 / FPS
VIDEO_TIME_BASE = 90000
VIDEO_FRACTION = fractions.Fraction(1, VIDEO_TIME_BASE)
PIPELINE = ("motion", "render", "watermark", "wrap", "rgb_to_yuv", "vp8", "h264", "vp8_repeat")
ENGINE_STAGES = ("motion", "render", "watermark")
SEND_STAGES = ("wrap", "rgb_to_yuv", "vp8")
"""What a session pays per frame besides the engine, with VP8 (the codec the pages negotiate)."""


def speech(seconds: float) -> tuple[np.ndarray, str]:
    """16 kHz mono float32 of ``seconds`` and its description."""
    files = [SHARED_SPEECH / name for name in SPEECH_FILES if (SHARED_SPEECH / name).is_file()]
    if files:
        audio = np.concatenate([load_audio(f) for f in files])
        if len(audio) < seconds * 16000:
            audio = np.tile(audio, int(np.ceil(seconds * 16000 / len(audio))))
        return audio[: int(seconds * 16000)], " + ".join(f.name for f in files)
    from tests.media import vowel_bursts

    return vowel_bursts(seconds), "synthetic vowel bursts (tests/media.py)"


def video_encoder(mime: str):  # noqa: ANN201 - aiortc's Encoder
    """The encoder for ``mime`` as the server's ``RTCRtpSender`` gets it (``video.encoding: rendered``)."""
    codec = RTCRtpCodecParameters(mimeType=mime, clockRate=VIDEO_TIME_BASE, payloadType=96)
    return rendered_get_encoder(codec)


def stage_costs(size: int, portrait: str, audio: np.ndarray, seed: int = 0) -> dict:
    """Mean CPU ms per frame of every stage of ``PIPELINE`` (and the renderer's sub-stages) at ``size``."""
    engine = ParametricEngine(fps=FPS, size=size, framing="head_and_shoulders")
    avatar = engine.prepare(portrait)
    motion = create_motion(engine.motion, FPS, seed, engine.motion_model)
    renderer = PortraitRenderer(avatar.data)
    renderer.clock = time.thread_time
    marker, payload = shared_watermarker(), Payload.create()
    marker.prepare(payload, size, size)
    vp8, h264 = video_encoder("video/VP8"), video_encoder("video/H264")
    vp8_again = video_encoder("video/VP8")  # gets every picture twice: the second is a repeat

    config = WindowConfig(fps=FPS)
    ring, vad = AudioRing(len(audio) / 16000 + 2.0), VoiceActivity()
    ring.write(audio)
    vad.feed(audio)
    total = frame_count(len(audio), FPS)
    windower = Windower(config)
    windows = [*windower.ready(ring, vad.speech_fraction), *windower.flush(ring, total, vad.speech_fraction)]

    totals = dict.fromkeys(PIPELINE, 0.0)
    render_parts: dict[str, float] = {}
    vp8_bytes = 0
    frames = 0
    thread0, process0 = time.thread_time(), time.process_time()
    for window in windows:
        t = time.thread_time()
        motions = motion.process(window)
        laps = {"motion": time.thread_time() - t}
        for m in motions:
            if frames >= total:
                break
            t = time.thread_time()
            image = renderer.render(m)
            laps["render"] = time.thread_time() - t
            for name, ms in renderer.stage_ms.items():
                render_parts[name] = render_parts.get(name, 0.0) + ms
            t = time.thread_time()
            image = marker.embed(image, payload)
            laps["watermark"] = time.thread_time() - t
            t = time.thread_time()
            frame = video_frame(image)
            frame.pts, frame.time_base = frames * VIDEO_TIME_BASE // FPS, VIDEO_FRACTION
            laps["wrap"] = time.thread_time() - t
            t = time.thread_time()
            yuv = frame.reformat(format="yuv420p")
            laps["rgb_to_yuv"] = time.thread_time() - t
            t = time.thread_time()
            payloads, _ = vp8.encode(yuv)
            laps["vp8"] = time.thread_time() - t
            vp8_bytes += sum(len(p) for p in payloads)
            vp8_again.encode(yuv)
            repeat = video_frame(image).reformat(format="yuv420p")
            repeat.pts, repeat.time_base = yuv.pts + 1, VIDEO_FRACTION
            t = time.thread_time()
            vp8_again.encode(repeat)
            laps["vp8_repeat"] = time.thread_time() - t
            t = time.thread_time()
            h264.encode(yuv)
            laps["h264"] = time.thread_time() - t
            for name, seconds in laps.items():
                totals[name] += seconds * 1000.0
            laps = {"motion": 0.0}
            frames += 1
    thread_s, process_s = time.thread_time() - thread0, time.process_time() - process0
    per_frame = {name: round(ms / frames, 3) for name, ms in totals.items()}
    engine_ms = sum(per_frame[s] for s in ENGINE_STAGES)
    session_ms = engine_ms + sum(per_frame[s] for s in SEND_STAGES)
    return {
        "size": size,
        "frames": frames,
        "ms_per_frame": per_frame,
        "render_stages_ms_per_frame": {k: round(v / frames, 3) for k, v in render_parts.items()},
        "other_threads_ms_per_frame": round((process_s - thread_s) * 1000.0 / frames, 3),
        "engine_ms_per_frame": round(engine_ms, 2),
        "session_ms_per_frame_vp8": round(session_ms, 2),
        "vp8_kbps": round(vp8_bytes * 8 * FPS / frames / 1000.0, 1),
    }


def wrap_ab(images: list[np.ndarray], rounds: int = 6) -> dict[str, float]:
    """Median CPU ms per picture of wrap + yuv420p conversion: the copying wrap vs ``video_frame``."""
    def copying(image: np.ndarray) -> av.VideoFrame:
        return av.VideoFrame.from_ndarray(image, format="rgb24")

    def run(wrap) -> float:  # noqa: ANN001
        cpu, held = 0.0, None
        for source in images:
            image = source.copy()  # a new engine picture each frame
            t = time.thread_time()
            frame = wrap(image)
            held = (frame, frame.reformat(format="yuv420p"))  # released at the next picture, as in aiortc
            cpu += time.thread_time() - t
        del held
        return cpu * 1000.0 / len(images)

    times: dict[str, list[float]] = {"copy (from_ndarray)": [], "video_frame (zero-copy)": []}
    for _ in range(rounds):
        times["copy (from_ndarray)"].append(run(copying))
        times["video_frame (zero-copy)"].append(run(video_frame))
    return {k: round(float(np.median(v)), 3) for k, v in times.items()}


# ------------------------------------------------------------------------------------ encoder settings
AIORTC_VP8_OPTIONS = {
    "cpu-used": "-6", "deadline": "realtime", "lag-in-frames": "0", "noise-sensitivity": "4",
    "overshoot-pct": "15", "partitions": "0", "static-thresh": "1", "undershoot-pct": "100",
}
"""``aiortc.codecs.vpx.Vp8Encoder``'s options (aiortc 1.16; also CBR at the bitrate, qmin 2, qmax 56)."""
ENCODER_CASES: tuple[tuple[str, dict[str, str]], ...] = (
    ("vp8", {}),
    ("vp8", {"noise-sensitivity": "0"}),
    ("vp8", {"cpu-used": "-12"}),
    ("vp8", {"cpu-used": "-12", "noise-sensitivity": "0"}),
    ("vp8", {"cpu-used": "-16", "noise-sensitivity": "0"}),
    ("h264", {}),
    ("h264", {"preset": "veryfast"}),
    ("h264", {"preset": "superfast"}),
    ("h264", {"preset": "ultrafast"}),
)
"""(codec, changes to aiortc's settings); ``{}`` is aiortc's own (libx264: no preset, i.e. medium)."""


def _codec_context(codec: str, changes: dict[str, str], size: int) -> av.CodecContext:
    """A PyAV encoder set up as aiortc 1.16 sets up its VP8 (500 kbps) or H.264 (1 Mbps) encoder."""
    if codec == "vp8":
        rate = 500_000
        context = av.CodecContext.create("libvpx", "w")
        context.gop_size, context.qmin, context.qmax = 3000, 2, 56
        options = {**AIORTC_VP8_OPTIONS, "bufsize": str(rate), "minrate": str(rate), "maxrate": str(rate)}
        context.thread_count = 1  # aiortc's number_of_threads() below 640x480
    else:
        rate = 1_000_000
        context = av.CodecContext.create("libx264", "w")
        context.framerate, context.time_base = fractions.Fraction(30, 1), fractions.Fraction(1, 30)
        options = {"level": "31", "tune": "zerolatency"}
        context.profile = "Baseline"
    context.width = context.height = size
    context.bit_rate = rate
    context.pix_fmt = "yuv420p"
    context.options = {**options, **changes}
    return context


def encoder_settings(images: list[np.ndarray]) -> list[dict]:
    """CPU ms per frame (process time: libx264 may use helper threads), kbps and PSNR (decoded vs the
    frame given, RGB, after the first second) of each ``ENCODER_CASES`` entry over ``images``."""
    frames = [av.VideoFrame.from_ndarray(i, format="rgb24").reformat(format="yuv420p") for i in images]
    rows = []
    for codec, changes in ENCODER_CASES:
        context = _codec_context(codec, changes, images[0].shape[0])
        decoder = av.CodecContext.create("libvpx" if codec == "vp8" else "h264", "r")
        cpu, size_bytes, errors = 0.0, 0, []
        for i, frame in enumerate(frames):
            frame.pts, frame.time_base = i * VIDEO_TIME_BASE // FPS, VIDEO_FRACTION
            frame.pict_type = av.video.frame.PictureType.NONE
            t = time.process_time()
            packets = context.encode(frame)
            payload = b"".join(bytes(p) for p in packets)
            cpu += time.process_time() - t
            size_bytes += len(payload)
            for packet in packets:
                for decoded in decoder.decode(packet):
                    if i >= FPS:
                        out = decoded.to_ndarray(format="rgb24").astype(np.float32)
                        errors.append(float(np.mean((out - images[i]) ** 2)))
        rows.append({
            "codec": codec,
            "settings": changes or "aiortc's",
            "ms_per_frame": round(cpu * 1000.0 / len(frames), 2),
            "kbps": round(size_bytes * 8 * FPS / len(frames) / 1000.0),
            "psnr_db": round(10 * np.log10(255.0**2 / np.mean(errors)), 2),
        })
    return rows


def rendered_frames(size: int, portrait: str, audio: np.ndarray) -> list[np.ndarray]:
    """The watermarked frames a session streams for ``audio`` (``avatar.render.render_frames``)."""
    engine = ParametricEngine(fps=FPS, size=size, framing="head_and_shoulders")
    return [f.image for f in render_frames(engine, engine.prepare(portrait), audio, seed=0)]


# ---------------------------------------------------------------------------------- streaming overhead
def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds (utime + stime) of this process and of each of its Python threads, by thread name."""
    tick = os.sysconf("SC_CLK_TCK")

    def read(path: str) -> float:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15 of stat)

    out = {"process": read("/proc/self/stat")}
    for thread in threading.enumerate():
        try:
            out[thread.name] = out.get(thread.name, 0.0) + read(f"/proc/self/task/{thread.native_id}/stat")
        except (OSError, TypeError):
            continue
    return out


def serve_sampled(log_path: str, server_args: list[str]) -> int:
    """Run the server (``server.main``) while a daemon thread logs per-thread CPU every 0.5 s."""
    def sample() -> None:
        with open(log_path, "a") as log:
            while True:
                log.write(json.dumps({"t": time.monotonic(), "cpu": thread_cpu_seconds()}) + "\n")
                log.flush()
                time.sleep(0.5)

    threading.Thread(target=sample, name="cpu-sampler", daemon=True).start()
    from server.main import main as server_main

    sys.argv = ["run_server.py", *server_args]
    return server_main()


def thread_group(name: str) -> str:
    if name.startswith("engine-"):
        return "engine thread (motion + render + watermark)"
    if name.startswith("asyncio_"):
        return "executor (colour conversion + VP8 encoding)"
    if name == "MainThread":
        return "event loop (pacing, track, RTP/SRTP/RTCP, audio input, signalling)"
    if name.endswith("-decoder"):
        return "audio decoder (Opus)"
    return "other threads"


def stream_overhead(seconds: float, audio: np.ndarray) -> dict:
    """CPU ms per sent frame of each server thread group over a real one-session stream."""
    import subprocess
    import tempfile

    from benchmarks.screenshot import wait_healthy
    from benchmarks.stream_benchmark import free_port, fresh_counts, stream

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "cpu.jsonl"
        port = free_port()
        cmd = [sys.executable, __file__, "--serve", str(log), "--", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
        # as server/__init__.py does, before numpy loads in the wrapper: one BLAS/OpenMP thread
        env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **os.environ}
        process = subprocess.Popen(cmd, cwd=ROOT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, process, timeout_s=120)
            padded = np.zeros(int(max(seconds, len(audio) / 16000 + 2.0) * 16000), np.float32)
            padded[32000: 32000 + len(audio)] = audio[: len(padded) - 32000]
            run = asyncio.run(stream(url.replace("http://", "ws://") + "/ws", padded, None, 0.5))
        finally:
            process.terminate()
            process.wait(timeout=20)
        samples = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    start, end = run["offered"] + 3.0, run["offered"] + len(padded) / 16000
    steady = [s for s in samples if start <= s["t"] <= end]
    if len(steady) < 4:
        raise SystemExit("session_cost: too few CPU samples in the steady part of the stream")
    first, last = steady[0], steady[-1]
    span = last["t"] - first["t"]
    counts = fresh_counts(run["stats"][3:])
    sent_fps = counts["sent_fps"] or FPS
    groups: dict[str, float] = {}
    for name, cpu in last["cpu"].items():
        if name in ("process", "cpu-sampler"):
            continue
        group = thread_group(name)
        groups[group] = groups.get(group, 0.0) + cpu - first["cpu"].get(name, 0.0)
    named = sum(groups.values())
    process_cpu = last["cpu"]["process"] - first["cpu"]["process"]
    sampler = last["cpu"].get("cpu-sampler", 0.0) - first["cpu"].get("cpu-sampler", 0.0)
    groups["not a Python thread (codec/native helpers)"] = max(0.0, process_cpu - named - sampler)
    ms = {k: round(v * 1000.0 / span / sent_fps, 2) for k, v in groups.items()}
    return {
        "steady_seconds": round(span, 1),
        "sent_fps": counts["sent_fps"],
        "fresh_fps": counts["fresh_fps"],
        "server_cpu_ms_per_sent_frame": round(process_cpu * 1000.0 / span / sent_fps, 2),
        "server_cpu_share_of_a_core": round(process_cpu / span, 3),
        "threads_ms_per_sent_frame": ms,
        "sampler_ms_per_sent_frame": round(sampler * 1000.0 / span / sent_fps, 3),
    }


# ---------------------------------------------------------------------------------------------- report
def table(rows: list[dict]) -> str:
    sizes = [r["size"] for r in rows]
    lines = ["| CPU ms per frame | " + " | ".join(f"{s}²" for s in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for stage in PIPELINE:
        lines.append(f"| {stage} | " + " | ".join(f"{r['ms_per_frame'][stage]:.2f}" for r in rows) + " |")
        if stage == "render":
            for part in rows[0]["render_stages_ms_per_frame"]:
                lines.append(f"| &nbsp; render: {part} | " + " | ".join(
                    f"{r['render_stages_ms_per_frame'].get(part, 0.0):.2f}" for r in rows) + " |")
    for key in ("engine_ms_per_frame", "session_ms_per_frame_vp8", "other_threads_ms_per_frame", "vp8_kbps"):
        lines.append(f"| {key} | " + " | ".join(f"{r[key]}" for r in rows) + " |")
    lines.append("| sessions per core at 25 fps (40 ms / session ms, VP8, stages only) | " + " | ".join(
        f"{FRAME_BUDGET_MS / r['session_ms_per_frame_vp8']:.1f}" for r in rows) + " |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        rest = sys.argv[3:]
        return serve_sampled(sys.argv[2], rest[1:] if rest[:1] == ["--"] else rest)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="512,384,256", help="output sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of speech")
    parser.add_argument("--portrait", default=str(DEFAULT_PORTRAIT))
    parser.add_argument("--stream", action="store_true", help="also measure a real stream's threads (512²)")
    parser.add_argument("--encoders", type=float, default=0.0, metavar="SECONDS",
                        help="also compare encoder settings on this many seconds of frames (512²)")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args()

    audio, described = speech(args.seconds)
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {len(os.sched_getaffinity(0))} usable, "
                   f"Python {platform.python_version()}, aiortc {__import__('aiortc').__version__}, "
                   f"PyAV {av.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "clock": "time.thread_time (CPU of the benchmark thread)",
        "audio": described,
        "audio_seconds": round(len(audio) / 16000, 2),
        "portrait": Path(args.portrait).name,
        "stages": [stage_costs(int(s), args.portrait, audio) for s in args.sizes.split(",")],
    }
    print(table(results["stages"]))
    images = rendered_frames(512, args.portrait, audio[: int(max(4.0, args.encoders) * 16000)])
    results["wrap_ab_ms_per_frame_512"] = wrap_ab(images[:100])
    print(f"\nwrap + conversion per 512² picture (CPU ms, median): {results['wrap_ab_ms_per_frame_512']}")
    if args.encoders > 0:
        results["encoder_settings"] = encoder_settings(images)
        print("\n| codec | settings (changes to aiortc's) | CPU ms/frame | kbps | PSNR dB |")
        print("|---|---|---|---|---|")
        for row in results["encoder_settings"]:
            print(f"| {row['codec']} | {row['settings']} | {row['ms_per_frame']} | {row['kbps']} | "
                  f"{row['psnr_db']} |")
    del images
    if args.stream:
        results["stream"] = stream_overhead(args.seconds, audio)
        print("\nreal stream, 512², one session, server CPU per sent frame:")
        for key, value in results["stream"].items():
            print(f"  {key}: {value}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
