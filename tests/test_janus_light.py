"""Light Janus viewers (benchmarks/janus_fanout.py --light-viewers): encoded frames counted in a measured
window, the step's figures with the decoding probe's fresh share, and a light subscriber of a real
Janus (skipped when Debian's ``janus`` is absent) that counts the forwarded stream without decoding it."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import connect

from benchmarks.janus_fanout import LightJanusViewer, light_figures, window_delivery
from server.broadcast.dev_janus import DevJanus
from server.broadcast.janus_api import JanusSession
from server.broadcast.viewer import JanusViewer
from tests.test_janus import KEY, _offer, _start_app, needs_janus
from tests.test_server_speak import SpeakClient


def frames_at(times: list[float], size: int = 1000) -> list[tuple[float, int, int]]:
    """One encoded frame per arrival time, RTP timestamps 3600 apart (25 fps at 90 kHz)."""
    return [(t, k * 3600, size) for k, t in enumerate(times)]


def test_window_delivery_counts_distinct_frames_inside_the_window() -> None:
    # 25 fps from 9.5 s to 13.5 s, measured 10..12 s; frame at 11.0 s resent (same timestamp, later)
    frames = frames_at([9.5 + k * 0.04 for k in range(100)])
    frames.append((11.3, frames[37][1], 1000))
    result = window_delivery(frames, 10.0, 12.0)
    assert result["frames"] == 50  # arrivals 10.02 .. 11.98; the resent frame counts once
    assert result["fps"] == 25.0
    assert result["stalls"] == 0 and result["max_gap_ms"] == pytest.approx(40.0, abs=0.1)
    assert result["kbps"] == pytest.approx(50 * 1000 * 8 / 2.0 / 1000)


def test_window_delivery_counts_holes_and_the_windows_edges_as_stalls() -> None:
    # frames only from 10.3 s to 11.0 s, with a 300 ms hole: late start, hole and early end are stalls
    times = [10.3 + k * 0.04 for k in range(8)] + [10.9 + k * 0.04 for k in range(3)]
    result = window_delivery(frames_at(times), 10.0, 12.0)
    assert result["frames"] == 11 and result["fps"] == 5.5
    assert result["stalls"] == 3
    assert result["max_gap_ms"] == pytest.approx((12.0 - 10.98) * 1000, abs=0.1)
    nothing = window_delivery([], 10.0, 12.0)
    assert (nothing["frames"], nothing["fps"], nothing["stalls"]) == (0, 0.0, 1)
    assert nothing["max_gap_ms"] == 2000.0 and nothing["kbps"] == 0.0


def test_light_figures_infer_fresh_fps_from_the_probes_share() -> None:
    steady = {"encoded": frames_at([10.0 + k * 0.04 for k in range(100)], 2500)}  # 25 fps for 4 s
    halting = {"encoded": frames_at([10.0 + k * 0.08 for k in range(50)], 2500)}  # 12.5 fps
    figures = light_figures([steady, halting], (100, 80, 60), 10.0, 14.0)  # probe: 100 frames, 60 of 80 fresh
    assert (figures["viewer_fps_min"], figures["viewer_fps_mean"]) == (12.5, 18.75)
    assert figures["viewers_below_24_fps"] == 1 and figures["viewer_stalls_max"] == 0
    assert figures["viewer_kbps_mean"] == pytest.approx((500.0 + 250.0) / 2)  # 2500 B at 25 and 12.5 fps
    probe = (figures["probe_fps"], figures["probe_fresh_fps"], figures["probe_fresh_share"])
    assert probe == (25.0, 15.0, 0.75)
    assert figures["viewer_fresh_fps_inferred_min"] == pytest.approx(12.5 * 0.75, abs=0.01)
    assert figures["viewer_fresh_fps_inferred_mean"] == pytest.approx(18.75 * 0.75, abs=0.01)
    assert figures["viewers_below_24_fresh_fps_inferred"] == 2
    assert figures["light_received_fps"] == 37.5


def test_light_figures_without_a_matched_probe_infer_nothing() -> None:
    steady = {"encoded": frames_at([10.0 + k * 0.04 for k in range(50)])}
    unmatched = light_figures([steady], (50, 0, 0), 10.0, 12.0)
    assert unmatched["viewer_fps_min"] == 25.0 and unmatched["probe_fresh_share"] is None
    assert unmatched["viewer_fresh_fps_inferred_min"] is None
    empty = light_figures([], None, 10.0, 12.0)
    assert empty["viewer_fps_min"] is None and empty["probe_fps"] is None and empty["light_received_fps"] == 0


@needs_janus
async def test_a_light_viewer_counts_the_forwarded_stream_without_decoding(make_config, box_engine_factory):
    with DevJanus(room=4322) as janus:
        app = await _start_app(make_config, box_engine_factory,
                               **{"server.janus": {"url": janus.url, "room": 4322}})
        client = SpeakClient()
        watchers = await JanusSession(janus.url).create()
        viewers: list[JanusViewer] = []
        try:
            async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
                reply = await _offer(client, ws, broadcast=True, channel="stage", key=KEY)
                assert reply["type"] == "answer"
                event = await client.reply(ws, "broadcasting", timeout=20)
                assert event["type"] == "broadcasting", event
                light = LightJanusViewer(watchers, 4322, event["feed"])
                decoding = JanusViewer(watchers, 4322, event["feed"])
                viewers = [light, decoding]
                await asyncio.gather(*(viewer.start() for viewer in viewers))
                deadline = time.monotonic() + 15
                while (light.video is None or len({ts for _, ts, _ in light.video.frames}) < 25
                       or decoding.frames < 25) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert light.video is not None and light.audio is not None
                timestamps = {ts for _, ts, _ in light.video.frames}
                assert len(timestamps) >= 25, f"the light viewer got {len(timestamps)} frames from Janus"
                assert light.video.codec == "VP8" and light.video.size == (256, 256)
                assert light.audio.codec == "opus" and len(light.audio.frames) > 0
                assert light.frames == 0 and light.audio_frames == 0  # nothing decoded, nothing read
                # its receivers' decoder threads got nothing: the remote tracks hold no decoded frame
                for transceiver in light.pc.getTransceivers():
                    assert transceiver.receiver.track._queue.empty()
                # same forwarded stream as the decoding viewer: similar frame counts per second
                assert abs(len(timestamps) - decoding.frames) <= 25
        finally:
            for viewer in viewers:
                await viewer.stop()
            await watchers.close()
            await client.close()
            await app.stop()
