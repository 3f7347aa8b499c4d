"""Broadcast fan-out with Janus: one published avatar stream, many viewers watching it from Janus.

    python benchmarks/janus_fanout.py                                  # 0, 1, 5, 20 viewers, 512², 10 s each
    python benchmarks/janus_fanout.py --viewers 1,5,20 --seconds 10 --set engine.size=256 --json out/j.json

Starts a throw-away Janus (server/broadcast/dev_janus.py) and the avatar server in this process
(parametric engine, ``server.janus`` pointing at that Janus, nothing else in the process). A child
process holds every client: an aiortc client standing in for the overlay (speak mode, channel
``stage``, ``"broadcast": true``), a controller that makes it speak a sentence every few seconds, and
the viewers (aiortc subscribers of the published feed through Janus, server/broadcast/viewer.py),
joining in steps (none, then 1, 5 and 20 in all). Each step is measured for ``--seconds`` after
``--warmup`` seconds:

* per viewer: **fps**, distinct frames received per second (a frame resent with the same RTP timestamp
  counts once), and **fresh fps**, those of them that carried a new picture from the engine. The server
  knows which frames it sent were fresh (its video track's counters, recorded here per frame by its
  timestamp); each viewer's frames are matched to them by RTP timestamp (Janus keeps the publisher's
  timestamps up to a constant offset, found per viewer);
* the server's CPU (this process: user + system seconds per second, 1.0 = one core) and per frame it
  sent (CPU ms per frame: comparable across steps even when other processes take CPU time from it),
  Janus's CPU and the clients' (the child's) CPU, also per frame Janus forwarded / the viewers decoded.

Everything runs on this machine: the viewers decode every stream they receive, so on a small machine
their decoding competes with the server and Janus for the same cores (say so next to the figures).

``--light-viewers``: the viewers do not decode (``LightJanusViewer``: ``EncodedFrameCounter`` from
stream_benchmark.py in place of their receivers' decoder queues, ~0.03 of a core each instead of ~0.12),
and ONE decoding viewer, the **probe**, joins with the first step that has viewers (so Janus forwards to
N + 1 subscribers). Per light viewer: **fps**, distinct RTP timestamps of complete encoded frames that
arrived in the measured window per second, **stalls** (gaps > 200 ms, the window's edges included) and
**kbps**. Without decoded pictures their frames cannot be matched to the server's record, so their fresh
fps is an **inference**: light fps x the share of the probe's matched frames that were fresh (every
subscriber receives the same forwarded stream). The probe's own fps and fresh fps are measured as above.

    python benchmarks/janus_fanout.py --light-viewers --viewers 0,1,5,20 --json out/janus_light.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sys
import time
from pathlib import Path

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stream_benchmark import (  # noqa: E402
    STALL_S,
    EncodedFrameCounter,
    process_cpu_s,
    skip_decoding,
    write_json,
)
from server.broadcast.dev_janus import DevJanus  # noqa: E402
from server.broadcast.janus_api import JanusSession  # noqa: E402
from server.broadcast.viewer import JanusViewer, picture_fingerprint  # noqa: E402

CHANNEL = "stage"
SENTENCES = ["Hello everyone, and welcome to the live stream.", "Papa made a big blue balloon for the party.",
             "The quick brown fox jumps over the lazy dog.", "Thanks for watching, see you next time."]
RTP_WRAP = 2**32
ALIGN_FRAMES = 100
"""Frames of each viewer (per report) compared picture by picture with the server's to find the offset."""
VIEWERS_PER_JANUS_SESSION = 10
LIGHT_NOTE = ("light viewers do not decode: their fresh fps is inferred as their fps x the share of the "
              "decoding probe's frames that the server's record shows fresh (same forwarded stream)")


