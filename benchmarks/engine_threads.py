"""N live sessions' engine threads in one process, without WebRTC: fresh fps and CPU per frame.

    taskset -c 0,1 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engine_threads.py \
        [--sessions 2,4,6] [--seconds 12] [--size 512] [--no-batching] [--json out/engine_threads.json]

What a server's engine threads do for N sessions, and nothing else: each session is a thread that asks its
``ParametricSession`` (learned motion + mesh-warp render) wrapped in the provenance watermark, as the
server's ``EngineWorker`` does, for one frame per 40 ms tick (the server's one-frame windows, 80 ms of
look-ahead), with real speech (``../shared/media/speech``, each session from another offset; a vowel-burst
voice when missing). A thread that falls behind renders its late frames back to back (no skipping), so
``fresh fps`` = frames made per second of wall time, and ``late`` is the share of frames finished more than
one tick after they were due. ``CPU ms per frame`` is the process's user + system time over all frames.

It is the engine's share of a session's cost (the server adds colour conversion + VP8 in its executor, the
event loop's RTP/SRTP/pacing and Opus decoding: about 5.5 ms a frame at 512², docs/benchmarks.md); it
shows how the engine threads of N sessions share the cores, and what sampling the motion of concurrent
sessions in one batch saves (``--no-batching`` gives each session its own sampler calls).
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.engine import SAMPLE_RATE, AudioWindow  # noqa: E402
from avatar.engines import create_engine  # noqa: E402
from avatar.motion import learned  # noqa: E402
from avatar.motion.sampler import denoise  # noqa: E402
from avatar.provenance.marked_session import WatermarkedSession  # noqa: E402
from benchmarks.many_sessions import speech_audio  # noqa: E402
from benchmarks.stream_benchmark import DEFAULT_AUDIO, own_cpu_s, write_json  # noqa: E402

FPS = 25.0
LEFT_S, RIGHT_S = 0.2, 0.08


def run_sessions(engine, avatar, audio: np.ndarray, sessions: int, seconds: float) -> dict:
    """``sessions`` paced engine threads for ``seconds``: per-session fresh fps and late share, CPU."""
    spf = int(SAMPLE_RATE / FPS)
    made, late, spans = [0] * sessions, [0] * sessions, [1.0] * sessions
    start_gate = threading.Barrier(sessions + 1)

    def session(i: int) -> None:
        worker = WatermarkedSession(engine.new_session(avatar, seed=i), size=avatar.image.shape[0])
        offset = int(i * 1.37 * SAMPLE_RATE)
        start_gate.wait()
        t0 = time.monotonic()
        frame = 0
        while time.monotonic() - t0 < seconds:
            due = t0 + (frame + 1) / FPS + RIGHT_S  # its audio has arrived
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            first = max(0, frame * spf - int(LEFT_S * SAMPLE_RATE))
            stop = (frame + 1) * spf + int(RIGHT_S * SAMPLE_RATE)
            samples = np.take(audio, np.arange(first + offset, stop + offset), mode="wrap")
            worker.process(AudioWindow(samples, first, frame, 1, FPS, frame, speech=1.0))
            if time.monotonic() - due > 1.0 / FPS:
                late[i] += 1
            frame += 1
        made[i] = frame
        spans[i] = time.monotonic() - t0 - RIGHT_S  # frame f is due (f + 1) / FPS + RIGHT_S after t0

    threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(sessions)]
    for t in threads:
        t.start()
    before = own_cpu_s()
    start_gate.wait()
    wall0 = time.monotonic()
    for t in threads:
        t.join()
    wall = time.monotonic() - wall0
    cpu = own_cpu_s() - before
    fps = [n / span for n, span in zip(made, spans, strict=True)]
    return {
        "sessions": sessions,
        "fresh_fps_min": round(min(fps), 2),
        "fresh_fps_mean": round(float(np.mean(fps)), 2),
        "late_share_max": round(max(n_late / max(n, 1) for n_late, n in zip(late, made, strict=True)), 3),
        "cpu_ms_per_frame": round(1000.0 * cpu / max(sum(made), 1), 2),
        "cores_busy": round(cpu / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="2,4,6")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--portrait", default=str(ROOT / "avatar" / "assets" / "astronaut.png"))
    parser.add_argument("--no-batching", action="store_true",
                        help="each session samples its motion alone (no DenoiseBatcher)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.no_batching:
        learned.MotionModel.batcher = lambda model, settings: functools.partial(denoise, model.net,
                                                                                 settings=settings)
    engine = create_engine("parametric", fps=FPS, size=args.size)
    avatar = engine.prepare(args.portrait)
    audio, _ = speech_audio(DEFAULT_AUDIO, 0.0, 20.0)
    rows = []
    model = learned.load_motion_model()
    batcher = None if args.no_batching else model.batcher(model.settings)  # the one the sessions share
    for n in [int(s) for s in args.sessions.split(",")]:
        calls, frames = (batcher.calls, batcher.frames) if batcher else (0, 0)
        row = run_sessions(engine, avatar, audio, n, args.seconds)
        if batcher is not None:
            row["mean_motion_batch"] = round((batcher.frames - frames) / max(batcher.calls - calls, 1), 2)
        rows.append(row)
        print(row, flush=True)
    write_json(args.json, {"size": args.size, "batching": not args.no_batching, "rows": rows,
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})


if __name__ == "__main__":
    main()
