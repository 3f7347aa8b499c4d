"""Streaming benchmark: an aiortc client sends silence then speech and measures what comes back.

    python benchmarks/stream_benchmark.py                         # starts run_server.py on a free port
    python benchmarks/stream_benchmark.py --url http://127.0.0.1:8080 --json out/stream.json
    python benchmarks/stream_benchmark.py --audio speech.wav --seconds 20 --set window.hop=1
    python benchmarks/stream_benchmark.py --light                 # no video decoding (see below)
    python benchmarks/stream_benchmark.py --light --lip-sync      # ... but lip sync from the kept frames

Reports sustained fps, stalls (> 200 ms between frames), time from offer to first frame and
mouth-to-photon latency: the lag maximising the correlation between the speech envelope as SENT
(20 ms RMS by send wall time) and the mouth opening seen in RECEIVED frames (MediaPipe face mesh inner-lip
gap 13-14 over face height 10-152, by arrival wall time). Prints a markdown table; ``--json`` saves it.

Mouth-to-photon by reference (``--lip-sync``; benchmarks/lip_sync.py has the definitions): the audio the
client sent, as the server hears it (through Opus), is rendered offline by the server's engine and portrait
with the session's seed (the ``seed`` of its ``stats`` events; from an older server ``engine.seed`` +
session number, ``--first-session``) by ``python -m avatar render`` (cached under out/lip_sync_reference/),
and ``mouth_to_photon_ref_ms`` is the lag L maximising the correlation (``lag_ref_correlation``) of that
reference mouth, placed at the send time of the audio each frame shows, with the received mouth: the frame
showing audio instant tau arrives at send_time(tau) + L. It works where the envelope method does not
(learned motion: envelope r ~0.2); both are reported.

Delivered vs fresh: the server sends one frame per tick whether or not the engine has a new picture
(it repeats the last one, or shows the still portrait before the first). ``fps`` is frames received per
second (delivered); ``fresh_fps`` is new engine pictures per second, from the server's ``frames_fresh``
counter over the same steady part; ``repeat_share`` is the share of frames sent there that were not fresh.
``first_frame_s`` is offer -> first frame received (usually the still portrait); ``first_animated_s`` is
offer -> first engine-generated frame received: the first frame's arrival plus the server's gap between
sending its first frame and its first fresh one (``first_animated_s - first_frame_s`` in ``stats``).

Light clients (``stream(..., light=True)``, used by ``many_sessions.py --light``) negotiate the same session
but never decode video: ``EncodedFrameCounter`` takes the place of the video receiver's decoder queue and
keeps (arrival, RTP timestamp, size) of each complete encoded frame; ``analyse_light`` reports delivered
fps from those (distinct RTP timestamps per second), stalls, bitrate and the server's counters. Without
decoded pictures there is no mouth track, so no mouth-to-photon in light mode, unless the client keeps
the encoded frames (``--lip-sync``: ``stream(..., keep_video=True)``); they are then decoded after the
session ended (so decoding costs the live run nothing) and both lip-sync methods are reported. Their
microphone sends the same speech as Opus encoded once before the session (``opus_packets``, aiortc's own
encoder) and paced in real time (``PreEncodedAudioTrack``), which halves what is left of the client's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import queue
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import cv2
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.audio.io import load_audio  # noqa: E402
from benchmarks.lip_sync import (  # noqa: E402
    References,
    ReferenceTrack,
    decode_kept,
    lip_sync_by_reference,
    mouth_openings,
    reference_lag,
    session_seed,
    spec_from_config,
)
from tests.paced_audio import CHUNK, PacedAudioTrack, WallClockAudioTrack  # noqa: E402

DEFAULT_AUDIO = ROOT.parent / "shared" / "media" / "speech" / "english_radio.wav"
STALL_S = 0.2
TARGETS = {"fps": 24.0, "stalls": 1, "first_frame_s": 3.0, "mouth_to_photon_ms": 350.0}


class VideoRecorder:
    """Keeps (arrival wall time, 256x256 RGB copy) of every received video frame."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, np.ndarray]] = []
        self.size: tuple[int, int] | None = None

    async def run(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                arrived = time.monotonic()
                image = frame.to_ndarray(format="rgb24")
                self.size = (image.shape[1], image.shape[0])
                self.frames.append((arrived, cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)))
        except MediaStreamError:
            return