# --------------------------------------------------------------------------- the clients (child process)
class Overlay:
    """The session's own client: speak mode on a channel, broadcast on; drains its own stream."""

    def __init__(self, broadcast: bool = True) -> None:
        self.broadcast = broadcast
        self.pc = RTCPeerConnection()
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        self.frames = 0
        self.key = secrets.token_urlsafe(18)
        self._tasks: list[asyncio.Task] = []
        self.pc.on("track", lambda track: self._tasks.append(asyncio.ensure_future(self._read(track))))

    async def _read(self, track) -> None:
        try:
            while True:
                await track.recv()
                self.frames += track.kind == "video"
        except MediaStreamError:
            return

    async def start(self, ws) -> dict:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await ws.send(json.dumps({"type": "offer", "sdp": self.pc.localDescription.sdp, "mode": "speak",
                                  "channel": CHANNEL, "key": self.key, "broadcast": self.broadcast}))
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "answer":
                await self.pc.setRemoteDescription(RTCSessionDescription(message["sdp"], "answer"))
                self.session = message["session"]
                if not self.broadcast:  # the baseline: the session's own stream only
                    self._tasks.append(asyncio.ensure_future(self._drain(ws)))
                    return {"feed": None}
            elif message["type"] == "broadcasting":
                self._tasks.append(asyncio.ensure_future(self._drain(ws)))
                return message
            elif message["type"] == "error":
                raise SystemExit(f"server error: {message['message']}")

    async def _drain(self, ws) -> None:
        async for _ in ws:
            pass

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


class LightJanusViewer(JanusViewer):
    """A Janus subscriber that decodes nothing: when Janus's offer creates its receivers, their decoder
    queues are replaced by ``EncodedFrameCounter``s (``video``, ``audio``) that keep (arrival monotonic s,
    RTP timestamp, bytes) of every complete encoded frame; nothing reads its tracks."""

    def __init__(self, janus: JanusSession, room: int | str, feed: int | str) -> None:
        super().__init__(janus, room, feed)
        self.video: EncodedFrameCounter | None = None
        self.audio: EncodedFrameCounter | None = None

    def _on_track(self, track) -> None:  # during setRemoteDescription, before the receivers start
        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track)
        counter = skip_decoding(receiver)
        if track.kind == "video":
            self.video = counter
        else:
            self.audio = counter


async def speak_forever(url: str, key: str, every_s: float) -> None:
    async with connect(url) as ws:
        for k in range(10**6):
            await ws.send(json.dumps({"type": "say", "channel": CHANNEL, "key": key,
                                      "text": SENTENCES[k % len(SENTENCES)], "voice": "en"}))
            await asyncio.sleep(every_s)


