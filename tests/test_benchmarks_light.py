"""The light benchmark client (benchmarks/stream_benchmark.py, many_sessions.py --light): frames counted
without decoding, delivery figures from (arrival, RTP timestamp, bytes), CPU and /metrics parsing."""

from __future__ import annotations

import asyncio
import queue

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from benchmarks.many_sessions import counter_delta, cpu_figures, metric_value, summarise
from benchmarks.stream_benchmark import (
    DECODER_QUEUE,
    EncodedFrameCounter,
    PreEncodedAudioTrack,
    analyse_light,
    delivery,
    opus_packets,
    skip_decoding,
    stat_cpu_s,
    stream,
    vp8_keyframe_size,
)
from server.app import App

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


def vp8_packets(width: int, height: int, count: int) -> list[bytes]:
    """``count`` VP8 frames of a moving gradient from libvpx (the first is a key frame)."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.options = {"deadline": "realtime", "cpu-used": "8"}
    out = []
    for k in range(count):
        image = np.full((height, width, 3), (k * 20) % 255, np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = k
        out += [bytes(p) for p in codec.encode(frame)]
    return out


def test_delivery_counts_each_timestamp_once_and_finds_stalls() -> None:
    # 25 fps for 3 s, one frame's packets completed twice (same timestamp), and a 400 ms hole at 2 s.
    frames = [(k * 0.04, k * 3600, 1000) for k in range(75) if not 50 <= k < 60]
    frames.insert(10, (0.41, 9 * 3600, 1000))  # duplicate of timestamp 9, later arrival
    result = delivery(frames)
    assert result["frames"] == 65
    assert result["stalls"] == 1
    assert result["max_gap_ms"] == pytest.approx(440.0, abs=0.5)
    # steady part: from 1.0 s (frame 25) to 2.96 s, 40 frames -> 39 intervals over 1.96 s
    assert result["fps"] == pytest.approx(39 / 1.96, abs=0.01)
    assert result["kbps"] == pytest.approx(39 * 1000 * 8 / 1.96 / 1000, abs=0.1)
    assert result["mean_frame_bytes"] == 1000.0


def test_delivery_of_nothing_is_empty_not_an_error() -> None:
    assert delivery([])["frames"] == 0


def test_vp8_keyframe_size_reads_the_key_frame_header_only() -> None:
    packets = vp8_packets(96, 64, 3)
    assert vp8_keyframe_size(packets[0]) == (96, 64)
    assert vp8_keyframe_size(packets[1]) is None  # inter frame
    assert vp8_keyframe_size(b"\x00\x01") is None


def test_counter_records_frames_and_passes_only_the_stop_sentinel() -> None:
    counter = EncodedFrameCounter()
    packets = vp8_packets(64, 48, 2)
    counter.put((VP8, JitterFrame(packets[0], 0)))
    counter.put((VP8, JitterFrame(packets[1], 3600)))
    assert [(ts, size) for _, ts, size in counter.frames] == [(0, len(packets[0])), (3600, len(packets[1]))]
    assert counter.codec == "VP8" and counter.size == (64, 48)
    assert counter.empty()  # nothing for the decoder thread to decode
    counter.put(None)
    assert counter.get_nowait() is None


async def test_skip_decoding_replaces_this_receivers_queue_only() -> None:
    pc = RTCPeerConnection()
    try:
        light = pc.addTransceiver("video", direction="recvonly").receiver
        other = pc.addTransceiver("video", direction="recvonly").receiver
        counter = skip_decoding(light)
        assert getattr(light, DECODER_QUEUE) is counter
        assert type(getattr(other, DECODER_QUEUE)) is queue.Queue
    finally:
        await pc.close()
    with pytest.raises(SystemExit, match="no decoder queue"):
        skip_decoding(object())


def tone(seconds: float, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.sin(np.arange(int(seconds * 16000)) * 2 * np.pi * 220 / 16000)).astype(np.float32)


def test_opus_packets_carry_the_speech_20_ms_each() -> None:
    audio = np.concatenate([np.zeros(8000, np.float32), tone(0.5)])  # 0.5 s silence, 0.5 s tone
    packets = opus_packets(audio)
    assert 48 <= len(packets) <= 50  # one per 20 ms chunk (the resampler may hold the last one back)
    decoder = av.CodecContext.create("opus", "r")
    levels = []
    for data in packets:
        frames = decoder.decode(av.Packet(data))
        samples = np.concatenate([f.to_ndarray().ravel() for f in frames]).astype(np.float64)
        assert sum(f.samples for f in frames) == 960  # 20 ms at 48 kHz
        levels.append(np.sqrt(np.mean(samples**2)))
    assert max(levels[:24]) < 0.001  # the silence (the tone starts in packet 25 or 26)
    assert min(levels[26:]) > 0.1  # a 0.3 tone: about 0.15 RMS per channel after upmixing to stereo


async def test_pre_encoded_track_paces_packets_in_48_khz_steps() -> None:
    audio = tone(0.1)
    track = PreEncodedAudioTrack([b"a", b"b", b"c"], audio)
    started = asyncio.get_running_loop().time()
    packets = [await track.recv() for _ in range(4)]
    assert asyncio.get_running_loop().time() - started >= 0.055  # 3 waits of 20 ms after the first
    assert [bytes(p) for p in packets] == [b"a", b"b", b"c", b"c"]  # the last one repeats after the end
    assert [p.pts for p in packets] == [0, 960, 1920, 2880]
    assert track.done and len(track.sent) == 4
    assert track.sent[0][1] == pytest.approx(0.3 / np.sqrt(2), rel=0.02)  # RMS of the first 20 ms
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


def test_stat_cpu_s_reads_user_system_and_children_after_the_command_name() -> None:
    fields = ["S"] + ["0"] * 10 + ["250", "50", "7", "3"] + ["0"] * 30
    line = "1234 (odd ) name (x)) " + " ".join(fields)
    assert stat_cpu_s(line, 100) == pytest.approx(3.1)


def test_metric_value_takes_the_unlabelled_sample() -> None:
    text = ("# HELP avatar_frames_sent_total Video frames sent\n# TYPE avatar_frames_sent_total counter\n"
            "avatar_frames_sent_total_extra 9\navatar_frames_sent_total 1234\n")
    assert metric_value(text, "avatar_frames_sent_total") == 1234.0
    assert metric_value(text, "avatar_missing") is None
    assert metric_value("", "avatar_frames_sent_total") is None
    assert counter_delta("avatar_frames_sent_total 1000\n", text, "avatar_frames_sent_total") == 234.0
    assert counter_delta("", text, "avatar_frames_sent_total") is None  # e.g. /metrics switched off


def test_cpu_figures_per_frame_and_per_core() -> None:
    figures = cpu_figures(server_cpu_s=5.0, frames_sent=250, frames_fresh=200, client_cpu_s=1.0, wall_s=10.0,
                          count=2)
    assert figures["server_cpu_ms_per_frame"] == 20.0 and figures["server_cpu_ms_per_fresh_frame"] == 25.0
    assert figures["server_cpu_share"] == 0.5
    assert figures["client_cpu_share"] == 0.1 and figures["client_cpu_share_per_session"] == 0.05
    unknown = cpu_figures(None, None, None, 1.0, 10.0, 1)
    assert unknown["server_cpu_ms_per_frame"] is None and unknown["server_cpu_share"] is None


def stats_events(seconds: int, fresh_per_s: int, sent_per_s: int = 25) -> list[dict]:
    return [{"type": "stats", "uptime_s": float(t), "frames_sent": sent_per_s * t,
             "frames_fresh": fresh_per_s * t,
             "frames_repeated": (sent_per_s - fresh_per_s) * t, "frames_still": 0, "frames_dropped": 0,
             "windows_dropped": 0, "engine_ms": 10.0, "latency_ms": 0.0 if t < 2 else 120.0,
             "first_frame_s": 0.05, "first_animated_s": 0.3, "degraded": False, "windows_skipped": 0}
            for t in range(1, seconds + 1)]


def test_analyse_light_takes_fresh_fps_from_the_server_and_delivery_from_the_frames() -> None:
    run = {"offered": 10.0, "encoded": [(10.1 + k * 0.04, k * 3600, 800) for k in range(100)],
           "stats": stats_events(5, fresh_per_s=20), "size": (256, 256), "codec": "VP8"}
    result = analyse_light(run)
    assert result["fps"] == pytest.approx(25.0, abs=0.01)
    assert result["fresh_fps"] == 20.0 and result["repeat_share"] == 0.2
    assert result["first_frame_s"] == pytest.approx(0.1)
    assert result["first_animated_s"] == pytest.approx(0.35)  # 0.1 + (0.3 - 0.05) on the server
    assert result["server_audio_in_to_frame_out_ms"] == 120.0  # reports before the first fresh frame left out
    assert result["mouth_to_photon_ms"] is None and result["frame_size"] == [256, 256]
    summary = summarise(1, [run], 2.0, 3.0, light=True)
    assert summary["light"] and summary["sustained"]  # 25 delivered, 20 fresh >= TARGET_FPS 20
    assert summary["mouth_to_photon_ms_max"] is None and summary["kbps_mean"] == pytest.approx(160.0, abs=0.1)


@pytest.mark.slow
async def test_light_client_counts_the_servers_frames_without_decoding(make_config,
                                                                       box_engine_factory) -> None:
    engine = box_engine_factory(fps=25, size=256)
    app = App(make_config(**{"engine.size": 256}), engine)
    await app.start(host="127.0.0.1", port=0)
    try:
        audio = tone(3.0, 0.2)
        run = await stream(f"ws://127.0.0.1:{app.port}/ws", audio, None, 0.5, light=True)
    finally:
        await app.stop()
    result = analyse_light(run)
    assert result["codec"] == "VP8" and result["frame_size"] == [256, 256]
    assert result["frames"] >= 50, result  # about 3.5 s at 25 fps
    assert result["fps"] >= 15, result
    last = run["stats"][-1]
    assert last["frames_sent"] - 30 <= result["frames"] <= last["frames_sent"] + 30
    assert result["fresh_fps"] is not None and result["first_animated_s"] is not None
    assert last["audio_in_s"] >= 2.0, last  # the pre-encoded microphone reached the server

