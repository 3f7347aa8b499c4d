"""Broadcast fan-out with Janus: a session's stream published once into a VideoRoom room.

Unit tests check ``server.janus`` and the offer option; integration tests run the in-process server
with the box test engine, an aiortc client as the overlay and, when Debian's ``janus`` is installed, a
throw-away Janus (server/broadcast/dev_janus.py) with aiortc viewers subscribed to the published feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect

from avatar.errors import ConfigError
from server.broadcast.dev_janus import DevJanus, free_port, missing_reason
from server.broadcast.janus_api import JanusError, JanusSession
from server.broadcast.settings import parse_janus
from server.broadcast.viewer import JanusViewer
from server.signalling import SignallingError, parse_message
from tests.test_server_speak import SpeakClient, _start_app

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
KEY = "k3y-for-the-stage_0123"
needs_janus = pytest.mark.skipif(missing_reason() is not None, reason=f"{missing_reason()}")


# ------------------------------------------------------------------------------------ unit tests
@pytest.mark.parametrize("raw, message", [
    ({"url": "ftp://x/janus", "room": 1}, "server.janus.url must be Janus's HTTP API URL"),
    ({"room": 1}, "server.janus.url must be Janus's HTTP API URL"),
    ({"url": "http://127.0.0.1:8088/janus"}, "server.janus.room must be the VideoRoom room id"),
    ({"url": "http://127.0.0.1:8088/janus", "room": -3}, "server.janus.room must be"),
    ({"url": "http://127.0.0.1:8088/janus", "room": 1, "rooms": 2}, "server.janus has unknown key 'rooms'"),
    ({"url": "http://127.0.0.1:8088/janus", "room": 1, "max_publishers": 0}, "max_publishers must be"),
    ({"url": "http://127.0.0.1:8088/janus", "room": 1, "pin": 1234}, "server.janus.pin must be a string"),
    ("http://127.0.0.1:8088/janus", "server.janus must be a mapping"),
])
def test_bad_janus_settings_stop_start_up_with_one_line(make_config, raw, message) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(**{"server.janus": raw})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_janus_settings_are_read_and_off_by_default(make_config) -> None:
    assert parse_janus(make_config().server.janus) is None
    config = make_config(**{"server.janus": {"url": "http://10.0.0.5:8088/janus/", "room": 1234}})
    settings = parse_janus(config.server.janus)
    assert (settings.url, settings.room, settings.max_publishers) == ("http://10.0.0.5:8088/janus", 1234, 1)


def test_the_offer_option_is_a_boolean() -> None:
    assert parse_message(json.dumps({"type": "offer", "sdp": SDP, "broadcast": True})).broadcast is True
    assert parse_message(json.dumps({"type": "offer", "sdp": SDP})).broadcast is False
    with pytest.raises(SignallingError, match="offer 'broadcast' must be true or false"):
        parse_message(json.dumps({"type": "offer", "sdp": SDP, "broadcast": "yes"}))


def test_a_decoded_frame_and_the_sent_picture_have_the_same_fingerprint() -> None:
    """The fan-out benchmark matches viewers' frames to the server's pictures by these fingerprints."""
    from av import VideoFrame

    from server.broadcast.viewer import luma_fingerprint, picture_fingerprint

    rng = np.random.default_rng(0)
    rgb = np.kron(rng.integers(0, 256, (16, 16, 3)), np.ones((32, 32, 1))).astype(np.uint8)  # 512x512 blocks
    decoded = VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    sent = picture_fingerprint(rgb).astype(int)
    assert sent.shape == (32, 32)
    assert np.abs(luma_fingerprint(decoded).astype(int) - sent).max() <= 2
    other = picture_fingerprint(np.roll(rgb, 32, axis=1)).astype(int)
    assert np.abs(other - sent).mean() > 20  # a different picture is far away


# ------------------------------------------------------------------------------ integration tests
async def _offer(client: SpeakClient, ws, **fields) -> dict:
    await client.pc.setLocalDescription(await client.pc.createOffer())
    await ws.send(json.dumps({"type": "offer", "sdp": client.pc.localDescription.sdp, "mode": "speak",
                              **fields}))
    reply = await client.reply(ws, "answer")
    if reply["type"] == "answer":
        from aiortc import RTCSessionDescription

        await client.pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
    return reply


async def _frames_after(client: SpeakClient, count: int, timeout: float = 10.0) -> int:
    start = len(client.video)
    deadline = time.monotonic() + timeout
    while len(client.video) < start + count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return len(client.video) - start


@contextlib.asynccontextmanager
async def _broadcasting(make_config, box_engine_factory, url: str, room: int):
    """The server with ``server.janus`` at ``url``/``room``: (app, client, socket) once its broadcast offer
    was answered; everything closed afterwards."""
    app = await _start_app(make_config, box_engine_factory, **{"server.janus": {"url": url, "room": room}})
    client = SpeakClient()
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
            assert (await _offer(client, ws, broadcast=True))["type"] == "answer"
            yield app, client, ws
    finally:
        await client.close()
        await app.stop()


async def test_a_broadcast_offer_is_refused_when_janus_is_not_configured(make_config, box_engine_factory):
    app = await _start_app(make_config, box_engine_factory)
    client = SpeakClient()
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
            reply = await _offer(client, ws, broadcast=True)
            assert reply == {"type": "error", "message": "broadcast is off on this server: it needs "
                                                         "server.janus in its config"}
            assert len(app.sessions) == 0
    finally:
        await client.close()
        await app.stop()


async def test_unreachable_janus_is_one_error_line_and_the_session_goes_on(make_config, box_engine_factory):
    url = f"http://127.0.0.1:{free_port()}/janus"  # nothing listens there
    async with _broadcasting(make_config, box_engine_factory, url, 1234) as (app, client, ws):
        error = await client.reply(ws, "broadcasting")
        assert error["type"] == "error"
        assert error["message"].startswith(f"broadcast failed: cannot reach Janus at {url}: ")
        assert "\n" not in error["message"]
        assert await _frames_after(client, 10) >= 10, "the session's own stream stopped"
        assert len(app.broadcasts) == 0 and len(app.sessions) == 1


async def test_janus_client_errors_are_one_line() -> None:
    with pytest.raises(JanusError, match="cannot reach Janus at http://127.0.0.1:"):
        await JanusSession(f"http://127.0.0.1:{free_port()}/janus").create()


@needs_janus
async def test_a_session_published_once_is_watched_from_janus(make_config, box_engine_factory):
    with DevJanus(room=4321) as janus:
        app = await _start_app(make_config, box_engine_factory,
                               **{"server.janus": {"url": janus.url, "room": 4321}})
        client, second = SpeakClient(), SpeakClient()
        watchers = await JanusSession(janus.url).create()
        viewers: list[JanusViewer] = []
        try:
            async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws, \
                    connect(f"ws://127.0.0.1:{app.port}/ws") as ws2:
                reply = await _offer(client, ws, broadcast=True, channel="stage", key=KEY)
                assert reply["type"] == "answer"
                event = await client.reply(ws, "broadcasting", timeout=20)
                assert event["type"] == "broadcasting", event
                assert (event["room"], event["display"]) == (4321, "stage")
                assert event["session"] == reply["session"]
                # one broadcast at a time (server.janus.max_publishers = 1)
                refused = await _offer(second, ws2, broadcast=True)
                assert refused == {"type": "error", "message": "broadcast busy: 1 of 1 broadcasts running, "
                                                               "try later"}

                viewers = [JanusViewer(watchers, 4321, event["feed"]) for _ in range(2)]
                await asyncio.gather(*(viewer.start() for viewer in viewers))
                deadline = time.monotonic() + 15
                pictures = []
                while min(v.frames for v in viewers) < 25 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    if viewers[0].picture is not None:
                        pictures.append(viewers[0].picture.astype(int))
                for viewer in viewers:
                    assert viewer.frames >= 25, f"a viewer got {viewer.frames} frames from Janus"
                    assert len(set(viewer.timestamps)) == viewer.frames
                    assert viewer.audio_frames > 0, "the avatar's voice did not reach the viewer"
                # the portrait, not a blank picture, and it moves (the box engine's dot drifts every frame)
                assert pictures[-1].std() > 20
                assert max(np.abs(p - pictures[0]).max() for p in pictures) > 100
                assert await _frames_after(client, 10) >= 10, "the session's own client stopped receiving"

                # the session ends: its feed leaves the room
                handle = await watchers.attach("janus.plugin.videoroom")
                listed, _ = await watchers.request(handle, {"request": "listparticipants", "room": 4321})
                assert [p["display"] for p in listed["participants"]] == ["stage"]
                await ws.close()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    listed, _ = await watchers.request(handle, {"request": "listparticipants", "room": 4321})
                    if not listed["participants"]:
                        break
                    await asyncio.sleep(0.1)
                assert listed["participants"] == [] and len(app.broadcasts) == 0
        finally:
            for viewer in viewers:
                await viewer.stop()
            await watchers.close()
            await client.close()
            await second.close()
            await app.stop()


@needs_janus
async def test_a_missing_room_is_one_error_line(make_config, box_engine_factory):
    with DevJanus(room=4321) as janus:
        async with _broadcasting(make_config, box_engine_factory, janus.url, 999) as (app, client, ws):
            error = await client.reply(ws, "broadcasting")
            assert error == {"type": "error", "message": "broadcast failed: Janus joinandconfigure "
                                                         "failed: No such room (999) (code 426)"}
            assert await _frames_after(client, 10) >= 10


@needs_janus
async def test_janus_going_away_mid_stream_is_one_error_line(make_config, box_engine_factory):
    with DevJanus(room=4321) as janus:
        async with _broadcasting(make_config, box_engine_factory, janus.url, 4321) as (app, client, ws):
            assert (await client.reply(ws, "broadcasting"))["type"] == "broadcasting"
            janus.process.kill()
            error = await client.reply(ws, "broadcasting", timeout=15)
            assert error["type"] == "error" and error["message"].startswith("broadcast ended: "), error
            assert "\n" not in error["message"]
            assert await _frames_after(client, 10) >= 10, "the session's own stream stopped"
            assert len(app.broadcasts) == 0 and len(app.sessions) == 1