async def clients(ws_url: str, janus_url: str, room: int, say_every: float, broadcast: bool,
                  light: bool = False) -> None:
    """The child: JSON lines on stdin (``{"viewers": N}`` / ``{"report": true}``), answers on stdout.
    ``light``: N light viewers plus one decoding probe (``viewers`` in reports: the probe only; ``light``:
    each light viewer's new ``encoded`` video frames and ``audio_packets`` count)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    overlay = Overlay(broadcast)
    viewers: list[JanusViewer] = []  # decoding viewers (with ``light``: the probe)
    light_viewers: list[LightJanusViewer] = []
    watchers: list[JanusSession] = []

    async def join(decoding: bool) -> JanusViewer:
        if (len(viewers) + len(light_viewers)) % VIEWERS_PER_JANUS_SESSION == 0:
            watchers.append(await JanusSession(janus_url).create())
        viewer = (JanusViewer(watchers[-1], room, event["feed"], fingerprints=True) if decoding
                  else LightJanusViewer(watchers[-1], room, event["feed"]))
        await viewer.start()
        return viewer

    def answer(message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async with connect(ws_url) as ws:
        event = await overlay.start(ws)
        speaker = asyncio.ensure_future(speak_forever(ws_url, overlay.key, say_every))
        answer({"feed": event["feed"], "session": overlay.session})
        reported = {}
        while line := await reader.readline():
            command = json.loads(line)
            if "viewers" in command:
                if light and command["viewers"] and not viewers:
                    viewers.append(await join(decoding=True))  # the freshness probe
                while len(light_viewers if light else viewers) < command["viewers"]:
                    if light:
                        light_viewers.append(await join(decoding=False))
                    else:
                        viewers.append(await join(decoding=True))
                answer({"viewers": len(light_viewers if light else viewers)})
            elif command.get("report"):
                report = []
                for k, viewer in enumerate(viewers):
                    first, reported[k] = reported.get(k, 0), len(viewer.timestamps)
                    report.append({
                        "timestamps": viewer.timestamps[first:], "arrivals": viewer.arrivals[first:],
                        "fingerprints": [base64.b64encode(f).decode()  # the first ones, for matching
                                         for f in viewer.fingerprints[first:first + ALIGN_FRAMES]]})
                light_report = []
                for k, viewer in enumerate(light_viewers):
                    frames = viewer.video.frames if viewer.video else []
                    first, reported[("light", k)] = reported.get(("light", k), 0), len(frames)
                    audio = len(viewer.audio.frames) if viewer.audio else 0
                    first_audio, reported[("audio", k)] = reported.get(("audio", k), 0), audio
                    light_report.append({"encoded": frames[first:], "audio_packets": audio - first_audio})
                answer({"viewers": report, "light": light_report, "overlay_frames": overlay.frames})
            elif command.get("stop"):
                break
        speaker.cancel()
    for viewer in viewers + light_viewers:
        await viewer.stop()
    for watcher in watchers:
        await watcher.close()
    await overlay.close()


# --------------------------------------------------------------------------------- the server side
class FreshLog:
    """Wraps the session's video track: for every frame sent, by its RTP-clock timestamp (pts): fresh or
    not, when (monotonic) and its picture's fingerprint (``picture_fingerprint``, about 0.2 ms)."""

    def __init__(self, video) -> None:
        self.fresh: dict[int, bool] = {}
        self.sent_at: dict[int, float] = {}
        self.fingerprint: dict[int, np.ndarray] = {}
        self.sent = 0
        original = video.recv

        async def recv():
            before = video.fresh
            frame = await original()
            pts = int(frame.pts) % RTP_WRAP
            self.fresh[pts] = video.fresh > before
            self.sent_at[pts] = time.monotonic()
            self.fingerprint[pts] = picture_fingerprint(frame.to_ndarray()).astype(np.int16).reshape(-1)
            self.sent += 1
            return frame

        video.recv = recv  # instance attribute: the broadcast's FanOut reads through it


def match(viewer: dict, log: FreshLog) -> tuple[int, int, float | None]:
    """(frames matched to the server's log, fresh among them, mean luma error of the match).

    A viewer's RTP timestamps are the server's pts plus a constant offset (Janus rewrites them per
    subscriber). Candidates: the frames the server sent up to 3 s before the viewer's first frame
    arrived; the one whose pictures match the viewer's first ``ALIGN_FRAMES`` decoded pictures best
    (mean absolute luma difference on a 32x32 grid) gives the offset."""
    timestamps = viewer["timestamps"]
    if not timestamps:
        return 0, 0, None
    first_arrival = viewer["arrivals"][0]
    seen = [np.frombuffer(base64.b64decode(f), np.uint8).astype(np.int16) for f in viewer["fingerprints"]]
    best: tuple[float, int] | None = None
    for pts, sent_at in log.sent_at.items():
        if not first_arrival - 3.0 <= sent_at <= first_arrival + 0.01:
            continue
        offset = (timestamps[0] - pts) % RTP_WRAP
        errors = [np.abs(log.fingerprint[p] - fp).mean()
                  for t, fp in zip(timestamps, seen, strict=False)
                  if (p := (t - offset) % RTP_WRAP) in log.fingerprint]
        if len(errors) >= len(seen) // 2 and (best is None or np.mean(errors) < best[0]):
            best = (float(np.mean(errors)), offset)
    if best is None:
        return 0, 0, None
    mapped = [log.fresh.get((t - best[1]) % RTP_WRAP) for t in timestamps]
    return sum(m is not None for m in mapped), sum(bool(m) for m in mapped), round(best[0], 2)