class EncodedFrameCounter(queue.Queue):
    """Stands in for an aiortc ``RTCRtpReceiver``'s decoder queue so its video is never decoded.

    aiortc's receiver puts ``(codec, encoded frame)`` on this queue for every complete frame its jitter
    buffer assembles (RTP timestamps already mapped to start at 0); its decoder thread waits on ``get``.
    ``put`` records ``(arrival monotonic s, RTP timestamp, size in bytes)`` into ``frames`` and drops the
    frame; only the ``None`` that stops the receiver goes through, so the decoder thread idles and then
    ends. With ``keep``, ``kept`` also gets ``(arrival monotonic s, RTP timestamp, encoded bytes)`` of each
    frame, to decode after the session (``lip_sync.decode_kept``; about 2-5 kB per 512 px VP8 frame).
    ``codec`` is the first frame's codec name, ``size`` the (width, height) of the first VP8 key frame.
    """

    def __init__(self, keep: bool = False) -> None:
        super().__init__()
        self.frames: list[tuple[float, int, int]] = []
        self.kept: list[tuple[float, int, bytes]] = []
        self.keep = keep
        self.codec: str | None = None
        self.size: tuple[int, int] | None = None

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(item, block, timeout)
            return
        codec, encoded = item  # type: ignore[misc]
        arrived = time.monotonic()
        self.frames.append((arrived, int(encoded.timestamp), len(encoded.data)))
        if self.keep:
            self.kept.append((arrived, int(encoded.timestamp), bytes(encoded.data)))
        if self.codec is None:
            self.codec = codec.name
        if self.size is None and codec.name == "VP8":
            self.size = vp8_keyframe_size(encoded.data)


DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
"""aiortc's private name of a receiver's decoder queue (aiortc 1.14-1.16)."""


def skip_decoding(receiver: object, keep: bool = False) -> EncodedFrameCounter:
    """Replace ``receiver``'s decoder queue (before the remote description starts it) by a counter
    (``keep``: that also keeps the encoded frames)."""
    if not isinstance(getattr(receiver, DECODER_QUEUE, None), queue.Queue):
        raise SystemExit("light client: this aiortc's RTCRtpReceiver has no decoder queue to replace")
    counter = EncodedFrameCounter(keep)
    setattr(receiver, DECODER_QUEUE, counter)
    return counter


def vp8_keyframe_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a VP8 key frame's header (RFC 6386 9.1), None for inter frames."""
    if len(data) < 10 or data[0] & 1 or data[3:6] != b"\x9d\x01\x2a":
        return None
    return (int.from_bytes(data[6:8], "little") & 0x3FFF, int.from_bytes(data[8:10], "little") & 0x3FFF)


