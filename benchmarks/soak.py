"""Soak test: one session streaming speech for a long time; drift, memory growth and stalls at the end.

    python benchmarks/soak.py                      # 3600 s against a server it starts (parametric)
    python benchmarks/soak.py --seconds 600 --json out/soak.json
    python benchmarks/soak.py --url http://127.0.0.1:8080 --server-pid 1234

The client loops speech (``--audio``, else espeak-ng, else vowel bursts) with pauses in real time, and
keeps only counters (no frames), so it can run for hours. Reported:

* drift: received video ``pts`` span vs client wall clock; server frames sent / fps, the audio
  timeline (``timeline_s``) and ``uptime_s`` against each other; and the change of the A/V offset
  (frame on screen vs audio timeline) between the first minute and the end;
* memory: the server process's VmRSS (``/proc/<pid>/status``) after warm-up and at the end;
* stalls: gaps over 200 ms between received frames; server repeats, drops, degraded time;
* fresh vs delivered: client fps (frames received) beside the server's fresh fps (new engine pictures,
  ``frames_fresh``) from warm-up to the end, the share of repeats, and the first frame / first animated
  frame (definitions in stream_benchmark.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stream_benchmark import (  # noqa: E402
    DEFAULT_AUDIO,
    STALL_S,
    exchange_offer,
    fresh_counts,
    start_server,
    write_json,
)
from tests.paced_audio import PacedAudioTrack  # noqa: E402

RTP_WRAP = 2**32


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (VmRSS), or None when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def speech_clip(path: str | None) -> np.ndarray:
    """16 kHz mono float32 speech followed by 2 s of silence (looped by the track)."""
    from avatar.audio.io import load_audio

    audio = None
    if path and Path(path).is_file():
        audio = load_audio(path)
    else:
        from tests.media import espeak_wav, vowel_bursts

        wav = espeak_wav(Path("/tmp") / "soak_speech.wav",
                         "The quick brown fox jumps over the lazy dog. Papa made a big blue balloon.")
        audio = load_audio(wav) if wav is not None else vowel_bursts(4.0, 16000)
    audio = audio[: 16000 * 20]
    return np.concatenate([audio, np.zeros(32000, np.float32)]).astype(np.float32)


class FrameCounter:
    """Counts received video frames, gaps over ``STALL_S`` and the unwrapped RTP pts span."""

    def __init__(self) -> None:
        self.count = 0
        self.stalls = 0
        self.max_gap = 0.0
        self.first: tuple[float, int] | None = None  # (arrival, pts)
        self.last: tuple[float, int] | None = None
        self._pts = 0
        self._raw = 0

    async def run(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if self.last is not None:
                    gap = now - self.last[0]
                    self.max_gap = max(self.max_gap, gap)
                    self.stalls += gap > STALL_S
                    self._pts += (int(frame.pts) - self._raw) % RTP_WRAP
                self._raw = int(frame.pts)
                self.last = (now, self._pts)
                if self.first is None:
                    self.first = self.last
                self.count += 1
        except MediaStreamError:
            return


async def soak(ws_url: str, seconds: float, clip: np.ndarray, server_pid: int | None,
               sample_s: float = 60.0) -> dict:
    pc = RTCPeerConnection()
    pc.addTrack(PacedAudioTrack(clip, loop=True))
    pc.addTransceiver("video", direction="recvonly")
    counter = FrameCounter()
    tasks: list[asyncio.Task] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video":
            tasks.append(asyncio.ensure_future(counter.run(track)))

    stats: list[dict] = []
    samples: list[dict] = []
    async with connect(ws_url) as ws:
        await pc.setLocalDescription(await pc.createOffer())
        offered = time.monotonic()
        await exchange_offer(ws, pc, {"type": "offer", "sdp": pc.localDescription.sdp})

        async def collect() -> None:
            async for raw in ws:
                event = json.loads(raw)
                if event.get("type") == "stats":
                    stats.append(event)
                    del stats[:-5]
                    if stats and (not samples or event["uptime_s"] - samples[-1]["uptime_s"] >= sample_s):
                        samples.append({**event, "rss_mb": rss_mb(server_pid) if server_pid else None,
                                        "client_frames": counter.count, "client_stalls": counter.stalls})
                        print(json.dumps({k: samples[-1][k] for k in (
                            "uptime_s", "fps", "frames_sent", "timeline_s", "shown_frame", "rss_mb",
                            "client_stalls", "windows_dropped", "degraded")}), flush=True)

        collector = asyncio.ensure_future(collect())
        started = time.monotonic()
        while time.monotonic() - started < seconds and not collector.done():
            await asyncio.sleep(1.0)
        final = {**(stats[-1] if stats else {}), "rss_mb": rss_mb(server_pid) if server_pid else None}
        collector.cancel()
    await pc.close()
    for task in tasks:
        task.cancel()
    return {"samples": samples, "final": final, "counter": counter, "seconds": seconds, "offered": offered}


def analyse(run: dict, fps: float) -> dict:
    samples, final, counter = run["samples"], run["final"], run["counter"]
    if not final or counter.first is None or counter.last is None:
        raise SystemExit("no stats or no video arrived")
    wall = counter.last[0] - counter.first[0]
    pts_s = (counter.last[1] - counter.first[1]) / 90000.0
    warm = next((s for s in samples if s["uptime_s"] >= 30), samples[0] if samples else final)

    def av_offset(s: dict) -> float:
        return s["shown_frame"] / fps - s["timeline_s"]

    rss0, rss1 = warm.get("rss_mb"), final.get("rss_mb")
    counts = fresh_counts([warm, final] if warm is not final else [final])
    first_frame_s = counter.first[0] - run["offered"]
    first_animated_s = None
    if counts["server_first_animated_s"] is not None and counts["server_first_frame_s"] is not None:
        first_animated_s = round(
            first_frame_s + counts["server_first_animated_s"] - counts["server_first_frame_s"], 3)
    hours = max(1e-6, (final["uptime_s"] - warm["uptime_s"]) / 3600)
    return {
        "seconds": round(final["uptime_s"], 1),
        "client_frames": counter.count,
        "client_fps": round(counter.count / max(wall, 1e-6), 3),
        "server_fresh_fps": counts["fresh_fps"],
        "server_sent_fps": counts["sent_fps"],
        "repeat_share": counts["repeat_share"],
        "first_frame_s": round(first_frame_s, 3),
        "first_animated_s": first_animated_s,
        "drift_video_pts_vs_client_wall_ms": round((pts_s - wall) * 1000, 1),
        "drift_server_frames_vs_uptime_ms": round((final["frames_sent"] / fps - final["uptime_s"]) * 1000, 1),
        "drift_audio_timeline_vs_uptime_ms": round((final["timeline_s"] - final["uptime_s"]) * 1000, 1),
        "av_offset_start_ms": round(av_offset(warm) * 1000, 1),
        "av_offset_end_ms": round(av_offset(final) * 1000, 1),
        "av_offset_change_ms": round((av_offset(final) - av_offset(warm)) * 1000, 1),
        "rss_warm_mb": round(rss0, 1) if rss0 else None,
        "rss_end_mb": round(rss1, 1) if rss1 else None,
        "rss_growth_mb_per_hour": round((rss1 - rss0) / hours, 1) if rss0 and rss1 else None,
        "client_stalls_over_200ms": counter.stalls,
        "client_max_gap_ms": round(counter.max_gap * 1000, 1),
        "server_frames_repeated": final.get("frames_repeated"),
        "server_frames_dropped": final.get("frames_dropped"),
        "server_windows_dropped": final.get("windows_dropped"),
        "server_windows_skipped": final.get("windows_skipped"),
        "server_latency_ms_end": final.get("latency_ms"),
        "rss_samples_mb": [s.get("rss_mb") and round(s["rss_mb"], 1) for s in samples],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3600.0, help="how long to stream (default 3600)")
    parser.add_argument("--url", help="running server (default: start run_server.py on a free port)")
    parser.add_argument("--server-pid", type=int, help="pid of the --url server, for its memory")
    parser.add_argument("--engine", default="parametric", help="engine for the server this script starts")
    parser.add_argument("--set", action="append", default=[], help="config override for the started server")
    parser.add_argument("--audio", default=str(DEFAULT_AUDIO), help="speech file to loop (else espeak-ng)")
    parser.add_argument("--fps", type=float, default=25.0, help="the server's engine.fps")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between progress lines")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args()

    process, pid = None, args.server_pid
    if args.url:
        url = args.url.rstrip("/")
    else:
        process, url = start_server(args)
        pid = process.pid
    try:
        ws_url = url.replace("http://", "ws://").replace("https://", "wss://") + "/ws"
        run = asyncio.run(soak(ws_url, args.seconds, speech_clip(args.audio), pid, args.sample))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    result = analyse(run, args.fps)
    for key, value in result.items():
        print(f"| {key} | {value} |")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