def window_delivery(frames: list, began: float, ended: float) -> dict:
    """Delivery of complete encoded frames ``(arrival monotonic s, RTP timestamp, bytes)`` in the window
    ``began``..``ended`` (monotonic s; the child's clock is the same system-wide clock).

    A timestamp counts once, at its first arrival; frames that first arrived outside the window are left
    out. ``fps``: distinct frames per second of window (as the decoding viewers' fps); ``stalls``: gaps
    > ``STALL_S`` between successive frames, from ``began`` to the first and from the last to ``ended``
    included (a viewer that got nothing has one stall, the whole window); ``kbps``: their encoded bytes."""
    first: dict[int, tuple[float, int]] = {}
    for arrived, timestamp, size in frames:
        if timestamp not in first or arrived < first[timestamp][0]:
            first[timestamp] = (arrived, size)
    inside = sorted((a, b) for a, b in first.values() if began <= a <= ended)
    seconds = ended - began
    gaps = np.diff([began, *(a for a, _ in inside), ended])
    return {"frames": len(inside), "fps": round(len(inside) / seconds, 2),
            "stalls": int((gaps > STALL_S).sum()), "max_gap_ms": round(float(gaps.max()) * 1000, 1),
            "kbps": round(sum(b for _, b in inside) * 8 / seconds / 1000, 1)}


def light_figures(light: list[dict], probe: tuple[int, int, int] | None, began: float,
                  ended: float) -> dict:
    """A step's viewer figures with light viewers: ``light``, the child's report per light viewer
    (``encoded`` frames); ``probe``, the decoding probe's (frames, matched to the server's record, fresh
    among them), None without viewers. Inferred fresh fps: each light viewer's fps x the probe's fresh
    share (None when none of the probe's frames matched)."""
    seconds = ended - began
    windows = [window_delivery(viewer["encoded"], began, ended) for viewer in light]
    fps = [w["fps"] for w in windows]
    share = probe[2] / probe[1] if probe and probe[1] else None
    inferred = [f * share for f in fps] if share is not None else []
    return {
        "viewer_fps_min": min(fps, default=None),
        "viewer_fps_mean": round(sum(fps) / len(fps), 2) if fps else None,
        "viewers_below_24_fps": sum(f < 24 for f in fps),
        "viewer_stalls_max": max((w["stalls"] for w in windows), default=None),
        "viewer_stalls_total": sum(w["stalls"] for w in windows),
        "viewer_max_gap_ms": max((w["max_gap_ms"] for w in windows), default=None),
        "viewer_kbps_mean": round(sum(w["kbps"] for w in windows) / len(windows), 1) if windows else None,
        "probe_fps": round(probe[0] / seconds, 2) if probe else None,
        "probe_fresh_fps": round(probe[2] / seconds, 2) if probe else None,
        "probe_fresh_share": round(share, 4) if share is not None else None,
        "viewer_fresh_fps_inferred_min": round(min(inferred), 2) if inferred else None,
        "viewer_fresh_fps_inferred_mean": round(sum(inferred) / len(inferred), 2) if inferred else None,
        "viewers_below_24_fresh_fps_inferred": sum(f < 24 for f in inferred) if inferred else None,
        "light_received_fps": round(sum(w["frames"] for w in windows) / seconds, 1),
    }