def delivery(frames: list[tuple[float, int, int]], settle_s: float = 1.0) -> dict:
    """Delivery figures from complete encoded frames ``(arrival s, RTP timestamp, bytes)``.

    A timestamp counts once (its first arrival). ``fps``: distinct frames per second after the first
    ``settle_s`` (as ``analyse`` does for decoded frames); ``stalls``: gaps > ``STALL_S`` between
    successive frames over the whole run; ``kbps``: encoded kilobits per second over the same steady part.
    """
    first: dict[int, tuple[float, int]] = {}
    for arrived, timestamp, size in frames:
        if timestamp not in first:
            first[timestamp] = (arrived, size)
    ordered = sorted(first.values())
    if not ordered:
        return {"frames": 0, "duration_s": 0.0, "fps": float("nan"), "stalls": 0, "max_gap_ms": 0.0,
                "kbps": None, "mean_frame_bytes": None}
    arrivals = np.array([a for a, _ in ordered])
    sizes = np.array([b for _, b in ordered])
    gaps = np.diff(arrivals)
    steady = arrivals >= arrivals[0] + settle_s
    span = float(arrivals[steady][-1] - arrivals[steady][0]) if steady.sum() > 2 else 0.0
    fps = (steady.sum() - 1) / span if span > 0 else float("nan")
    kbps = float(sizes[steady][1:].sum()) * 8 / span / 1000 if span > 0 else None
    return {
        "frames": len(ordered),
        "duration_s": round(float(arrivals[-1] - arrivals[0]), 2),
        "fps": round(float(fps), 2),
        "stalls": int((gaps > STALL_S).sum()),
        "max_gap_ms": round(float(gaps.max() * 1000), 1) if len(gaps) else 0.0,
        "kbps": round(kbps, 1) if kbps is not None else None,
        "mean_frame_bytes": round(float(sizes.mean()), 1),
    }


