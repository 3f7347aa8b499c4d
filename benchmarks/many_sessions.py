"""Capacity benchmark: N aiortc clients stream speech to one server at once; per-session quality.

    python benchmarks/many_sessions.py                          # N = 2, 4, 6 against a server it starts
    python benchmarks/many_sessions.py --sessions 4 --seconds 15 --json out/many.json
    python benchmarks/many_sessions.py --sessions 4 --set server.degrade=false
    python benchmarks/many_sessions.py --light --sessions 1,2,4,6,8 --seconds 14 --json out/many_light.json
    python benchmarks/many_sessions.py --light --lip-sync --sessions 6   # + mouth-to-photon by reference

Each client is ``benchmarks/stream_benchmark.py``'s ``stream`` (silence, then speech, frames recorded
with arrival times) and is analysed with its ``analyse`` (delivered and fresh fps, repeat share, first
frame and first animated frame, stalls > 200 ms, mouth-to-photon from the MediaPipe mouth track, server
counters; see stream_benchmark.py for the definitions). Mouth tracking runs after streaming, so it does
not load the server. The clients run on the same machine as the server (decoding N video streams costs CPU
too), so the numbers are a lower bound for a server with the machine to itself.

``--light``: the clients negotiate the same sessions and send the same speech but do not decode the video
(stream_benchmark.py's ``EncodedFrameCounter``; their speech is Opus-encoded once, before the rounds,
and sent paced in real time): delivered fps is distinct RTP timestamps of complete
encoded frames per second, fresh fps / repeats / first animated frame / audio-in to frame-out come from
the server's ``stats`` events, and mouth-to-photon is not measured (it needs decoded pictures) unless
``--lip-sync`` is given. A light client cost about a third of the CPU of a decoding one here (0.035-0.04
vs 0.12-0.13 of a core for one 512 px session, 2026-12-08), so the server gets most of the machine.

``--lip-sync``: every client (light or not) is also measured against a reference mouth track
(benchmarks/lip_sync.py): light clients keep their encoded frames and decode them after the round (no cost
to the live run); each session's speech, as the server heard it, is rendered offline with that session's
seed (the ``seed`` the server reports in its ``stats`` events; from an older server ``engine.seed + n``, n
taken from the order of the offers counted from ``--first-session``), renders cached under
out/lip_sync_reference/. Each session gains ``mouth_to_photon_ref_ms`` and ``lag_ref_correlation`` (the
envelope method's ``mouth_to_photon_ms`` / ``lag_correlation`` are reported too), the rounds
``mouth_to_photon_ref_ms_max`` and ``lag_ref_correlation_min``. Lip sync counts as intact (for
``sustained``) when every session has ``lag_ref_correlation`` >= 0.5 and ``mouth_to_photon_ref_ms`` <= 350;
without ``--lip-sync``, decoding clients use the envelope (r >= 0.3) and light ones are not judged. Behind a
cluster gateway (``python -m server.cluster local``) the reported seeds are what make this work: each node
numbers its own sessions (6 x 256 px on two nodes, 2026-12-08: r >= 0.88).

Every round also reports the CPU the server process used (``/proc/<pid>/stat``, all its threads; only for
the server this script starts) per frame it sent and per fresh frame (``avatar_frames_sent_total`` and
``avatar_frames_fresh_total`` from ``/metrics``), and the CPU of this process, i.e. of all the clients
(``client_cpu_share``: cores busy, 1.0 = one core), both over the streaming part of the round (offers to
closed sessions; the analysis afterwards is not counted).
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
from benchmarks.lip_sync import References, session_seed, spec_from_config  # noqa: E402
from benchmarks.stream_benchmark import (  # noqa: E402
    DEFAULT_AUDIO,
    TARGETS,
    analyse,
    analyse_light,
    opus_packets,
    own_cpu_s,
    process_cpu_s,
    start_server,
    stream,
    write_json,
)

TARGET_FPS = 20.0
LIP_SYNC_MIN_REF_R = 0.5
"""Lowest ``lag_ref_correlation`` of a session whose lip sync counts as intact (a wrong seed gives ~0.2)."""


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


def metric_value(text: str, name: str) -> float | None:
    """The value of the unlabelled sample ``name`` in Prometheus text ``text`` (None when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def counter_delta(before: str, after: str, name: str) -> float | None:
    """How much counter ``name`` grew between two /metrics texts (None when either lacks it)."""
    first, last = metric_value(before, name), metric_value(after, name)
    return last - first if first is not None and last is not None else None


def cpu_figures(server_cpu_s: float | None, frames_sent: float | None, frames_fresh: float | None,
                client_cpu_s: float, wall_s: float, count: int) -> dict:
    """Server CPU ms per sent and per fresh frame and as cores busy (1.0 = one core), the clients' CPU as
    cores busy, in all and per session."""
    wall_s = max(wall_s, 1e-6)

    def per_frame(frames: float | None) -> float | None:
        return round(1000 * server_cpu_s / frames, 2) if server_cpu_s is not None and frames else None

    return {
        "server_cpu_s": round(server_cpu_s, 2) if server_cpu_s is not None else None,
        "frames_sent": int(frames_sent) if frames_sent is not None else None,
        "frames_fresh": int(frames_fresh) if frames_fresh is not None else None,
        "server_cpu_ms_per_frame": per_frame(frames_sent),
        "server_cpu_ms_per_fresh_frame": per_frame(frames_fresh),
        "server_cpu_share": round(server_cpu_s / wall_s, 3) if server_cpu_s is not None else None,
        "client_cpu_s": round(client_cpu_s, 2),
        "client_cpu_share": round(client_cpu_s / wall_s, 3),
        "client_cpu_share_per_session": round(client_cpu_s / wall_s / count, 4),
    }


async def run_many(ws_url: str, audio: np.ndarray, count: int, stagger_s: float,
                   light: bool = False, packets: list[bytes] | None = None,
                   size: int | None = None, keep_video: bool = False) -> list[dict]:
    async def one(k: int) -> dict:
        await asyncio.sleep(k * stagger_s)
        return await stream(ws_url, audio, None, 1.0, light=light, packets=packets, size=size,
                            keep_video=keep_video)

    return await asyncio.gather(*(one(k) for k in range(count)))


def number_sessions(runs: list[dict], first: int) -> None:
    """Set each run's ``session_number`` (the server's count of sessions opened, which seeds its motion):
    ``first``, ``first + 1``, ... in the order the offers were sent (``offered``)."""
    for number, run in enumerate(sorted(runs, key=lambda r: r["offered"]), start=first):
        run["session_number"] = number


def summarise(count: int, runs: list[dict], silence_s: float, speech_s: float, light: bool = False,
              references: References | None = None) -> dict:
    """Per-session figures (``analyse`` / ``analyse_light``) and the round's summary; with ``references``
    also mouth-to-photon by reference (runs numbered by ``number_sessions``; light runs need kept frames)."""
    sessions = []
    for run in runs:
        reference = None
        if references is not None:
            size = run["size"][0] if run.get("size") else None
            reference = references.track(size, session_seed(run, references.spec.seed, run["session_number"]))
        if light:
            result = analyse_light(run, silence_s, speech_s, reference)
        else:
            result = analyse(run, silence_s, speech_s, reference)
        if references is not None:
            result["session_number"] = run["session_number"]
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
    latency = [s["server_audio_in_to_frame_out_ms"] for s in sessions
               if s["server_audio_in_to_frame_out_ms"] is not None]
    kbps = [s["kbps"] for s in sessions if s.get("kbps") is not None]
    ref_lags = [s["mouth_to_photon_ref_ms"] for s in sessions if s.get("mouth_to_photon_ref_ms") is not None]
    ref_corr = [s["lag_ref_correlation"] for s in sessions if s.get("lag_ref_correlation") is not None]
    if references is not None:  # by reference: every session correlated and within the target
        lip_sync = (len(ref_corr) == len(ref_lags) == count and min(ref_corr) >= LIP_SYNC_MIN_REF_R
                    and max(ref_lags) <= TARGETS["mouth_to_photon_ms"])
    else:  # by the envelope for decoding clients; light clients without references: not measured
        lip_sync = light or (all(c >= 0.3 for c in corr) and len(corr) == count)
    return {
        "sessions": count,
        "light": light,
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
        "mouth_to_photon_ref_ms_max": max(ref_lags) if ref_lags else None,
        "lag_ref_correlation_min": min(ref_corr) if ref_corr else None,
        "audio_in_to_frame_out_ms_max": max(latency) if latency else None,
        "kbps_mean": round(float(np.mean(kbps)), 1) if kbps else None,  # light clients only
        "engine_ms_mean": round(float(np.mean([s["server_engine_ms_per_frame"] or 0 for s in sessions])), 2),
        "windows_dropped": sum(s["server_windows_dropped"] or 0 for s in sessions),
        "windows_skipped": sum(s["windows_skipped"] or 0 for s in sessions),
        "frames_repeated": sum(s["server_frames_repeated"] or 0 for s in sessions),
        "sustained": (min(fps) >= TARGET_FPS and len(fresh) == count and min(fresh) >= TARGET_FPS
                      and lip_sync),
        "per_session": sessions,
    }


def table(results: list[dict]) -> str:
    keys = ["sessions", "min_fps", "mean_fps", "min_fresh_fps", "mean_fresh_fps", "max_repeat_share",
            "first_frame_s_max", "first_animated_s_max", "max_stalls", "max_gap_ms", "mouth_to_photon_ms_max",
            "lag_correlation_min", "mouth_to_photon_ref_ms_max", "lag_ref_correlation_min",
            "audio_in_to_frame_out_ms_max", "engine_ms_mean", "windows_dropped",
            "windows_skipped", "frames_repeated", "kbps_mean", "server_cpu_ms_per_frame",
            "server_cpu_ms_per_fresh_frame", "server_cpu_share",
            "client_cpu_share", "sustained"]
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
    parser.add_argument("--light", action="store_true",
                        help="clients that do not decode the video (no mouth-to-photon unless --lip-sync)")
    parser.add_argument("--lip-sync", action="store_true",
                        help="also mouth-to-photon by a reference render per session (see above)")
    parser.add_argument("--first-session", type=int, default=1,
                        help="--lip-sync, servers that do not report their sessions' seeds: the server's "
                             "number of the first session (1 for a server this script starts)")
    parser.add_argument("--size", type=int, help="video side each client's offer asks for (256, 384, 512)")
    args = parser.parse_args()

    counts = [int(c) for c in args.sessions.split(",") if c.strip()]
    args.set = [f"server.max_sessions={max(counts)}", *args.set]
    audio, speech_s = speech_audio(args.audio, args.silence, args.seconds)
    packets = opus_packets(audio) if args.light else None  # once, before any round is measured
    references = None
    if args.lip_sync:  # the first session's reference now (a bad setting fails before any round), the
        # others after their round (each cached under out/lip_sync_reference/)
        references = References(audio, spec_from_config(args.engine, args.set, None, args.size),
                                packets=packets)
        references.track(args.size, references.spec.seed + args.first_session)
    next_number = args.first_session
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
            server_before = process_cpu_s(process.pid) if process is not None else None
            before = metrics_text(url)
            client_before = own_cpu_s()
            runs = asyncio.run(run_many(ws_url, audio, count, args.stagger, args.light, packets, args.size,
                                        keep_video=args.light and args.lip_sync))
            client_cpu = own_cpu_s() - client_before
            server_cpu = process_cpu_s(process.pid) - server_before if server_before is not None else None
            after = metrics_text(url)
            streamed_s = time.monotonic() - started
            sent = counter_delta(before, after, "avatar_frames_sent_total")
            fresh = counter_delta(before, after, "avatar_frames_fresh_total")
            number_sessions(runs, next_number)
            next_number += count
            result = summarise(count, runs, args.silence, speech_s, args.light, references)
            result.update(cpu_figures(server_cpu, sent, fresh, client_cpu, streamed_s, count))
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
    if args.light and not args.lip_sync:
        print("light clients: video not decoded, so mouth-to-photon and lip-sync correlation not measured")
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