async def run(args: argparse.Namespace, janus: DevJanus) -> dict:
    from server.app import App
    from server.config import load_config
    from server.main import make_engine

    config = load_config(overrides=args.set, flags={
        "server.port": 0, "server.janus": {"url": janus.url, "room": janus.room}})
    app = App(config, make_engine(config))
    await app.start(host="127.0.0.1", port=0)
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", f"ws://127.0.0.1:{app.port}/ws", janus.url, str(janus.room),
        str(args.say_every), "0" if args.no_broadcast else "1", "1" if args.light_viewers else "0",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)

    async def ask(command: dict | None = None) -> dict:
        if command is not None:
            child.stdin.write((json.dumps(command) + "\n").encode())
            await child.stdin.drain()
        line = await asyncio.wait_for(child.stdout.readline(), 120)
        if not line:
            raise SystemExit("the clients' process ended early")
        return json.loads(line)

    try:
        started = await ask()
        session = next(s for s in app.sessions if s.id == started["session"])
        log = FreshLog(session.video)
        processes = {"server": os.getpid(), "janus": janus.process.pid, "clients": child.pid}
        steps = []
        for count in args.viewers:
            await ask({"viewers": count})
            await asyncio.sleep(args.warmup)
            await ask({"report": True})  # frames before this point are not measured
            cpu = {name: process_cpu_s(p) for name, p in processes.items()}
            stats = session.stats()  # resets the server's per-interval counters
            sent, fresh_before, began = log.sent, session.video.fresh, time.monotonic()
            await asyncio.sleep(args.seconds)
            elapsed = time.monotonic() - began
            report = await ask({"report": True})
            stats = session.stats()
            matches = [match(viewer, log) for viewer in report["viewers"]]
            per_viewer = [(len(v["timestamps"]), m[0], m[1])
                          for v, m in zip(report["viewers"], matches, strict=True)]
            if args.light_viewers:  # per_viewer: the decoding probe only
                viewer_part = light_figures(report["light"], per_viewer[0] if per_viewer else None, began,
                                            began + elapsed)
            else:
                fps = [frames / elapsed for frames, _, _ in per_viewer] or [float("nan")]
                fresh = [f / elapsed for _, _, f in per_viewer] or [float("nan")]
                viewer_part = {
                    "viewer_fps_min": round(min(fps), 2), "viewer_fps_mean": round(sum(fps) / len(fps), 2),
                    "viewer_fresh_fps_min": round(min(fresh), 2),
                    "viewer_fresh_fps_mean": round(sum(fresh) / len(fresh), 2),
                    "viewers_below_24_fresh_fps": sum(f < 24 for f in fresh if f == f),
                }
            step = {
                "viewers": count, **viewer_part,
                "frames_matched_share": round(sum(m for _, m, _ in per_viewer)
                                              / max(1, sum(n for n, _, _ in per_viewer)), 4),
                "match_luma_error_max": max((m[2] for m in matches if m[2] is not None), default=None),
                "server_sent_fps": round((log.sent - sent) / elapsed, 2),
                "server_fresh_fps": round((session.video.fresh - fresh_before) / elapsed, 2),
                "server_engine_ms": stats["engine_ms"], "server_degraded": stats["degraded"],
                **{f"cpu_{name}": round((process_cpu_s(p) - cpu[name]) / elapsed, 3)
                   for name, p in processes.items()},
                "seconds": round(elapsed, 1), "load_1min": round(os.getloadavg()[0], 2),
            }
            sent_fps = step["server_sent_fps"]
            received = sum(frames for frames, _, _ in per_viewer) / elapsed  # frames/s, all viewers
            if args.light_viewers:
                step["decoding_probes"] = len(per_viewer)
                received += step["light_received_fps"]
            step["received_fps_all_viewers"] = round(received, 1)
            step["janus_cpu_ms_per_forwarded_frame"] = (round(1000 * step["cpu_janus"] / received, 3)
                                                        if received else None)
            step["clients_cpu_ms_per_received_frame"] = (round(1000 * step["cpu_clients"] / received, 2)
                                                         if received else None)
            step["server_cpu_ms_per_frame"] = (round(1000 * step["cpu_server"] / sent_fps, 2)
                                               if sent_fps else None)
            if not count:  # published, nobody watching
                step.update({key: None for key in step if key.startswith("viewer_")})
            print(json.dumps(step), flush=True)
            steps.append(step)
        result = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
                  "affinity": sorted(os.sched_getaffinity(0)), "settings": args.set,
                  "engine": config.engine.name, "size": config.engine.size, "steps": steps}
        if args.light_viewers:
            result.update(light_viewers=True, note=LIGHT_NOTE)
        return result
    finally:
        if child.returncode is None:
            try:
                child.stdin.write(b'{"stop": true}\n')
                await asyncio.wait_for(child.wait(), 15)
            except (TimeoutError, ConnectionError):
                child.kill()
        await app.stop()


