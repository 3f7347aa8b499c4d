"""Capacity benchmark: N aiortc clients stream speech to one server at once; per-session quality.

    python benchmarks/many_sessions.py                          # N = 2, 4, 6 against a server it starts
    python benchmarks/many_sessions.py --sessions 4 --seconds 15 --json out/many.json
    python benchmarks/many_sessions.py --sessions 4 --set server.degrade=false

Each client is ``benchmarks/stream_benchmark.py``'s ``stream`` (silence, then speech, frames recorded
with arrival times) and is analysed with its ``analyse`` (delivered and fresh fps, repeat share, first
frame and first animated frame, stalls > 200 ms, mouth-to-photon from the MediaPipe mouth track, server
counters; see stream_benchmark.py for the definitions). Mouth tracking runs after streaming, so it does
not load the server. The clients run on the same machine as the server (decoding N video streams costs CPU
too), so the numbers are a lower bound for a server with the machine to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.audio.io import load_audio  # noqa: E402
from benchmarks.stream_benchmark import (  # noqa: E402
    DEFAULT_AUDIO,
    analyse,
    start_server,
    stream,
    write_json,
)

TARGET_FPS = 20.0


def speech_audio(path: str, silence_s: float, seconds: float) -> tuple[np.ndarray, float]:
    """``silence_s`` of silence, then speech (the file, else espeak-ng), padded to ``seconds``."""
    if Path(path).is_file():
        speech = load_audio(path)
    else:
        from tests.media import espeak_wav, vowel_bursts

        wav = espeak_wav(Path("/tmp") / "many_sessions.wav",
                         "Hello, I am a talking portrait. Papa made a big blue balloon for the party.")
        speech = load_audio(wav) if wav is not None else vowel_bursts(6.0, 16000)
    speech = speech[: int((seconds - silence_s) * 16000)]
    audio = np.zeros(int(seconds * 16000), np.float32)
    start = int(silence_s * 16000)
    audio[start : start + len(speech)] = speech
    return audio, len(speech) / 16000


def metrics_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


async def run_many(ws_url: str, audio: np.ndarray, count: int, stagger_s: float) -> list[dict]:
    async def one(k: int) -> dict:
        await asyncio.sleep(k * stagger_s)
        return await stream(ws_url, audio, None, 1.0)

    return await asyncio.gather(*(one(k) for k in range(count)))


def summarise(count: int, runs: list[dict], silence_s: float, speech_s: float) -> dict:
    sessions = []
    for run in runs:
        result = analyse(run, silence_s, speech_s)
        last = run["stats"][-1] if run["stats"] else {}
        result["degraded_at_end"] = last.get("degraded")
        result["windows_skipped"] = last.get("windows_skipped")
        sessions.append(result)
    fps = [s["fps"] for s in sessions]
    fresh = [s["fresh_fps"] for s in sessions if s["fresh_fps"] is not None]
    shares = [s["repeat_share"] for s in sessions if s["repeat_share"] is not None]
    animated = [s["first_animated_s"] for s in sessions if s["first_animated_s"] is not None]
    lags = [s["mouth_to_photon_ms"] for s in sessions if s["mouth_to_photon_ms"] is not None]
    corr = [s["lag_correlation"] for s in sessions if s["lag_correlation"] is not None]
    return {
        "sessions": count,
        "min_fps": min(fps),
        "mean_fps": round(float(np.mean(fps)), 2),
        "min_fresh_fps": min(fresh) if len(fresh) == count else None,
        "mean_fresh_fps": round(float(np.mean(fresh)), 2) if fresh else None,
        "max_repeat_share": max(shares) if shares else None,
        "first_frame_s_max": max(s["first_frame_s"] for s in sessions),
        "first_animated_s_max": max(animated) if len(animated) == count else None,
        "max_stalls": max(s["stalls"] for s in sessions),
        "max_gap_ms": max(s["max_gap_ms"] for s in sessions),
        "mouth_to_photon_ms_max": max(lags) if lags else None,
        "lag_correlation_min": min(corr) if corr else None,
        "engine_ms_mean": round(float(np.mean([s["server_engine_ms_per_frame"] or 0 for s in sessions])), 2),
        "windows_dropped": sum(s["server_windows_dropped"] or 0 for s in sessions),
        "windows_skipped": sum(s["windows_skipped"] or 0 for s in sessions),
        "frames_repeated": sum(s["server_frames_repeated"] or 0 for s in sessions),
        "sustained": (min(fps) >= TARGET_FPS and len(fresh) == count and min(fresh) >= TARGET_FPS
                      and all(c >= 0.3 for c in corr) and len(corr) == count),
        "per_session": sessions,
    }


def table(results: list[dict]) -> str:
    keys = ["sessions", "min_fps", "mean_fps", "min_fresh_fps", "mean_fresh_fps", "max_repeat_share",
            "first_frame_s_max", "first_animated_s_max", "max_stalls", "max_gap_ms", "mouth_to_photon_ms_max",
            "lag_correlation_min", "engine_ms_mean", "windows_dropped", "windows_skipped", "frames_repeated",
            "sustained"]
    rows = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for result in results:
        rows.append("| " + " | ".join(str(result[k]) for k in keys) + " |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", default="2,4,6", help="comma-separated session counts to try")
    parser.add_argument("--seconds", type=float, default=14.0, help="seconds streamed by each client")
    parser.add_argument("--silence", type=float, default=2.0, help="seconds of silence before the speech")
    parser.add_argument("--stagger", type=float, default=0.3, help="seconds between client starts")
    parser.add_argument("--url", help="running server (default: start run_server.py on a free port)")
    parser.add_argument("--engine", default="parametric", help="engine for the server this script starts")
    parser.add_argument("--set", action="append", default=[], help="config override for the started server")
    parser.add_argument("--audio", default=str(DEFAULT_AUDIO), help="speech file (else espeak-ng)")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args()

    counts = [int(c) for c in args.sessions.split(",") if c.strip()]
    args.set = [f"server.max_sessions={max(counts)}", *args.set]
    audio, speech_s = speech_audio(args.audio, args.silence, args.seconds)
    process = None
    if args.url:
        url = args.url.rstrip("/")
    else:
        process, url = start_server(args)
    results = []
    try:
        ws_url = url.replace("http://", "ws://").replace("https://", "wss://") + "/ws"
        for count in counts:
            started = time.monotonic()
            runs = asyncio.run(run_many(ws_url, audio, count, args.stagger))
            result = summarise(count, runs, args.silence, speech_s)
            result["wall_s"] = round(time.monotonic() - started, 1)
            results.append(result)
            print(table([result]).splitlines()[-1], flush=True)
            time.sleep(2.0)  # let the sessions close before the next round
        tail = [line for line in metrics_text(url).splitlines() if line.startswith("avatar_") and " " in line
                and "_bucket" not in line]
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    print(table(results))
    print("\n".join(tail))
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