def opus_packets(audio: np.ndarray) -> list[bytes]:
    """``audio`` (16 kHz mono float, -1..1) as the Opus packets aiortc's sender would make of
    ``PacedAudioTrack``'s 20 ms frames (48 kHz, one packet per 20 ms)."""
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    encoder = get_encoder(RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2,
                                                payloadType=111))
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    packets: list[bytes] = []
    for k in range(len(pcm) // CHUNK):
        frame = av.AudioFrame.from_ndarray(pcm[k * CHUNK : (k + 1) * CHUNK].reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, k * CHUNK, fractions.Fraction(1, 16000)
        packets += encoder.encode(frame)[0]
    return packets


class PreEncodedAudioTrack(WallClockAudioTrack):
    """A microphone that sends Opus ``packets`` (20 ms each) paced by the wall clock, then repeats the
    last one (silence at the end of the speech). Like ``PacedAudioTrack``, ``sent`` records (wall time,
    RMS of the 20 ms of ``audio``) per packet and ``done`` turns true after the last one."""

    def __init__(self, packets: list[bytes], audio: np.ndarray) -> None:
        super().__init__()
        if not packets:
            raise ValueError("no audio to send")
        self.packets = packets
        chunks = audio[: len(audio) // CHUNK * CHUNK].reshape(-1, CHUNK)
        self.rms = np.sqrt(np.mean(chunks.astype(np.float64) ** 2, axis=1)) if len(chunks) else np.zeros(1)

    async def recv(self) -> av.Packet:
        k = await self.next_slot()
        packet = av.Packet(self.packets[min(k, len(self.packets) - 1)])
        packet.pts, packet.time_base = k * 960, fractions.Fraction(1, 48000)
        self.sent.append((time.monotonic(), float(self.rms[min(k, len(self.rms) - 1)])))
        return packet

    @property
    def done(self) -> bool:
        return self._k >= len(self.packets)


def best_lag(send: list[tuple[float, float]], arrivals: np.ndarray, mouth: np.ndarray,
             start: float, stop: float, max_lag_s: float = 1.0, step: float = 0.01) -> tuple[float, float]:
    """Lag (s) maximising Pearson correlation of envelope(t) and mouth(t + lag), and that correlation
    (``lip_sync.reference_lag`` with the sent envelope, one RMS per chunk at its send time, as reference)."""
    if not send:
        return float("nan"), float("nan")
    send_t = np.array([t for t, _ in send])
    env = np.array([r for _, r in send])
    return reference_lag(send_t, env, arrivals, mouth, start, stop, max_lag_s, step)


async def exchange_offer(ws, pc: RTCPeerConnection, message: dict) -> dict:
    """Send an offer ``message`` (built from ``pc.localDescription``), wait for the answer and apply it.
    An ``error`` reply ends the benchmark with the server's message."""
    await ws.send(json.dumps(message))
    while True:
        reply = json.loads(await ws.recv())
        if reply["type"] == "answer":
            break
        if reply["type"] == "error":
            raise SystemExit(f"server error: {reply['message']}")
    await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
    return reply


async def stream(ws_url: str, audio: np.ndarray, avatar: str | None, tail_s: float,
                 light: bool = False, packets: list[bytes] | None = None, size: int | None = None,
                 keep_video: bool = False) -> dict:
    """One client session: send ``audio`` paced, receive the video, collect the ``stats`` events.
    ``size``: the video side the offer asks for (None: the server's ``engine.size``).
    ``light``: do not decode the video; count complete encoded frames instead (``"encoded"`` in the
    result, ``"frames"`` empty), and send ``audio`` pre-encoded (``packets``: ``opus_packets(audio)``,
    made here when not given). ``keep_video`` (light only): also keep the encoded frames (``"kept"``:
    (arrival s, RTP timestamp, bytes)) to decode after the session (``lip_sync.decode_kept``)."""
    pc = RTCPeerConnection()
    track: PacedAudioTrack | PreEncodedAudioTrack
    if light:
        track = PreEncodedAudioTrack(packets if packets is not None else opus_packets(audio), audio)
    else:
        track = PacedAudioTrack(audio)
    recorder = VideoRecorder()
    tasks: list[asyncio.Task] = []
    pc.addTrack(track)
    video = pc.addTransceiver("video", direction="recvonly")
    counter = skip_decoding(video.receiver, keep=keep_video) if light else None

    @pc.on("track")
    def on_track(remote: MediaStreamTrack) -> None:
        if remote.kind == "video" and counter is None:
            tasks.append(asyncio.ensure_future(recorder.run(remote)))

    stats: list[dict] = []
    async with connect(ws_url) as ws:
        await pc.setLocalDescription(await pc.createOffer())
        message = {"type": "offer", "sdp": pc.localDescription.sdp}
        if avatar:
            message["avatar"] = avatar
        if size:
            message["size"] = size
        offered = time.monotonic()
        await exchange_offer(ws, pc, message)

        async def collect() -> None:
            async for raw in ws:
                event = json.loads(raw)
                if event.get("type") == "stats":
                    stats.append(event)

        collector = asyncio.ensure_future(collect())
        deadline = time.monotonic() + len(audio) / 16000 + 30
        while not track.done and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(tail_s)
        collector.cancel()
    await pc.close()
    for task in tasks:
        task.cancel()
    result = {"offered": offered, "sent": track.sent, "frames": recorder.frames, "size": recorder.size,
              "stats": stats}
    if counter is not None:
        result.update(encoded=counter.frames, size=counter.size, codec=counter.codec)
        if keep_video:
            result["kept"] = counter.kept
    return result


def fresh_counts(stats: list[dict]) -> dict:
    """Fresh fps, delivered (sent) fps and the repeat share from server ``stats`` events (first to last
    given, so pass the steady ones), and the server's first frame / first animated frame times."""
    if not stats or "frames_fresh" not in stats[-1]:
        return {"fresh_fps": None, "sent_fps": None, "repeat_share": None, "server_first_frame_s": None,
                "server_first_animated_s": None}
    first, last = stats[0], stats[-1]
    span = max(1e-6, last["uptime_s"] - first["uptime_s"])
    sent = last["frames_sent"] - first["frames_sent"]
    fresh = last["frames_fresh"] - first["frames_fresh"]
    return {
        "fresh_fps": round(fresh / span, 2) if len(stats) > 1 else None,
        "sent_fps": round(sent / span, 2) if len(stats) > 1 else None,
        "repeat_share": round(1.0 - fresh / sent, 3) if sent > 0 else None,
        "server_first_frame_s": last.get("first_frame_s"),
        "server_first_animated_s": last.get("first_animated_s"),
    }


def lip_sync_figures(sent: list[tuple[float, float]], arrivals: np.ndarray, mouth: np.ndarray,
                     silence_s: float, speech_s: float, reference: ReferenceTrack | None = None) -> dict:
    """Mouth-to-photon of one session from its received mouth track (``mouth`` per frame at ``arrivals``,
    monotonic s) over the speech +-0.5 s: by the sent envelope (``best_lag``: ``mouth_to_photon_ms``,
    ``lag_correlation``) and by the ``reference`` mouth (``mouth_to_photon_ref_ms``,
    ``lag_ref_correlation``; None without a reference)."""
    speech_start = sent[0][0] + silence_s if sent else arrivals[0]
    start = speech_start - 0.5
    stop = min(speech_start + speech_s + 0.5, sent[-1][0] if sent else arrivals[-1])
    lag, corr = best_lag(sent, arrivals, mouth, start, stop)
    return {
        "mouth_to_photon_ms": round(lag * 1000, 0) if lag == lag else None,
        "lag_correlation": round(corr, 3) if corr == corr else None,
        **lip_sync_by_reference(reference, sent, arrivals, mouth, start, stop),
        "mouth_found_fraction": round(float(np.mean(~np.isnan(mouth))), 3) if len(mouth) else None,
    }


def analyse(run: dict, silence_s: float, speech_s: float, reference: ReferenceTrack | None = None) -> dict:
    """Figures of a decoding client's ``run`` (``stream``); with a ``reference`` mouth track also
    mouth-to-photon by reference (``lip_sync_figures``)."""
    frames = run["frames"]
    if not frames:
        raise SystemExit("no video frame arrived")
    arrivals = np.array([t for t, _ in frames])
    gaps = np.diff(arrivals)
    steady = arrivals[arrivals >= arrivals[0] + 1.0]
    fps = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 2 else float("nan")
    mouth = mouth_openings([image for _, image in frames])
    lips = lip_sync_figures(run["sent"], arrivals, mouth, silence_s, speech_s, reference)
    stats = run["stats"][1:]  # the first second includes connection set-up
    counts = fresh_counts(stats)
    first_frame_s = float(arrivals[0] - run["offered"])
    first_animated_s = None
    if counts["server_first_animated_s"] is not None and counts["server_first_frame_s"] is not None:
        first_animated_s = round(
            first_frame_s + counts["server_first_animated_s"] - counts["server_first_frame_s"], 3)

    def server_mean(key: str) -> float | None:
        values = [s[key] for s in stats if key in s]
        return round(float(np.mean(values)), 2) if values else None

    return {
        "frames": len(frames),
        "frame_size": list(run["size"] or ()),
        "duration_s": round(float(arrivals[-1] - arrivals[0]), 2),
        "fps": round(float(fps), 2),
        "fresh_fps": counts["fresh_fps"],
        "repeat_share": counts["repeat_share"],
        "stalls": int((gaps > STALL_S).sum()),
        "max_gap_ms": round(float(gaps.max() * 1000), 1) if len(gaps) else 0.0,
        "first_frame_s": round(first_frame_s, 3),
        "first_animated_s": first_animated_s,
        **lips,
        "server_engine_ms_per_frame": server_mean("engine_ms"),
        "server_audio_in_to_frame_out_ms": server_mean("latency_ms"),
        "server_first_frame_s": counts["server_first_frame_s"],
        "server_first_animated_s": counts["server_first_animated_s"],
        "server_frames_fresh": stats[-1].get("frames_fresh") if stats else None,
        "server_frames_repeated": stats[-1]["frames_repeated"] if stats else None,
        "server_frames_still": stats[-1].get("frames_still") if stats else None,
        "server_frames_dropped": stats[-1]["frames_dropped"] if stats else None,
        "server_windows_dropped": stats[-1].get("windows_dropped") if stats else None,
        "server_per_second": [  # uptime s, sent fps, fresh fps, engine ms/frame, degraded
            [s.get("uptime_s"), s.get("fps"), s.get("fresh_fps"), s.get("engine_ms"), s.get("degraded")]
            for s in run["stats"]],
    }


def analyse_light(run: dict, silence_s: float | None = None, speech_s: float | None = None,
                  reference: ReferenceTrack | None = None) -> dict:
    """``analyse`` for a light client's ``run`` (``stream(..., light=True)``): delivery from the encoded
    frames, the server's counters. Mouth-to-photon (``lip_sync_figures``) only when the run kept its
    encoded frames (``keep_video``) and ``silence_s``/``speech_s`` are given: they are decoded here, after
    the session; otherwise there is no mouth track and the lip-sync figures are None."""
    encoded = run["encoded"]
    if not encoded:
        raise SystemExit("no complete video frame arrived")
    result = delivery(encoded)
    stats = run["stats"][1:]  # the first second includes connection set-up
    counts = fresh_counts(stats)
    first_frame_s = float(min(a for a, _, _ in encoded) - run["offered"])
    first_animated_s = None
    if counts["server_first_animated_s"] is not None and counts["server_first_frame_s"] is not None:
        first_animated_s = round(
            first_frame_s + counts["server_first_animated_s"] - counts["server_first_frame_s"], 3)
    engine = [s["engine_ms"] for s in stats if "engine_ms" in s]
    latencies = [s["latency_ms"] for s in stats if s.get("latency_ms")]  # 0 until the first fresh frame
    last = stats[-1] if stats else {}
    result.update({
        "frame_size": list(run.get("size") or ()),
        "codec": run.get("codec"),
        "fresh_fps": counts["fresh_fps"],
        "server_sent_fps": counts["sent_fps"],
        "repeat_share": counts["repeat_share"],
        "first_frame_s": round(first_frame_s, 3),
        "first_animated_s": first_animated_s,
        **light_lip_sync(run, silence_s, speech_s, reference),
        "server_engine_ms_per_frame": round(float(np.mean(engine)), 2) if engine else None,
        "server_audio_in_to_frame_out_ms": round(float(np.mean(latencies)), 1) if latencies else None,
        "server_first_frame_s": counts["server_first_frame_s"],
        "server_first_animated_s": counts["server_first_animated_s"],
        "server_frames_fresh": last.get("frames_fresh"),
        "server_frames_repeated": last.get("frames_repeated"),
        "server_frames_still": last.get("frames_still"),
        "server_frames_dropped": last.get("frames_dropped"),
        "server_windows_dropped": last.get("windows_dropped"),
        "server_audio_in_s": last.get("audio_in_s"),
        "server_per_second": [  # uptime s, sent fps, fresh fps, engine ms/frame, degraded
            [s.get("uptime_s"), s.get("fps"), s.get("fresh_fps"), s.get("engine_ms"), s.get("degraded")]
            for s in run["stats"]],
    })
    return result


def light_lip_sync(run: dict, silence_s: float | None, speech_s: float | None,
                   reference: ReferenceTrack | None) -> dict:
    """``lip_sync_figures`` of a light ``run`` from its kept frames, decoded now (``frames_decoded``);
    all None when it kept none or the speech span is not given (mouth-to-photon needs pictures)."""
    if not run.get("kept") or silence_s is None or speech_s is None:
        return {"mouth_to_photon_ms": None, "lag_correlation": None, "mouth_to_photon_ref_ms": None,
                "lag_ref_correlation": None, "frames_decoded": None}
    arrivals, images = decode_kept(run.get("codec"), run["kept"])
    if not images:
        raise SystemExit("lip sync: none of the kept video frames decoded")
    mouth = mouth_openings(images)
    return {**lip_sync_figures(run["sent"], arrivals, mouth, silence_s, speech_s, reference),
            "frames_decoded": len(images)}


def markdown(result: dict) -> str:
    rows = ["| metric | value | target |", "|---|---|---|"]
    targets = {"fps": ">= 24", "fresh_fps": ">= 24", "stalls": "<= 1", "first_frame_s": "<= 3",
               "first_animated_s": "<= 3", "mouth_to_photon_ms": "<= 350", "mouth_to_photon_ref_ms": "<= 350"}
    for key, value in result.items():
        if key != "server_per_second":
            rows.append(f"| {key} | {value} | {targets.get(key, '')} |")
    return "\n".join(rows)


def write_json(path: str | None, data: object) -> None:
    """``data`` as indented JSON into ``path`` (``--json``; its folder made); nothing without a path."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2))


def stat_cpu_s(stat: str, ticks_per_s: float) -> float:
    """CPU seconds (user + system, own threads and waited-for children) from a ``/proc/<pid>/stat`` line;
    fields are counted after the ``)`` that ends the command name (which may hold spaces)."""
    fields = stat[stat.rindex(")") + 2:].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks_per_s  # utime stime cutime cstime


def process_cpu_s(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` (Linux)."""
    return stat_cpu_s(Path(f"/proc/{pid}/stat").read_text(), os.sysconf("SC_CLK_TCK"))


def own_cpu_s() -> float:
    """CPU seconds used so far by this process (all the clients and their threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, str(ROOT / "run_server.py"), "--host", "127.0.0.1", "--port", str(port),
           "--engine", args.engine, "--log-level", "warning"]
    for setting in args.set:
        cmd += ["--set", setting]
    process = subprocess.Popen(cmd, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"run_server.py exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if json.loads(response.read()).get("status") == "ok":
                    return process, url
        except OSError:
            time.sleep(0.3)
    process.terminate()
    raise SystemExit("run_server.py did not become healthy within 120 s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="running server, e.g. http://127.0.0.1:8080 (default: start one)")
    parser.add_argument("--engine", default="parametric", help="engine for the server this script starts")
    parser.add_argument("--set", action="append", default=[], help="config override for the started server")
    parser.add_argument("--audio", default=str(DEFAULT_AUDIO), help="speech file sent after the silence")
    parser.add_argument("--silence", type=float, default=2.0, help="seconds of silence before the speech")
    parser.add_argument("--seconds", type=float, default=14.0, help="total seconds streamed (silence pads)")
    parser.add_argument("--tail", type=float, default=1.0, help="seconds to keep receiving after the audio")
    parser.add_argument("--avatar", help="avatar id to request")
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument("--light", action="store_true",
                        help="do not decode the video live (no mouth-to-photon unless --lip-sync)")
    parser.add_argument("--lip-sync", action="store_true",
                        help="also mouth-to-photon by a reference render of the sent audio (see "
                             "benchmarks/lip_sync.py); light clients keep their encoded frames to decode")
    parser.add_argument("--first-session", type=int, default=1,
                        help="--lip-sync: the number the server gives this session (its motion seed is "
                             "engine.seed + it): 1 for a server this script starts; for --url, 1 + the "
                             "sessions that server opened before")
    parser.add_argument("--size", type=int, help="video side the offer asks for (256, 384, 512)")
    args = parser.parse_args()

    speech = load_audio(args.audio)
    total = max(args.seconds, args.silence + len(speech) / 16000)
    audio = np.zeros(int(total * 16000), np.float32)
    start = int(args.silence * 16000)
    audio[start : start + len(speech)] = speech
    process = None
    if args.url:
        url = args.url.rstrip("/")
    else:
        process, url = start_server(args)
    try:
        ws_url = url.replace("http://", "ws://").replace("https://", "wss://") + "/ws"
        run = asyncio.run(stream(ws_url, audio, args.avatar, args.tail, light=args.light, size=args.size,
                                 keep_video=args.light and args.lip_sync))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=20)
    reference = None
    if args.lip_sync:  # rendered (or read from the cache) after the session, at the size it streamed
        spec = spec_from_config(args.engine, args.set, args.avatar, args.size)
        size = run["size"][0] if run.get("size") else None
        reference = References(audio, spec).track(size, session_seed(run, spec.seed, args.first_session))
    speech_s = len(speech) / 16000
    if args.light:
        result = analyse_light(run, args.silence, speech_s, reference)  # lip sync only from kept frames
    else:
        result = analyse(run, args.silence, speech_s, reference)
    result["audio"] = Path(args.audio).name
    print(markdown(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