def table(result: dict) -> str:
    rows = ["| viewers | viewer fps min / mean | viewer fresh fps min / mean | server fresh fps | "
            "server CPU (ms/frame) | Janus CPU | clients' CPU | load |", "|---|---|---|---|---|---|---|---|"]
    for s in result["steps"]:
        rows.append(f"| {s['viewers']} | {s['viewer_fps_min']} / {s['viewer_fps_mean']} | "
                    f"{s['viewer_fresh_fps_min']} / {s['viewer_fresh_fps_mean']} | {s['server_fresh_fps']} | "
                    f"{s['cpu_server']:.2f} ({s['server_cpu_ms_per_frame']}) | {s['cpu_janus']:.2f} | "
                    f"{s['cpu_clients']:.2f} | {s['load_1min']} |")
    return "\n".join(rows)


def light_table(result: dict) -> str:
    rows = ["| light viewers | fps min / mean | stalls max | kbps mean | "
            "probe fps / fresh fps (fresh share) | inferred fresh fps min / mean | server fresh fps | "
            "server CPU (ms/frame) | Janus CPU | "
            "clients' CPU | load |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in result["steps"]:
        rows.append(f"| {s['viewers']} | {s['viewer_fps_min']} / {s['viewer_fps_mean']} | "
                    f"{s['viewer_stalls_max']} | {s['viewer_kbps_mean']} | {s['probe_fps']} / "
                    f"{s['probe_fresh_fps']} ({s['probe_fresh_share']}) | "
                    f"{s['viewer_fresh_fps_inferred_min']} / {s['viewer_fresh_fps_inferred_mean']} | "
                    f"{s['server_fresh_fps']} | {s['cpu_server']:.2f} ({s['server_cpu_ms_per_frame']}) | "
                    f"{s['cpu_janus']:.2f} | {s['cpu_clients']:.2f} | {s['load_1min']} |")
    return "\n".join(rows) + f"\n\nNote: {LIGHT_NOTE}; one decoding probe watches besides the light viewers."


def main() -> int:
    if len(sys.argv) == 8 and sys.argv[1] == "--child":
        ws_url, janus_url, room, say_every, broadcast, light = sys.argv[2:]
        asyncio.run(clients(ws_url, janus_url, int(room), float(say_every), broadcast == "1", light == "1"))
        return 0
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", default="0,1,5,20",
                        help="viewer counts, measured in this order (0: published, nobody watching)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after a step's viewers joined")
    parser.add_argument("--say-every", type=float, default=4.0, help="a sentence every this many seconds")
    parser.add_argument("--set", action="append", default=[], help="config override for the server")
    parser.add_argument("--room", type=int, default=1234, help="VideoRoom room id")
    parser.add_argument("--no-broadcast", action="store_true",
                        help="baseline: the same session without broadcasting (use with --viewers 0)")
    parser.add_argument("--light-viewers", action="store_true",
                        help="viewers count encoded frames without decoding; one decoding probe besides them")
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args()
    args.viewers = sorted(int(v) for v in args.viewers.split(","))
    if args.no_broadcast and any(args.viewers):
        parser.error("--no-broadcast has no feed to watch: use --viewers 0")
    try:
        janus = DevJanus(room=args.room, publishers=2).start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run(args, janus))
    finally:
        janus.stop()
    print(light_table(result) if args.light_viewers else table(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
